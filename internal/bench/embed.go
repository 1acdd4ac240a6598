package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"
)

// EmbedPlan is the embeddings workload: requests to /v1/embeddings of
// Inputs texts of about Tokens tokens each, one request at a time, the
// endpoints taking turns (A B A B) so that a change in the machine's load
// falls on both alike. Zero values take the defaults given.
type EmbedPlan struct {
	// Inputs per request; default 64.
	Inputs int
	// Tokens is the length of each input in tokens as the first endpoint
	// counts them (see CalibrateEmbed), about; default 32.
	Tokens int
	// Requests per endpoint and round; default 3.
	Requests int
	// Rounds; default 3.
	Rounds int
	// Warmup requests per endpoint first, not counted (the first loads
	// the model on servers that load on demand).
	Warmup int
	// NoCalibrate takes one word per token instead of asking the first
	// endpoint how it counts.
	NoCalibrate bool
	// Seed chooses the inputs' words; every request's inputs differ.
	Seed uint64
}

func (p *EmbedPlan) setDefaults() {
	if p.Inputs <= 0 {
		p.Inputs = 64
	}
	if p.Tokens <= 0 {
		p.Tokens = 32
	}
	if p.Requests <= 0 {
		p.Requests = 3
	}
	if p.Rounds <= 0 {
		p.Rounds = 3
	}
}

// EmbedTexts returns n texts of nwords words each, drawn from the fixed
// vocabulary of Prompt by a generator seeded with seed and request, so that
// a run can be repeated and no two requests (nor two texts) are alike.
func EmbedTexts(n, nwords int, seed uint64, request int) []string {
	r := rand.New(rand.NewPCG(seed, uint64(request)))
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for j := range nwords {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[r.IntN(len(words))])
		}
		out[i] = b.String()
	}
	return out
}

// EmbedSample is the outcome of one embeddings request.
type EmbedSample struct {
	Latency      time.Duration // from sending to the end of the response
	Inputs       int           // texts sent
	PromptTokens int           // usage.prompt_tokens: all inputs' tokens as the server counted them
	Dimensions   int           // length of the first embedding
	Err          error
}

// Embed sends texts to /v1/embeddings and times the request, the whole
// response read. The answer must hold one non-empty embedding per text.
func (c *Client) Embed(ctx context.Context, texts []string) EmbedSample {
	s := EmbedSample{Inputs: len(texts)}
	if c.isRPC() {
		s.Err = errors.New("embeddings go to an HTTP endpoint (/v1/embeddings), not rpc://")
		return s
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body := map[string]any{"input": texts}
	if c.Model != "" {
		body["model"] = c.Model
	}
	payload, err := json.Marshal(body)
	if err != nil {
		s.Err = err
		return s
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v1/embeddings"), bytes.NewReader(payload))
	if err != nil {
		s.Err = err
		return s
	}
	req.Header.Set("Content-Type", "application/json")
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	start := time.Now()
	resp, err := c.http().Do(req)
	if err != nil {
		s.Err = err
		return s
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	s.Latency = time.Since(start)
	if err != nil {
		s.Err = err
		return s
	}
	if resp.StatusCode != http.StatusOK {
		s.Err = fmt.Errorf("HTTP %d: %.500s", resp.StatusCode, bytes.TrimSpace(data))
		return s
	}
	var list struct {
		Data []struct {
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		s.Err = fmt.Errorf("bad response %.200q: %w", data, err)
		return s
	}
	if len(list.Data) != len(texts) {
		s.Err = fmt.Errorf("%d embeddings for %d inputs", len(list.Data), len(texts))
		return s
	}
	for i, d := range list.Data {
		if len(d.Embedding) == 0 {
			s.Err = fmt.Errorf("embedding %d is empty", i)
			return s
		}
	}
	s.Dimensions, s.PromptTokens = len(list.Data[0].Embedding), list.Usage.PromptTokens
	return s
}

// CalibrateEmbed finds how many words of EmbedTexts make an input of
// about target tokens as the endpoint counts them (usage.prompt_tokens of
// one-input requests, special tokens included). It returns target words
// when the endpoint reports no usage.
func CalibrateEmbed(ctx context.Context, c *Client, target int, seed uint64) (int, error) {
	return fit(target, func(n int) (int, error) {
		s := c.Embed(ctx, EmbedTexts(1, n, seed, -1))
		return s.PromptTokens, s.Err
	})
}

// EmbedRow summarises one endpoint's requests (or one round's).
type EmbedRow struct {
	Requests, Errors int
	Inputs           int           // texts embedded, of requests without error
	PromptTokens     int           // their tokens as the server counted them
	Busy             time.Duration // the requests' latencies summed (one at a time: the wall time)
	Dimensions       int
	LatencyP50       time.Duration // -1: no request succeeded
	LatencyP99       time.Duration
}

// SummarizeEmbed builds an EmbedRow from samples.
func SummarizeEmbed(samples []EmbedSample) EmbedRow {
	r := EmbedRow{Requests: len(samples)}
	var lat []float64
	for _, s := range samples {
		if s.Err != nil {
			r.Errors++
			continue
		}
		r.Inputs += s.Inputs
		r.PromptTokens += s.PromptTokens
		r.Busy += s.Latency
		r.Dimensions = s.Dimensions
		lat = append(lat, float64(s.Latency))
	}
	r.LatencyP50, r.LatencyP99 = dur(Percentile(lat, 50)), dur(Percentile(lat, 99))
	return r
}

// InputsPerSecond is the inputs embedded per second of requests; NaN
// with none.
func (r EmbedRow) InputsPerSecond() float64 { return perSecond(r.Inputs, r.Busy) }

// TokensPerSecond is the input tokens (as the server counted them)
// embedded per second of requests; NaN with none or no usage.
func (r EmbedRow) TokensPerSecond() float64 { return perSecond(r.PromptTokens, r.Busy) }

func perSecond(n int, d time.Duration) float64 {
	if n <= 0 || d <= 0 {
		return math.NaN()
	}
	return float64(n) / d.Seconds()
}

// RunEmbed measures every endpoint on plan, endpoints taking turns within
// each round, and writes the tables (WriteEmbed) to out; progress goes to
// progress. It returns the samples per endpoint; it stops early when ctx
// ends and still writes what it has.
func RunEmbed(ctx context.Context, out, progress io.Writer, plan EmbedPlan, eps []Endpoint) ([][]EmbedSample, error) {
	if len(eps) == 0 {
		return nil, errors.New("no endpoint")
	}
	plan.setDefaults()
	logf := func(format string, args ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", args...) }
	for _, ep := range eps {
		ep.nameModel(ctx)
		logf("%s: %s model %q", ep.Name, ep.Client.BaseURL, ep.Client.Model)
		for i := range plan.Warmup {
			if s := ep.Client.Embed(ctx, EmbedTexts(plan.Inputs, plan.Tokens, plan.Seed, -2-i)); s.Err != nil {
				return nil, fmt.Errorf("%s: warm-up request: %w", ep.Name, s.Err)
			}
		}
	}
	nwords := plan.Tokens
	if !plan.NoCalibrate {
		n, err := CalibrateEmbed(ctx, eps[0].Client, plan.Tokens, plan.Seed)
		if err != nil {
			return nil, fmt.Errorf("%s: sizing the %d-token input: %w", eps[0].Name, plan.Tokens, err)
		}
		nwords = n
		logf("a %d-token input is %d words", plan.Tokens, n)
	}

	res := make([][]EmbedSample, len(eps))
	rounds := make([][]EmbedRow, plan.Rounds) // [round][endpoint]
	loads := make([]float64, plan.Rounds)
	firstErr := make([]error, len(eps))
measure:
	for round := range plan.Rounds {
		for e, ep := range eps {
			var ss []EmbedSample
			for i := range plan.Requests {
				if ctx.Err() != nil {
					break measure
				}
				// Every endpoint gets the same texts: request numbers
				// count within an endpoint.
				ss = append(ss, ep.Client.Embed(ctx, EmbedTexts(plan.Inputs, nwords, plan.Seed, round*plan.Requests+i)))
			}
			res[e] = append(res[e], ss...)
			r := SummarizeEmbed(ss)
			rounds[round] = append(rounds[round], r)
			loads[round] = LoadAverage()
			logf("%s round %d: %d requests, %d errors, %.1f inputs/s, load %.2f",
				ep.Name, round+1, r.Requests, r.Errors, r.InputsPerSecond(), loads[round])
			for _, s := range ss {
				if s.Err != nil && firstErr[e] == nil {
					firstErr[e] = s.Err
					logf("%s: first error: %v", ep.Name, s.Err)
				}
			}
		}
	}
	fmt.Fprintf(out, "\nmachine: %s\n", Machine())
	fmt.Fprintf(out, "workload: /v1/embeddings, %d inputs of %d words (about %d tokens) per request, one request at a time, %d per endpoint and round, %d round(s)\n\n",
		plan.Inputs, nwords, plan.Tokens, plan.Requests, plan.Rounds)
	if err := WriteEmbed(out, eps, res, rounds, loads); err != nil {
		return res, err
	}
	return res, ctx.Err()
}

// WriteEmbed writes, per endpoint, its totals over every round: inputs/s
// and tokens/s (over the requests' summed time), latency p50/p99 and B/A
// of the first two; then, with two endpoints, inputs/s per round with the
// load average after it, to show how much the figures move, the medians
// over the rounds and each endpoint's fastest round.
func WriteEmbed(w io.Writer, eps []Endpoint, res [][]EmbedSample, rounds [][]EmbedRow, loads []float64) error {
	header := []string{"endpoint", "requests", "errors", "inputs", "tok/input", "dims", "inputs/s", "tokens/s", "lat p50", "lat p99"}
	var rows [][]string
	total := make([]EmbedRow, len(eps))
	for e, ep := range eps {
		r := SummarizeEmbed(res[e])
		total[e] = r
		tokPerInput := math.NaN()
		if r.Inputs > 0 && r.PromptTokens > 0 {
			tokPerInput = float64(r.PromptTokens) / float64(r.Inputs)
		}
		rows = append(rows, []string{ep.Name, fmt.Sprint(r.Requests), fmt.Sprint(r.Errors), fmt.Sprint(r.Inputs),
			num(tokPerInput, 1), fmt.Sprint(r.Dimensions), num(r.InputsPerSecond(), 1), num(r.TokensPerSecond(), 0),
			ms(r.LatencyP50), ms(r.LatencyP99)})
	}
	if len(eps) == 2 {
		a, b := total[0], total[1]
		rows = append(rows, []string{"B/A", "", "", "", "", "",
			ratio(b.InputsPerSecond(), a.InputsPerSecond()), ratio(b.TokensPerSecond(), a.TokensPerSecond()),
			ratio(float64(b.LatencyP50), float64(a.LatencyP50)), ratio(float64(b.LatencyP99), float64(a.LatencyP99))})
	}
	if err := WriteMarkdown(w, header, rows); err != nil {
		return err
	}
	if len(eps) != 2 {
		return nil
	}
	fmt.Fprintln(w)
	rows = nil
	var as, bs, ratios []float64
	for i, rs := range rounds {
		if len(rs) < 2 {
			break
		}
		a, b := rs[0].InputsPerSecond(), rs[1].InputsPerSecond()
		rows = append(rows, []string{fmt.Sprint(i + 1), num(a, 1), num(b, 1), ratio(b, a), num(loads[i], 2)})
		as, bs = append(as, a), append(bs, b)
		if a > 0 && b > 0 {
			ratios = append(ratios, b/a)
		}
	}
	// The median of the rounds' ratios: a round the machine's load slowed
	// counts once, however long it took, where it weighs on the totals
	// above by its time.
	rows = append(rows, []string{"median", num(median(as), 1), num(median(bs), 1), num(median(ratios), 2), ""})
	// Another process can only slow a round down: each endpoint's fastest
	// round is the nearest to its speed on a machine of its own.
	bestA, bestB := Percentile(as, 100), Percentile(bs, 100)
	rows = append(rows, []string{"best", num(bestA, 1), num(bestB, 1), ratio(bestB, bestA), ""})
	return WriteMarkdown(w, []string{"round", eps[0].Name + " inputs/s", eps[1].Name + " inputs/s", "B/A", "load"}, rows)
}

// median is the median of xs without NaN values; NaN for none.
func median(xs []float64) float64 {
	return Percentile(slices.DeleteFunc(slices.Clone(xs), math.IsNaN), 50)
}

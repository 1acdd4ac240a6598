package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Plan is the workload. Zero values take the defaults given.
type Plan struct {
	// Prompts are the prompt lengths in tokens, approximately (see
	// Calibrate); default 32, 128, 512.
	Prompts []int
	// Concurrency levels; default 1, 2, 4, 8, 16.
	Concurrency []int
	// MaxTokens per request; default 128.
	MaxTokens int
	// Temperature of every request. Random-weight models need sampling
	// (1): greedy decoding falls into a loop that some servers cut short.
	Temperature float64
	// Seed is the base of the per-request seeds.
	Seed int64
	// Requests per level and round; 0: twice the concurrency, at least 8.
	Requests int
	// Duration, when set, bounds each level and round in time instead
	// (Requests still caps it when set).
	Duration time.Duration
	// Warmup requests per endpoint before measuring; they are not counted.
	Warmup int
	// Rounds per row; endpoints take turns within each round (A B A B).
	// Default 1 with one endpoint, 2 with several.
	Rounds int
	// NoCalibrate uses one word per token instead of asking the first
	// endpoint how it counts.
	NoCalibrate bool
}

func (p *Plan) setDefaults(endpoints int) {
	if len(p.Prompts) == 0 {
		p.Prompts = []int{32, 128, 512}
	}
	if len(p.Concurrency) == 0 {
		p.Concurrency = []int{1, 2, 4, 8, 16}
	}
	if p.MaxTokens <= 0 {
		p.MaxTokens = 128
	}
	if p.Rounds <= 0 {
		p.Rounds = 1
		if endpoints > 1 {
			p.Rounds = 2
		}
	}
}

func (p *Plan) requests(conc int) int {
	if p.Requests > 0 {
		return p.Requests
	}
	if p.Duration > 0 {
		return 0
	}
	return max(8, 2*conc)
}

// Endpoint is a server under test.
type Endpoint struct {
	Name   string // "A", "B", or a label
	Client *Client
	// PIDs are the server's processes whose memory is reported (summed);
	// none: memory is not reported.
	PIDs []int
}

// nameModel gives the endpoint's client a model when it has none: servers
// with several models (ollama) need one named, and the first listed is
// taken. An endpoint without /v1/models is fine.
func (ep Endpoint) nameModel(ctx context.Context) {
	if ep.Client.Model != "" {
		return
	}
	if ids, err := ep.Client.Models(ctx); err == nil && len(ids) > 0 {
		ep.Client.Model = ids[0]
	}
}

// Result holds the rows measured for each endpoint, in plan order.
type Result struct {
	Endpoints []string
	Rows      [][]Row // [endpoint][row]
}

// Run measures every endpoint on the plan and writes one table per
// endpoint and, with two endpoints, the ratio B/A per row to out. Progress
// goes to progress. It stops early when ctx ends and still writes what it
// has.
func Run(ctx context.Context, out, progress io.Writer, plan Plan, eps []Endpoint) (Result, error) {
	if len(eps) == 0 {
		return Result{}, errors.New("no endpoint")
	}
	plan.setDefaults(len(eps))
	logf := func(format string, args ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", args...) }

	for _, ep := range eps {
		ep.nameModel(ctx)
		logf("%s: %s model %q", ep.Name, ep.Client.BaseURL, ep.Client.Model)
		for i := range plan.Warmup {
			s := ep.Client.Stream(ctx, Request{Prompt: Prompt(plan.Prompts[0], i), MaxTokens: plan.MaxTokens,
				Temperature: plan.Temperature, Seed: seedFor(plan.Seed, 0, 0, i)})
			if s.Err != nil {
				return Result{}, fmt.Errorf("%s: warm-up request: %w", ep.Name, s.Err)
			}
		}
	}

	// The same prompts go to every endpoint, sized on the first.
	nwords := make([]int, len(plan.Prompts))
	for i, target := range plan.Prompts {
		nwords[i] = target
		if plan.NoCalibrate {
			continue
		}
		n, err := Calibrate(ctx, eps[0].Client, target)
		if err != nil {
			return Result{}, fmt.Errorf("%s: sizing the %d-token prompt: %w", eps[0].Name, target, err)
		}
		nwords[i] = n
		logf("a %d-token prompt is %d words", target, n)
	}

	res := Result{Rows: make([][]Row, len(eps))}
	for _, ep := range eps {
		res.Endpoints = append(res.Endpoints, ep.Name)
	}
	firstErr := make([]error, len(eps))
rows:
	for pi, prompt := range plan.Prompts {
		for _, conc := range plan.Concurrency {
			samples := make([][]Sample, len(eps))
			walls := make([]time.Duration, len(eps))
			lvl := Level{Concurrency: conc, Requests: plan.requests(conc), Duration: plan.Duration}
			for round := range plan.Rounds {
				for e, ep := range eps {
					if ctx.Err() != nil {
						break rows
					}
					base := round * maxRequestsPerLevel
					ss, wall := RunLevel(ctx, ep.Client, lvl, func(i int) Request {
						return Request{
							Prompt:      Prompt(nwords[pi], base+i),
							MaxTokens:   plan.MaxTokens,
							Temperature: plan.Temperature,
							Seed:        seedFor(plan.Seed, prompt, conc, base+i),
						}
					})
					samples[e] = append(samples[e], ss...)
					walls[e] += wall
					r := Summarize(prompt, conc, ss, wall)
					logf("%s %s round %d: %d requests, %d errors, %.1f tok/s, load %.2f",
						ep.Name, describe(prompt, conc), round+1, r.Requests, r.Errors, r.AggregateTokS, LoadAverage())
					for _, s := range ss {
						if s.Err != nil && firstErr[e] == nil {
							firstErr[e] = s.Err
							logf("%s: first error: %v", ep.Name, s.Err)
						}
					}
				}
			}
			for e, ep := range eps {
				r := Summarize(prompt, conc, samples[e], walls[e])
				r.Load1 = LoadAverage()
				if len(ep.PIDs) > 0 {
					if m, err := ReadMemory(ep.PIDs...); err == nil {
						r.RSS, r.PeakRSS = m.RSS, m.Peak
					} else {
						logf("%s: memory: %v", ep.Name, err)
					}
				}
				res.Rows[e] = append(res.Rows[e], r)
			}
		}
	}
	if err := res.Write(out, eps, plan); err != nil {
		return res, err
	}
	return res, ctx.Err()
}

// Write prints the tables.
func (res Result) Write(out io.Writer, eps []Endpoint, plan Plan) error {
	fmt.Fprintf(out, "\nmachine: %s\n", Machine())
	fmt.Fprintf(out, "workload: max_tokens %d, temperature %g, %d round(s), requests per level %s\n",
		plan.MaxTokens, plan.Temperature, plan.Rounds, requestsText(plan))
	for e, name := range res.Endpoints {
		fmt.Fprintf(out, "\n%s: %s (model %q)\n\n", name, eps[e].Client.BaseURL, eps[e].Client.Model)
		if err := WriteTable(out, res.Rows[e]); err != nil {
			return err
		}
	}
	if len(res.Endpoints) == 2 {
		n := min(len(res.Rows[0]), len(res.Rows[1]))
		ratios := make([]Ratio, 0, n)
		for i := range n {
			ratios = append(ratios, Ratio{A: res.Rows[0][i], B: res.Rows[1][i]})
		}
		fmt.Fprintf(out, "\nB/A (B = %s, A = %s)\n\n", eps[1].Client.BaseURL, eps[0].Client.BaseURL)
		return WriteRatios(out, ratios)
	}
	return nil
}

func requestsText(p Plan) string {
	switch {
	case p.Requests > 0 && p.Duration > 0:
		return fmt.Sprintf("%d or %v", p.Requests, p.Duration)
	case p.Requests > 0:
		return fmt.Sprint(p.Requests)
	case p.Duration > 0:
		return p.Duration.String()
	}
	levels := slices.Clone(p.Concurrency)
	for i, c := range levels {
		levels[i] = p.requests(c)
	}
	return fmt.Sprint(levels)
}

// Single sends one request end to end, the way a user would, and reports
// its wall time.
func Single(ctx context.Context, out io.Writer, c *Client, prompt string, maxTokens int, temperature float64, seed int64) error {
	if c.Model == "" {
		if ids, err := c.Models(ctx); err == nil && len(ids) > 0 {
			c.Model = ids[0]
		}
	}
	s := c.Stream(ctx, Request{Prompt: prompt, MaxTokens: maxTokens, Temperature: temperature, Seed: &seed, KeepText: true})
	if s.Err != nil {
		return s.Err
	}
	fmt.Fprintf(out, "machine: %s\n", Machine())
	fmt.Fprintf(out, "%s (model %q): %q, max_tokens %d\n", c.BaseURL, c.Model, prompt, maxTokens)
	fmt.Fprintf(out, "wall time %v, time to first token %v, %d prompt + %d completion tokens, %.1f tok/s while streaming\n",
		s.Latency.Round(time.Millisecond), s.FirstToken.Round(time.Millisecond),
		s.PromptTokens, s.CompletionTokens, s.StreamRate())
	fmt.Fprintf(out, "answer: %q\n", truncate(s.Text, 400))
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"
)

// ConversationPlan is the multi-turn workload: chat clients that re-send
// the whole conversation every turn, as chat clients do, so that a server
// reusing the KV cache of the earlier turns answers each turn about as
// fast as the first, and one that does not pays for the whole history.
// Zero values take the defaults given.
type ConversationPlan struct {
	// SystemWords is the length of the system prompt, the same in every
	// conversation (an application's); default 300 (about as many tokens,
	// see Prompt).
	SystemWords int
	// Turns per conversation; default 10.
	Turns int
	// TurnWords is the length of each user message; default 100.
	TurnWords int
	// MaxTokens of each answer; default 64.
	MaxTokens int
	// Conversations run at once on an endpoint; default 1.
	Conversations int
	// Rounds: each round runs the conversations on every endpoint in turn
	// (A, then B, ...), so that a change in the machine's load falls on
	// all of them alike; default 2.
	Rounds int
	// ThinkTime: before each turn a conversation pauses for a time drawn
	// from [0, ThinkTime), as a user reads and types (see Pause); default
	// none. Without it the conversations move in step, so that a
	// least-busy router taking ties in turn sends each to the same
	// instance every turn, as if it routed by conversation.
	ThinkTime   time.Duration
	Temperature float64
	Seed        int64
}

// Pause is how long conversation id (unique across rounds) waits before
// turn: drawn from [0, ThinkTime) by a generator seeded with Seed, id and
// turn, so that a run can be repeated.
func (p ConversationPlan) Pause(id, turn int) time.Duration {
	if p.ThinkTime <= 0 {
		return 0
	}
	r := rand.New(rand.NewPCG(uint64(p.Seed), uint64(id)<<32|uint64(turn)))
	return time.Duration(r.Int64N(int64(p.ThinkTime)))
}

func (p *ConversationPlan) setDefaults() {
	if p.SystemWords <= 0 {
		p.SystemWords = 300
	}
	if p.Turns <= 0 {
		p.Turns = 10
	}
	if p.TurnWords <= 0 {
		p.TurnWords = 100
	}
	if p.MaxTokens <= 0 {
		p.MaxTokens = 64
	}
	if p.Conversations <= 0 {
		p.Conversations = 1
	}
	if p.Rounds <= 0 {
		p.Rounds = 2
	}
}

// TurnSample is one turn of one conversation.
type TurnSample struct {
	Round, Conversation, Turn int
	Sample
}

// Conversation runs one conversation of plan on c: conv selects its user
// messages (every conversation, in every round, differs from its first
// user message on, and shares the system prompt). A failed turn ends the conversation.
func Conversation(ctx context.Context, c *Client, plan ConversationPlan, round, conv int) []TurnSample {
	plan.setDefaults()
	msgs := []Message{{Role: "system", Content: Prompt(plan.SystemWords, 0)}}
	var out []TurnSample
	for turn := range plan.Turns {
		// Offsets far apart, so that two conversations' messages differ
		// from their first word.
		id := round*plan.Conversations + conv // no two conversations alike, across rounds too
		if d := plan.Pause(id, turn); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return out
			}
		}
		msgs = append(msgs, Message{Role: "user", Content: Prompt(plan.TurnWords, 7*id+3*turn+1)})
		seed := plan.Seed + int64(id*1000+turn)
		s := c.Stream(ctx, Request{Messages: slices.Clone(msgs), MaxTokens: plan.MaxTokens, Temperature: plan.Temperature, Seed: &seed, KeepText: true})
		out = append(out, TurnSample{Round: round, Conversation: conv, Turn: turn, Sample: s})
		if s.Err != nil || ctx.Err() != nil {
			break
		}
		msgs = append(msgs, Message{Role: "assistant", Content: s.Text})
	}
	return out
}

// RunConversations runs plan on every endpoint, endpoints taking turns
// within each round, and writes the tables (WriteConversations) to out.
func RunConversations(ctx context.Context, out, progress io.Writer, plan ConversationPlan, eps []Endpoint) ([][]TurnSample, error) {
	plan.setDefaults()
	res := make([][]TurnSample, len(eps))
	for round := range plan.Rounds {
		for i, ep := range eps {
			if ctx.Err() != nil {
				break
			}
			fmt.Fprintf(progress, "round %d, %s: %d conversations × %d turns; load average %.2f\n",
				round+1, ep.Name, plan.Conversations, plan.Turns, LoadAverage())
			var mu sync.Mutex
			var wg sync.WaitGroup
			for conv := range plan.Conversations {
				wg.Go(func() {
					ts := Conversation(ctx, ep.Client, plan, round, conv)
					mu.Lock()
					res[i] = append(res[i], ts...)
					mu.Unlock()
				})
			}
			wg.Wait()
		}
	}
	return res, WriteConversations(out, plan, eps, res)
}

// WriteConversations writes, per turn, each endpoint's median time to
// first token, its prompt and cached tokens (means), and with several
// endpoints the TTFT ratio of each to the first; then each endpoint's
// totals: cache-hit ratio (cached over prompt tokens) and TTFT p50/p99 over
// every turn.
func WriteConversations(w io.Writer, plan ConversationPlan, eps []Endpoint, res [][]TurnSample) error {
	plan.setDefaults()
	header := []string{"turn"}
	for _, ep := range eps {
		header = append(header, ep.Name+" prompt tok", ep.Name+" cached", ep.Name+" TTFT p50")
	}
	for _, ep := range eps[min(1, len(eps)):] {
		header = append(header, ep.Name+"/"+eps[0].Name)
	}
	var rows [][]string
	for turn := range plan.Turns {
		row := []string{strconv.Itoa(turn + 1)}
		var ttft []float64
		for i := range eps {
			var prompt, cached float64
			var firsts []float64
			for _, s := range res[i] {
				if s.Turn != turn || s.Err != nil {
					continue
				}
				prompt += float64(s.PromptTokens)
				cached += float64(s.CachedTokens)
				firsts = append(firsts, float64(s.FirstToken))
			}
			n := float64(len(firsts))
			if n == 0 {
				row = append(row, "-", "-", "-")
				ttft = append(ttft, 0)
				continue
			}
			p50 := Percentile(firsts, 50)
			row = append(row, num(prompt/n, 0), num(cached/n, 0), ms(time.Duration(p50)))
			ttft = append(ttft, p50)
		}
		for i := 1; i < len(eps); i++ {
			row = append(row, ratio(ttft[i], ttft[0]))
		}
		rows = append(rows, row)
	}
	if err := WriteMarkdown(w, header, rows); err != nil {
		return err
	}
	fmt.Fprintln(w)
	rows = nil
	for i, ep := range eps {
		var prompt, cached, failed int
		var firsts []float64
		for _, s := range res[i] {
			if s.Err != nil {
				failed++
				continue
			}
			prompt += s.PromptTokens
			cached += s.CachedTokens
			firsts = append(firsts, float64(s.FirstToken))
		}
		hit := "-"
		if prompt > 0 {
			hit = fmt.Sprintf("%.1f%%", 100*float64(cached)/float64(prompt))
		}
		p50, p99 := "-", "-"
		if len(firsts) > 0 {
			p50, p99 = ms(time.Duration(Percentile(firsts, 50))), ms(time.Duration(Percentile(firsts, 99)))
		}
		rows = append(rows, []string{ep.Name, strconv.Itoa(len(firsts)), strconv.Itoa(failed), hit, p50, p99})
	}
	return WriteMarkdown(w, []string{"endpoint", "turns", "failed", "cache hits (cached/prompt tokens)", "TTFT p50", "TTFT p99"}, rows)
}

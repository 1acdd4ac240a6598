// Package bench drives OpenAI-compatible chat endpoints with a fixed
// workload — prompt lengths × concurrency levels, streaming requests timed
// from the client — and summarises what it saw: time to first token,
// per-stream and aggregate generation speed, latency, errors and the
// server's memory; RunEmbed times /v1/embeddings the same way. tools/bench
// is its command line.
package bench

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// words is the fixed vocabulary prompts are built from: common English, so
// that any tokenizer spends about one token per word.
var words = strings.Fields(`the quick brown fox jumps over a lazy dog while
children play in the park near an old river and birds sing above green trees
under a bright blue sky people walk along quiet streets talking about work
food weather music books friends family travel gardens cities mountains rain
snow summer winter morning evening light water stone bread apple house door
window table chair road car train ship island forest field flower garden cat
horse teacher doctor story song letter paper number color friend history`)

// Prompt returns a prompt of n words from the fixed list, starting at
// offset, so that requests can differ from their first word (a server that
// caches prompt prefixes must not get an easy ride).
func Prompt(n, offset int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[(offset+i)%len(words)])
	}
	return b.String()
}

// Level is one load level: Concurrency clients, each sending its next
// request when the last one ends.
type Level struct {
	Concurrency int
	// Requests is how many requests the level sends (0: no count limit).
	Requests int
	// Duration, when set, stops starting requests after it has passed.
	Duration time.Duration
}

// maxRequestsPerLevel bounds a level whatever its settings.
const maxRequestsPerLevel = 100_000

// RunLevel runs one level: request(i) builds the i-th request. It returns
// the samples in the order the requests were started and the wall time from
// the first start to the last end. A level without Requests or Duration
// sends one request per client.
func RunLevel(ctx context.Context, c *Client, lvl Level, request func(i int) Request) ([]Sample, time.Duration) {
	conc := max(lvl.Concurrency, 1)
	limit := lvl.Requests
	if limit <= 0 && lvl.Duration <= 0 {
		limit = conc
	}
	if limit <= 0 || limit > maxRequestsPerLevel {
		limit = maxRequestsPerLevel
	}
	var (
		next    atomic.Int64
		mu      sync.Mutex
		samples = make([]Sample, 0, min(limit, 4096))
		index   = make([]int, 0, min(limit, 4096))
		wg      sync.WaitGroup
	)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				if lvl.Duration > 0 && time.Since(start) >= lvl.Duration {
					return
				}
				i := int(next.Add(1) - 1)
				if i >= limit {
					return
				}
				s := c.Stream(ctx, request(i))
				mu.Lock()
				samples, index = append(samples, s), append(index, i)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	ordered := make([]Sample, len(samples))
	for k, i := range index {
		ordered[i] = samples[k]
	}
	return ordered, wall
}

// Calibrate finds how many words of Prompt make a prompt of about target
// tokens as the endpoint counts them (chat template included), with a few
// one-token requests. It returns target words when the endpoint reports no
// usage.
func Calibrate(ctx context.Context, c *Client, target int) (int, error) {
	return fit(target, func(n int) (int, error) {
		s := c.Stream(ctx, Request{Prompt: Prompt(n, 0), MaxTokens: 1, Temperature: 1})
		if s.Err != nil {
			return 0, s.Err
		}
		if !s.UsageReported || s.PromptTokens <= 0 {
			return 0, nil
		}
		return s.PromptTokens, nil
	})
}

// fit finds the number of words n for which count(n), the tokens a server
// counted, is closest to target, with a few calls; count returns 0 when
// the server does not say (fit then returns target).
func fit(target int, count func(n int) (int, error)) (int, error) {
	// Two points give the tokens per word and the template's overhead; a
	// third checks the estimate, and at most two more refine it.
	n1 := max(target/2, 1)
	p1, err := count(n1)
	if err != nil || p1 == 0 {
		return target, err
	}
	n2 := max(target, n1+1)
	p2, err := count(n2)
	if err != nil {
		return target, err
	}
	best, bestErr := n2, abs(p2-target)
	if abs(p1-target) < bestErr {
		best, bestErr = n1, abs(p1-target)
	}
	for range 3 {
		if bestErr <= max(1, target/50) || p2 == p1 {
			break
		}
		slope := float64(p2-p1) / float64(n2-n1)
		n := n2 + int(math.Round(float64(target-p2)/slope))
		n = max(n, 1)
		if n == n2 {
			break
		}
		p, err := count(n)
		if err != nil {
			return best, err
		}
		if abs(p-target) < bestErr {
			best, bestErr = n, abs(p-target)
		}
		n1, p1, n2, p2 = n2, p2, n, p
	}
	return best, nil
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// seedFor gives every request of a run its own reproducible seed: sampled
// text from random-weight models then neither collapses into one loop nor
// differs between runs.
func seedFor(base int64, prompt, concurrency, i int) *int64 {
	v := base + int64(prompt)*1_000_000 + int64(concurrency)*10_000 + int64(i)
	return &v
}

// describe names a level in progress lines.
func describe(prompt, conc int) string { return fmt.Sprintf("prompt %d × %d", prompt, conc) }

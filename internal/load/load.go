// Package load puts a gateway under load and checks that it holds up: many
// concurrent OpenAI clients, streaming and not, send greedy chat completions
// for a bounded time; every response is checked (well-formed JSON or SSE,
// usage consistent with the text, the same text the request gets alone),
// and the service processes' memory, goroutines, descriptors and threads
// are compared before and after. tools/load is its command line;
// docs/RELIABILITY.md says how to read the report.
//
// Greedy decoding makes every answer known in advance: before the load,
// each (prompt, max_tokens) pair of the workload is asked once, alone, and
// that answer is its golden. The engine gives a sequence the same text
// whatever it is batched with, so a different text under load means one
// request's output went into another's, or a sequence was corrupted.
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/bench"
)

// Config describes a run. Zero values take the defaults given, except
// Limits (see DefaultLimits).
type Config struct {
	// Client sends the requests. Its HTTP client should keep a connection
	// per load client alive (bench.NewHTTPClient).
	Client *Client
	// Clients is the number of concurrent clients; default 8. Each sends
	// its next request when the last one is answered.
	Clients int
	// Duration is how long requests are started; default 10s. Requests in
	// flight then finish, each bounded by Client.Timeout.
	Duration time.Duration
	// MaxRequests bounds the requests started; default 100,000.
	MaxRequests int
	// Prompts are the workload's distinct prompts; default Prompts(8).
	Prompts []string
	// MaxTokens are the max_tokens values each prompt is asked with;
	// default 8, 48, 160.
	MaxTokens []int
	// Seed chooses each client's sequence of requests, half of them
	// streamed.
	Seed uint64
	// Settle is the wait between the end of the load and the second
	// reading of the processes, for connections and goroutines to wind
	// down; default 5s.
	Settle time.Duration
	// Procs are the processes watched.
	Procs []Proc
	// Limits is how much the processes may grow.
	Limits Limits
	// Progress receives a line per phase; nil: none.
	Progress io.Writer
}

func (c *Config) setDefaults() {
	if c.Clients <= 0 {
		c.Clients = 8
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.MaxRequests <= 0 {
		c.MaxRequests = 100_000
	}
	if len(c.Prompts) == 0 {
		c.Prompts = Prompts(8)
	}
	if len(c.MaxTokens) == 0 {
		c.MaxTokens = []int{8, 48, 160}
	}
	if c.Settle <= 0 {
		c.Settle = 5 * time.Second
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Prompts returns k distinct prompts of different lengths, from 3 words
// up, built from bench's word list.
func Prompts(k int) []string {
	ps := make([]string, k)
	for i := range ps {
		ps[i] = bench.Prompt(3+4*i, 11*i)
	}
	return ps
}

// golden identifies a request's expected text: streaming does not change it.
type golden struct {
	prompt    string
	maxTokens int
}

// Run asks every request of the workload alone for its golden text, reads
// the processes, runs the load, lets the processes settle, reads them again
// and returns the report with its verdict. It fails only when the gateway
// is not on loopback or the goldens cannot be had; a run interrupted
// through ctx is reported as such.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if cfg.Client == nil {
		return nil, errors.New("load: Config.Client is required")
	}
	if err := checkLoopback(cfg.Client.BaseURL); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Progress, "load: "+format+"\n", args...) }

	logf("asking each of %d prompts × %d max_tokens alone", len(cfg.Prompts), len(cfg.MaxTokens))
	goldens := map[golden]string{}
	for _, p := range cfg.Prompts {
		for _, n := range cfg.MaxTokens {
			r := cfg.golden(ctx, Request{Prompt: p, MaxTokens: n})
			if r.Outcome != OK {
				return nil, fmt.Errorf("the answer alone to %q with max_tokens %d: %s: %s", p, n, r.Outcome, r.Detail)
			}
			goldens[golden{p, n}] = r.Text
		}
	}

	// No keep-alive: an idle connection to a service would count among its
	// descriptors and goroutines.
	metricsHTTP := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	read := func() []Stats {
		cfg.Client.closeIdle()
		stats := make([]Stats, len(cfg.Procs))
		for i, p := range cfg.Procs {
			stats[i] = ReadStats(ctx, metricsHTTP, p)
		}
		return stats
	}
	before := read()

	logf("%d clients for %v (at most %d requests, each bounded by %v)", cfg.Clients, cfg.Duration, cfg.MaxRequests, cfg.Client.timeout())
	results, wall := cfg.load(ctx, goldens)

	logf("%d requests in %v; settling for %v", len(results), wall.Round(time.Millisecond), cfg.Settle)
	cfg.Client.closeIdle()
	select {
	case <-ctx.Done():
	case <-time.After(cfg.Settle):
	}
	after := read()

	rep := newReport(cfg, results, wall)
	rep.Interrupted = ctx.Err() != nil
	for i, p := range cfg.Procs {
		rep.Procs = append(rep.Procs, ProcReport{Proc: p, Before: before[i], After: after[i]})
	}
	rep.judge(cfg.Limits)
	return rep, nil
}

// checkLoopback refuses a gateway that is not on this machine: the tool is
// for testing one's own mesh, not for loading someone else's server.
func checkLoopback(baseURL string) error {
	u, err := url.Parse(baseURL)
	if err != nil {
		return fmt.Errorf("gateway URL: %w", err)
	}
	if u.Hostname() == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("gateway URL %q: only loopback addresses (127.0.0.1, [::1], localhost) are loaded", baseURL)
}

// load runs the clients until Duration has passed or MaxRequests have
// started, and returns every checked result and the wall time. Results of
// requests cut off by the end of ctx are left out.
func (cfg *Config) load(ctx context.Context, goldens map[golden]string) ([]Result, time.Duration) {
	var (
		start    = time.Now()
		deadline = start.Add(cfg.Duration)
		started  atomic.Int64
		mu       sync.Mutex
		results  []Result
		wg       sync.WaitGroup
	)
	for i := range cfg.Clients {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) && started.Add(1) <= int64(cfg.MaxRequests) {
				req := Request{
					Prompt:    cfg.Prompts[rng.IntN(len(cfg.Prompts))],
					MaxTokens: cfg.MaxTokens[rng.IntN(len(cfg.MaxTokens))],
					Stream:    rng.IntN(2) == 0,
				}
				r := cfg.Client.Do(ctx, req)
				if ctx.Err() != nil {
					return
				}
				if want := goldens[golden{req.Prompt, req.MaxTokens}]; r.Outcome == OK && r.Text != want {
					r.Outcome, r.Detail = WrongOutput, fmt.Sprintf("got %.120q, alone %.120q", r.Text, want)
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				if r.Outcome == RateLimited || r.Outcome == Unavailable {
					backOff(ctx, r.RetryAfter, deadline)
				}
			}
		})
	}
	wg.Wait()
	return results, time.Since(start)
}

// goldenTries bounds how often one golden request is asked again after
// the mesh said no properly (a 429 or 503): a gateway whose per-key rate
// limit an earlier run used up answers 429 for a second or so.
const goldenTries = 5

// golden asks req alone, backing off as the load's clients do while the
// mesh answers 429 or 503, at most goldenTries times.
func (cfg *Config) golden(ctx context.Context, req Request) Result {
	for try := 1; ; try++ {
		r := cfg.Client.Do(ctx, req)
		if (r.Outcome != RateLimited && r.Outcome != Unavailable) || try == goldenTries || ctx.Err() != nil {
			return r
		}
		backOff(ctx, r.RetryAfter, time.Now().Add(maxGoldenWait))
	}
}

// maxGoldenWait caps one wait between golden tries, whatever Retry-After says.
const maxGoldenWait = 10 * time.Second

// backOff waits as a well-behaved client does after a 429 or 503: what
// Retry-After says (1s if nothing), but not past the end of the load.
func backOff(ctx context.Context, wait time.Duration, deadline time.Time) {
	if wait <= 0 {
		wait = time.Second
	}
	t := time.NewTimer(min(wait, time.Until(deadline)))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

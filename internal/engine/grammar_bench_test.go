package engine

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/bench"
	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// BenchmarkStructured measures what a grammar and logprobs cost a single
// stream on the full-size random-weight gemma-3-270m (262,144-token
// vocabulary), side by side in one run:
//
//	SLM_BENCH_THREADS=2 go test -run '^$' -bench Structured -benchtime 3x ./internal/engine/
//
// Random weights are the grammar's worst case: the token drawn first is
// almost never allowed, so nearly every step draws again (from the most
// likely tokens, or through the prefix trie's mask). A trained model's
// first draw is usually allowed, which costs one check.
func BenchmarkStructured(b *testing.B) {
	if testing.Short() {
		b.Skip("skipped in -short mode: runs the full-size model")
	}
	path := benchModel(b)
	threads := envInt(b, benchThreadsEnv, runtime.NumCPU())
	serviceGoMaxProcs(b, threads)
	maxTokens := envInt(b, benchTokensEnv, 64)
	e, err := Open(Config{ModelPath: path, Threads: threads, Parallel: 1, Logger: benchLogger()})
	if err != nil {
		b.Fatalf("open %s: %v", path, err)
	}
	b.Cleanup(e.Close)
	fmt.Fprintf(os.Stderr, "structured benchmark: %s, %d threads, %d tokens per request; machine: %s\n",
		path, threads, maxTokens, bench.Machine())

	// A schema without bounds on its strings, so that the grammar never
	// ends the output before max_tokens.
	const schema = `{"type":"object","properties":{"story":{"type":"string"}},"required":["story"]}`
	for _, bc := range []struct {
		name string
		set  func(*chat.Request)
	}{
		{"free", func(*chat.Request) {}},
		{"json_schema", func(r *chat.Request) { r.ResponseFormat = jsonSchemaFormat(schema) }},
		{"json_object", func(r *chat.Request) { r.ResponseFormat = &chat.ResponseFormat{Type: chat.FormatJSONObject} }},
		{"logprobs", func(r *chat.Request) { r.Logprobs = true }},
		{"logprobs,top_logprobs=20", func(r *chat.Request) { r.Logprobs, r.TopLogprobs = true, 20 }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			run := func(seed int64) (int, time.Duration, time.Duration) {
				req := sampled(maxTokens, seed)
				req.Messages = []chat.Message{{Role: chat.RoleUser, Content: "Tell a story as JSON."}}
				bc.set(&req)
				start := time.Now()
				var first time.Duration
				res, err := e.GenerateDeltas(context.Background(), Request{Request: req}, func(chat.Delta) error {
					if first == 0 {
						first = time.Since(start)
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				return res.CompletionTokens, time.Since(start) - first, first
			}
			run(-1) // warm-up: the grammar's vocabulary is built once per engine
			var tokens int
			var total, ttft time.Duration
			b.ResetTimer()
			for i := range b.N {
				n, d, f := run(int64(i))
				tokens, total, ttft = tokens+n-1, total+d, ttft+f
			}
			b.StopTimer()
			b.ReportMetric(float64(tokens)/total.Seconds(), "tok/s")
			b.ReportMetric(total.Seconds()*1000/float64(tokens), "ms/tok")
			b.ReportMetric(ttft.Seconds()*1000/float64(b.N), "ttft-ms")
		})
	}
}

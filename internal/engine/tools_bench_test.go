package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/bench"
	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
)

// BenchmarkToolCall measures what a forced tool call costs on the
// full-size random-weight functiongemma-270m: the latency of a reply that
// is one call of get_forecast (tool_choice naming it, so under the calls'
// grammar, its parsing included) against a reply of free text of the same
// number of tokens, with the same seed, alternately in one run:
//
//	SLM_BENCH_THREADS=2 go test -run '^$' -bench ToolCall -benchtime 10x ./internal/engine/
//
// Both prompts are the same every round and each keeps a slot of its own
// (two slots: with one, each request would evict the other's prompt and
// the call would prefill its tool declarations every round), so each
// reply is its tokens' decoding, but for the call's first tokens, which
// the grammar fixes and which are decoded with the prompt (callPrefix):
// what a call adds is the grammar
// (copied from the engine's cache after the first request; on a refused
// draw, a mask through the prefix trie where the grammar allows few
// tokens, the most likely tokens where it allows many) and the parser. Random weights are the
// grammar's worst case (see BenchmarkStructured).
func BenchmarkToolCall(b *testing.B) {
	if testing.Short() {
		b.Skip("skipped in -short mode: runs the full-size model")
	}
	path := cachedPreset(b, ggufgen.PresetFunctionGemma270M)
	threads := envInt(b, benchThreadsEnv, runtime.NumCPU())
	serviceGoMaxProcs(b, threads)
	e, err := Open(Config{ModelPath: path, Threads: threads, Parallel: 2, Logger: benchLogger()})
	if err != nil {
		b.Fatalf("open %s: %v", path, err)
	}
	b.Cleanup(e.Close)
	fmt.Fprintf(os.Stderr, "tool call benchmark: %s, %d threads; machine: %s\n", path, threads, bench.Machine())

	run := func(req chat.Request) (chat.Result, int, time.Duration) {
		start := time.Now()
		calls := 0
		res, err := e.GenerateDeltas(context.Background(), Request{Request: req}, func(d chat.Delta) error {
			calls += len(d.ToolCalls)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		return res, calls, time.Since(start)
	}
	call := func(seed int64) chat.Request {
		req := toolRequest(seed, &chat.ToolChoice{Mode: chat.ToolChoiceFunction, Name: "get_forecast"}, false)
		req.MaxTokens = 200
		return req
	}
	free := func(seed int64, n int) chat.Request {
		req := sampled(n, seed)
		req.Messages = []chat.Message{{Role: chat.RoleUser, Content: "What will the weather be in Paris?"}}
		return req
	}
	// Warm-up: the grammar's vocabulary is built once per engine, and
	// each prompt goes into the cache.
	res, _, _ := run(call(-1))
	g, err := e.toolGrammar(call(-1))
	if err != nil {
		b.Fatal(err)
	}
	prefix := len(e.callPrefix(call(-1), g, 200))
	g.free()
	run(free(-1, res.CompletionTokens))

	var tokens int
	var tool, plain time.Duration
	b.ResetTimer()
	for i := range b.N {
		res, calls, d := run(call(int64(i)))
		if calls != 1 || res.FinishReason != chat.FinishToolCalls {
			b.Fatalf("seed %d: %d calls, finish %q", i, calls, res.FinishReason)
		}
		fres, _, fd := run(free(int64(i), res.CompletionTokens))
		if fres.CompletionTokens != res.CompletionTokens {
			b.Logf("seed %d: free text ended after %d tokens of %d", i, fres.CompletionTokens, res.CompletionTokens)
		}
		tokens += res.CompletionTokens
		tool += d
		plain += fd
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(tokens)/n, "tokens/reply")
	b.ReportMetric(float64(prefix), "prefix-tokens/reply")
	b.ReportMetric(tool.Seconds()*1000/n, "call-ms/reply")
	b.ReportMetric(plain.Seconds()*1000/n, "free-ms/reply")
	b.ReportMetric((tool.Seconds()/plain.Seconds()-1)*100, "overhead-%")
}

// BenchmarkToolGrammar measures the grammar's own work in a forced call,
// without decoding: getting the calls' grammar over the full-size
// functiongemma-270m vocabulary (a copy of the cached one: the first is
// built outside the timing), drawing each token of the call under it
// from random logits (as random weights give: the first draw nearly
// always refused) with the engine's default sampling, and freeing it,
// against drawing the same number of tokens from the same logits
// without it:
//
//	go test -run '^$' -bench ToolGrammar -benchtime 5x ./internal/engine/
//
// What a call adds to a reply is about the difference, whatever a
// decode step costs on the machine.
func BenchmarkToolGrammar(b *testing.B) {
	if testing.Short() {
		b.Skip("skipped in -short mode: loads the full-size model")
	}
	path := cachedPreset(b, ggufgen.PresetFunctionGemma270M)
	e, err := Open(Config{ModelPath: path, Threads: 1, Parallel: 1, Logger: benchLogger()})
	if err != nil {
		b.Fatalf("open %s: %v", path, err)
	}
	b.Cleanup(e.Close)
	req := toolRequest(0, &chat.ToolChoice{Mode: chat.ToolChoiceFunction, Name: "get_forecast"}, false)
	if _, err := e.toolGrammar(req); err != nil { // the vocabulary, built once per engine
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, e.model.NumVocab())
	work := make([]float32, len(logits))
	var tokens int
	var build, drawn, plain, freed time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		g, err := e.toolGrammar(req)
		if err != nil {
			b.Fatal(err)
		}
		build += time.Since(start)
		p := samplingParams(req)
		p.Seed = uint64(i)
		free := newSampler(p)
		p.Constraint = g
		s := newSampler(p)
		for {
			for j := range logits {
				logits[j] = float32(rng.NormFloat64())
			}
			copy(work, logits)
			start = time.Now()
			tok := s.sample(work)
			if tok >= 0 {
				s.accept(tok)
			}
			drawn += time.Since(start)
			copy(work, logits)
			start = time.Now()
			free.accept(free.sample(work))
			plain += time.Since(start)
			if tok < 0 {
				b.Fatal("the grammar allows nothing")
			}
			if tokens++; e.model.TokenIsEog(tok) {
				break
			}
		}
		start = time.Now()
		g.free()
		freed += time.Since(start)
	}
	b.StopTimer()
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 / n }
	b.ReportMetric(float64(tokens)/n, "tokens/call")
	b.ReportMetric(ms(build), "build-ms/call")
	b.ReportMetric(ms(freed), "free-ms/call")
	b.ReportMetric(ms(drawn), "draws-ms/call")
	b.ReportMetric(ms(plain), "unconstrained-draws-ms/call")
}

package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/bench"
	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
	"github.com/slm-mesh/slm-mesh/internal/q8gemm"
)

// Environment of BenchmarkGemma3_270M.
const (
	benchModelEnv   = "SLM_BENCH_MODEL"           // GGUF to measure; default: the generated gemma3-270m
	benchThreadsEnv = "SLM_BENCH_THREADS"         // llama.cpp threads; default: one per CPU
	benchTokensEnv  = "SLM_BENCH_TOKENS"          // completion tokens per decode stream; default 128
	benchChunkEnv   = "SLM_BENCH_PREFILL_CHUNK"   // Config.PrefillChunk; default: the engine's
	benchKVEnv      = "SLM_BENCH_KV_CACHE_TYPE"   // Config.KVCacheType; default: the engine's
	benchFlashEnv   = "SLM_BENCH_FLASH_ATTENTION" // Config.FlashAttention; default: the engine's
	benchQ8Env      = "SLM_BENCH_Q8GEMM"          // "off": ggml's own kernels for Q8_0 batches; default: internal/q8gemm where the CPU runs it
)

// defaultBenchTokens is the completion length of the decode benchmarks:
// long enough that the prompt (two tokens) is noise, short enough that the
// whole benchmark takes minutes.
const defaultBenchTokens = 128

// BenchmarkGemma3_270M measures the engine on the full-size random-weight
// gemma-3-270m (generated once into .cache/models/): prompt processing,
// time to first token, single-stream and concurrent decoding, peak RSS.
//
//	go test -run '^$' -bench . -benchtime 1x ./internal/engine/
//	SLM_BENCH_THREADS=2 go test -run '^$' -bench Gemma3_270M/decode ./internal/engine/
func BenchmarkGemma3_270M(b *testing.B) {
	if testing.Short() {
		b.Skip("skipped in -short mode: runs the full-size model for minutes")
	}
	path := benchModel(b)
	threads := envInt(b, benchThreadsEnv, runtime.NumCPU())
	serviceGoMaxProcs(b, threads)
	benchKernel(b)
	maxTokens := envInt(b, benchTokensEnv, defaultBenchTokens)
	e, err := Open(Config{
		ModelPath: path, Threads: threads, PrefillChunk: envInt(b, benchChunkEnv, 0),
		KVCacheType: os.Getenv(benchKVEnv), FlashAttention: os.Getenv(benchFlashEnv),
		// Every round sends the same prompts: with reuse on, the prompt
		// rows would measure a cache hit, not a prefill. Reuse has its
		// own figures (tools/bench conversation).
		NoPromptCache: true,
		Logger:        benchLogger(),
	})
	if err != nil {
		b.Fatalf("open %s: %v", path, err)
	}
	b.Cleanup(e.Close)
	// b.Logf of a benchmark with sub-benchmarks is not shown; the setting
	// belongs next to the figures.
	fmt.Fprintf(os.Stderr, "engine benchmark: %s, %d threads, %d slots, %d tokens per stream, KV cache %s, flash attention %s, Q8_0 batches by %s; machine: %s\n",
		path, threads, e.cfg.Parallel, maxTokens, e.cfg.KVCacheType, e.cfg.FlashAttention, benchKernelName(), bench.Machine())

	for _, n := range []int{128, 512} {
		prompt := promptOf(b, e, n)
		b.Run(fmt.Sprintf("prompt=%d", n), func(b *testing.B) {
			// One completion token: the time is the prompt's prefill plus
			// one sample, i.e. the time to first token with nothing else
			// running.
			benchGenerate(b, e, Request{Prompt: prompt, Request: sampled(1, 0)}) // warm-up
			var total time.Duration
			var tokens int
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				res := benchGenerate(b, e, Request{Prompt: prompt, Request: sampled(1, int64(i))})
				total += time.Since(start)
				tokens += res.PromptTokens
			}
			b.StopTimer()
			b.ReportMetric(float64(tokens)/total.Seconds(), "prompt-tok/s")
			b.ReportMetric(total.Seconds()*1000/float64(b.N), "ttft-ms")
			reportPeakRSS(b)
		})
	}

	b.Run("prefill-stall/prompt=512", func(b *testing.B) {
		// A stream decodes while a 512-token prompt arrives: the prompt
		// goes in in chunks next to the stream's tokens, so the stream
		// keeps getting one token per step; the steps that carry a chunk
		// are longer. stall-ms is the longest gap between the stream's
		// tokens while the prompt is processed, step-ms the median gap
		// before it.
		prompt := promptOf(b, e, 512)
		var stall, step, ttft time.Duration
		for i := range b.N {
			st, sp, tt := prefillStall(b, e, prompt, int64(i))
			stall, step, ttft = max(stall, st), step+sp, ttft+tt
		}
		b.ReportMetric(stall.Seconds()*1000, "stall-ms")
		b.ReportMetric(step.Seconds()*1000/float64(b.N), "step-ms")
		b.ReportMetric(ttft.Seconds()*1000/float64(b.N), "joiner-ttft-ms")
	})

	for _, streams := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("decode/streams=%d", streams), func(b *testing.B) {
			// A short warm-up lets the planner measure this batch size
			// before the clock runs.
			decode(b, e, streams, min(32, maxTokens), -1)
			var total time.Duration
			var tokens int
			b.ResetTimer()
			for i := range b.N {
				n, d := decode(b, e, streams, maxTokens, int64(i))
				tokens += n
				total += d
			}
			b.StopTimer()
			b.ReportMetric(float64(tokens)/total.Seconds(), "tok/s")
			b.ReportMetric(float64(tokens)/total.Seconds()/float64(streams), "tok/s/stream")
			reportPeakRSS(b)
		})
	}
}

// benchLogger shows llama.cpp's and the engine's warnings only.
func benchLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "engine", Level: hclog.Warn, Output: os.Stderr})
}

// benchKernel applies $SLM_BENCH_Q8GEMM for the benchmark b, before it
// opens its engine (a context may reuse a graph built before a switch).
func benchKernel(b *testing.B) {
	switch v := os.Getenv(benchQ8Env); v {
	case "":
	case "off":
		q8gemm.SetEnabled(false)
		b.Cleanup(func() { q8gemm.SetEnabled(true) })
	default:
		b.Fatalf("%s=%q: want off or nothing", benchQ8Env, v)
	}
}

// benchKernelName says which kernel runs Q8_0 products of batches, once an
// engine is open: "q8gemm" or "ggml".
func benchKernelName() string {
	if q8gemm.Registered() && os.Getenv(benchQ8Env) != "off" {
		return "q8gemm"
	}
	return "ggml"
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// decode runs streams generations of maxTokens each from a two-token prompt,
// all at once, and returns the completion tokens and the wall time.
func decode(b *testing.B, e *Engine, streams, maxTokens int, seed int64) (int, time.Duration) {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		tokens int
	)
	start := time.Now()
	for s := range streams {
		wg.Go(func() {
			res := benchGenerate(b, e, Request{Prompt: "Once", Request: sampled(maxTokens, seed*100+int64(s))})
			mu.Lock()
			tokens += res.CompletionTokens
			mu.Unlock()
		})
	}
	wg.Wait()
	return tokens, time.Since(start)
}

// prefillStall runs one stream, lets a request with prompt join after the
// stream's 30th token and returns the longest gap between the stream's
// tokens while the joiner's prompt was processed, the median gap before it
// and the joiner's time to its one token.
func prefillStall(b *testing.B, e *Engine, prompt string, seed int64) (stall, step, ttft time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		mu    sync.Mutex
		times []time.Time
	)
	joinAt := make(chan struct{})
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		e.Generate(ctx, Request{Prompt: "Once", Request: sampled(1000, seed)}, func(string) error {
			mu.Lock()
			defer mu.Unlock()
			times = append(times, time.Now())
			if len(times) == 30 {
				close(joinAt)
			}
			return nil
		})
	}()
	select {
	case <-joinAt:
	case <-streamDone:
		b.Fatal("the stream ended before the prompt joined")
	}
	start := time.Now()
	benchGenerate(b, e, Request{Prompt: prompt, Request: sampled(1, seed)})
	end := time.Now()
	time.Sleep(200 * time.Millisecond) // a few more tokens after the prompt
	cancel()
	<-streamDone

	mu.Lock()
	defer mu.Unlock()
	var before []time.Duration
	for i := 1; i < len(times); i++ {
		gap := times[i].Sub(times[i-1])
		switch {
		case times[i].Before(start):
			before = append(before, gap)
		case times[i-1].Before(end):
			stall = max(stall, gap)
		}
	}
	slices.Sort(before)
	return stall, before[len(before)/2], end.Sub(start)
}

// sampled is a request for maxTokens sampled at temperature 1: greedy
// decoding of random weights settles into a loop, which is no workload.
func sampled(maxTokens int, seed int64) chat.Request {
	return chat.Request{MaxTokens: maxTokens, Temperature: f32(1), Seed: i64(seed)}
}

func benchGenerate(b *testing.B, e *Engine, req Request) chat.Result {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := e.Generate(ctx, req, nil)
	if err != nil {
		b.Errorf("generate: %v", err)
	}
	return res
}

// promptOf returns raw text of exactly n tokens (BOS included).
func promptOf(b *testing.B, e *Engine, n int) string {
	words := n
	for range 8 {
		p := bench.Prompt(words, 0)
		toks, err := e.model.Tokenize(p, true, true)
		if err != nil {
			b.Fatal(err)
		}
		if len(toks) == n {
			return p
		}
		if len(toks) > n && words > 1 {
			// Shorten by the excess; words and tokens are near one to one.
			words -= max(1, (len(toks)-n)/2)
			continue
		}
		words += max(1, (n-len(toks))/2)
	}
	p := bench.Prompt(words, 0)
	toks, _ := e.model.Tokenize(p, true, true)
	b.Logf("prompt of %d tokens wanted, %d used", n, len(toks))
	return p
}

// reportPeakRSS reports the process's VmHWM so far: the model's mapped
// pages, the KV cache and llama.cpp's buffers, plus the test binary.
func reportPeakRSS(b *testing.B) {
	m, err := bench.ReadMemory(os.Getpid())
	if err != nil {
		b.Logf("peak RSS: %v", err)
		return
	}
	b.ReportMetric(float64(m.Peak)/(1<<20), "peak-RSS-MB")
}

// benchModel returns $SLM_BENCH_MODEL, else the random-weight gemma3-270m
// under .cache/models/ at the repository root, writing it first if needed
// (a few seconds; the same seed writes the same file).
// serviceGoMaxProcs runs the benchmark with the GOMAXPROCS the inference
// service sets for the same threads (GoMaxProcs), unless GOMAXPROCS is in
// the environment.
func serviceGoMaxProcs(b *testing.B, threads int) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	prev := runtime.GOMAXPROCS(GoMaxProcs(threads))
	b.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

func benchModel(b *testing.B) string {
	if p := os.Getenv(benchModelEnv); p != "" {
		return p
	}
	return cachedPreset(b, ggufgen.PresetGemma3_270M)
}

// cachedPreset returns ggufgen's preset (random weights) under
// .cache/models/ at the repository root, named after the preset's model,
// writing it first if needed.
func cachedPreset(b *testing.B, preset string) string {
	cfg, err := ggufgen.Preset(preset)
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(modeltest.RepoRoot(), ".cache", "models", cfg.Name+".gguf")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		b.Fatal(err)
	}
	// Written aside and renamed, so that a concurrent run never reads half
	// a file.
	tmp := p + "." + strconv.Itoa(os.Getpid()) + ".part"
	if err := ggufgen.Write(tmp, cfg); err != nil {
		os.Remove(tmp)
		b.Fatalf("write %s: %v", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote %s", p)
	return p
}

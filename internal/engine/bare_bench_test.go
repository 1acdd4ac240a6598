package engine

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ollama/ollama/llama"
	"github.com/ollama/ollama/ml"
)

// BenchmarkBareLoop is the baseline the engine is measured against, in the
// same run on the same model: the llama package driven directly — no
// engine, no planner, no channels — with every stream decoding one token per
// step, sampled at temperature 1 like the engine benchmark.
//
//	SLM_BENCH_THREADS=2 go test -run '^$' -bench 'BareLoop|Gemma3_270M' -benchtime 2x ./internal/engine/
//
// decode-ms/step is the time inside llama_decode; sample-ms/tok the time
// of sampling one token (a pass over the 262k-entry vocabulary) and turning
// it into text.
func BenchmarkBareLoop(b *testing.B) {
	if testing.Short() {
		b.Skip("skipped in -short mode: runs the full-size model for minutes")
	}
	path := benchModel(b)
	threads := envInt(b, benchThreadsEnv, runtime.NumCPU())
	serviceGoMaxProcs(b, threads)
	maxTokens := envInt(b, benchTokensEnv, defaultBenchTokens)
	backendOnce.Do(func() { initBackend(benchLogger()) })
	m, err := llama.LoadModelFromFile(path, llama.ModelParams{UseMmap: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { llama.FreeModel(m) })

	// The llama package cannot free a context; each sub-benchmark makes one
	// and they live until the process ends.
	newContext := func(b *testing.B, seqs int) (*llama.Context, *llama.Batch) {
		const ctxPerSeq, batchSize = 2048, 512
		params := llama.NewContextParams(ctxPerSeq*seqs, batchSize, seqs, threads, ml.FlashAttentionAuto, "f16")
		lctx, err := llama.NewContextWithModel(m, params)
		if err != nil {
			b.Fatal(err)
		}
		batch, err := llama.NewBatch(batchSize, seqs, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(batch.Free)
		return lctx, batch
	}

	for _, n := range []int{128, 512} {
		b.Run(fmt.Sprintf("prompt=%d", n), func(b *testing.B) {
			lctx, batch := newContext(b, 1)
			var total time.Duration
			for i := range b.N + 1 { // the first round warms up
				lctx.KvCacheSeqRm(0, -1, -1)
				batch.Clear()
				for j := range n {
					batch.Add(100+j, nil, j, j == n-1, 0)
				}
				start := time.Now()
				if err := lctx.Decode(batch); err != nil {
					b.Fatal(err)
				}
				if i > 0 {
					total += time.Since(start)
				}
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "prompt-tok/s")
			b.ReportMetric(total.Seconds()*1000/float64(b.N), "prefill-ms")
		})
	}

	prompt, err := m.Tokenize("Once", true, true)
	if err != nil {
		b.Fatal(err)
	}
	for _, streams := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("decode/streams=%d", streams), func(b *testing.B) {
			lctx, batch := newContext(b, streams)
			var decodeTime, sampleTime time.Duration
			tokens := 0
			for i := range b.N + 1 { // the first round (16 tokens) warms up
				n := maxTokens
				if i == 0 {
					n = 16
				}
				samplers := make([]*llama.SamplingContext, streams)
				next := make([][]int, streams) // tokens to feed at the next step
				for s := range streams {
					var err error
					if samplers[s], err = llama.NewSamplingContext(m, llamaSampling(i*100+s)); err != nil {
						b.Fatal(err)
					}
					next[s] = prompt
					lctx.KvCacheSeqRm(s, -1, -1)
				}
				pos := 0
				for range n {
					batch.Clear()
					for s := range streams {
						for j, tok := range next[s] {
							batch.Add(tok, nil, pos+j, j == len(next[s])-1, s)
						}
					}
					pos += len(next[0])
					start := time.Now()
					if err := lctx.Decode(batch); err != nil {
						b.Fatal(err)
					}
					decoded := time.Now()
					for s := range streams {
						idx := (s+1)*len(next[s]) - 1
						tok := samplers[s].Sample(lctx, idx)
						samplers[s].Accept(tok, false)
						_ = m.TokenToPiece(tok)
						next[s] = []int{tok}
					}
					if i > 0 {
						decodeTime += decoded.Sub(start)
						sampleTime += time.Since(decoded)
						tokens += streams
					}
				}
			}
			steps := tokens / streams
			b.ReportMetric(float64(tokens)/(decodeTime+sampleTime).Seconds(), "tok/s")
			b.ReportMetric(decodeTime.Seconds()*1000/float64(steps), "decode-ms/step")
			b.ReportMetric(sampleTime.Seconds()*1000/float64(tokens), "sample-ms/tok")
		})
	}
}

// llamaSampling is llama.cpp's sampler with the engine's defaults at
// temperature 1, as the engine benchmark samples.
func llamaSampling(seed int) llama.SamplingParams {
	return llama.SamplingParams{
		TopK: 40, TopP: 0.95, MinP: 0.05, TypicalP: 1, Temp: 1,
		RepeatLastN: 64, PenaltyRepeat: 1, Seed: uint32(seed),
	}
}

package engine

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
)

// benchEmbedInputs is the embedding benchmarks' workload: 64 inputs of 32
// tokens each (BOS, 30 ids, EOS), all different.
func benchEmbedInputs() []chat.EmbedInput {
	inputs := make([]chat.EmbedInput, 64)
	for i := range inputs {
		toks := []int{ggufgen.BOSID}
		for k := range 30 {
			toks = append(toks, 1000+(i*31+k*17)%200000)
		}
		inputs[i].Tokens = append(toks, ggufgen.EOSID)
	}
	return inputs
}

// BenchmarkEmbeddings measures embeddings throughput on the full-size
// embeddinggemma-300m preset (random weights: the cost is the shapes'):
// one request of 64 inputs of 32 tokens each (BOS, 30 ids, EOS), on 2
// threads. Reported: inputs and tokens per second. SLM_BENCH_Q8GEMM=off
// measures ggml's own kernel for the Q8_0 products.
//
//	go test -run '^$' -bench BenchmarkEmbeddings -benchtime 10x ./internal/engine/
func BenchmarkEmbeddings(b *testing.B) {
	benchKernel(b)
	e := openEmbedding(b, ggufgen.PresetEmbeddingGemma300M, Config{Threads: 2})
	fmt.Fprintf(os.Stderr, "Q8_0 batches by %s\n", benchKernelName())
	req := chat.EmbedRequest{Inputs: benchEmbedInputs()}
	if _, err := e.Embed(context.Background(), req); err != nil { // warm up
		b.Fatal(err)
	}
	// The tokens packed into one llama.cpp pass: one input of 32 (a pass
	// per input, as ollama runs them), the default, and around it.
	for _, pack := range []int{32, 128, 256, e.embed.pack, 1024, 2048} {
		b.Run(fmt.Sprintf("pack-%d", pack), func(b *testing.B) {
			defer func(p int) { e.embed.pack = p }(e.embed.pack)
			e.embed.pack = pack
			for range b.N {
				if _, err := e.Embed(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
			s := b.Elapsed().Seconds()
			b.ReportMetric(float64(64*b.N)/s, "inputs/s")
			b.ReportMetric(float64(64*32*b.N)/s, "tokens/s")
		})
	}
}

// BenchmarkEmbeddingsConcurrent measures what sharing passes between
// requests is worth: the same 64 inputs as BenchmarkEmbeddings, sent as 64
// one-input requests, one at a time (a pass each) or by 8 clients at once
// (their inputs packed together), on 2 threads:
//
//	go test -run '^$' -bench BenchmarkEmbeddingsConcurrent -benchtime 4x ./internal/engine/
func BenchmarkEmbeddingsConcurrent(b *testing.B) {
	e := openEmbedding(b, ggufgen.PresetEmbeddingGemma300M, Config{Threads: 2})
	inputs := benchEmbedInputs()
	reqs := make([]chat.EmbedRequest, len(inputs))
	for i, in := range inputs {
		reqs[i].Inputs = []chat.EmbedInput{in}
	}
	if _, err := e.Embed(context.Background(), reqs[0]); err != nil { // warm up
		b.Fatal(err)
	}
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients-%d", clients), func(b *testing.B) {
			before := e.Stats().Steps
			for range b.N {
				next := make(chan chat.EmbedRequest, len(reqs))
				for _, r := range reqs {
					next <- r
				}
				close(next)
				var wg sync.WaitGroup
				for range clients {
					wg.Go(func() {
						for r := range next {
							if _, err := e.Embed(context.Background(), r); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			}
			s := b.Elapsed().Seconds()
			b.ReportMetric(float64(64*b.N)/s, "inputs/s")
			b.ReportMetric(float64(e.Stats().Steps-before)/float64(b.N), "passes/64-inputs")
		})
	}
}

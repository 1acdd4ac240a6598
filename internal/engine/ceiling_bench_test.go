package engine

import (
	"os"
	"runtime"
	"sync"
	"testing"
	"unsafe"
)

// BenchmarkMemoryCeiling measures the machine's limit for single-stream
// decoding: generating a token reads every weight once, so memory bandwidth
// over the model's size bounds the tokens per second. It reads a buffer the
// size of the benchmark model (warm, as the mapped weights are) with
// SLM_BENCH_THREADS goroutines, as llama.cpp's threads split a matrix.
//
//	SLM_BENCH_THREADS=2 go test -run '^$' -bench MemoryCeiling -benchtime 20x ./internal/engine/
func BenchmarkMemoryCeiling(b *testing.B) {
	threads := envInt(b, benchThreadsEnv, runtime.NumCPU())
	fi, err := os.Stat(benchModel(b))
	if err != nil {
		b.Fatal(err)
	}
	size := fi.Size()
	words := make([]uint64, size/8)
	for i := range words {
		words[i] = uint64(i) // touch every page before measuring
	}
	per := len(words) / threads
	var sink uint64
	for b.Loop() {
		var wg sync.WaitGroup
		sums := make([]uint64, threads)
		for t := range threads {
			wg.Go(func() { sums[t] = sumWords(words[t*per : (t+1)*per]) })
		}
		wg.Wait()
		for _, s := range sums {
			sink += s
		}
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	bytes := float64(per*threads) * float64(unsafe.Sizeof(words[0]))
	b.ReportMetric(bytes/sec/1e9, "GB/s")
	b.ReportMetric(1/sec, "ceiling-tok/s")
	b.ReportMetric(float64(size)/(1<<20), "model-MiB")
	if sink == 42 {
		b.Log("") // keeps the sums from being optimised away
	}
}

// sumWords reads ws with four independent accumulators so that the loop
// waits on memory, not on one addition chain.
func sumWords(ws []uint64) uint64 {
	var s0, s1, s2, s3 uint64
	for len(ws) >= 4 {
		s0 += ws[0]
		s1 += ws[1]
		s2 += ws[2]
		s3 += ws[3]
		ws = ws[4:]
	}
	return s0 + s1 + s2 + s3
}

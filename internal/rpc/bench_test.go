package rpc

import (
	"context"
	"encoding/json"
	"runtime"
	"slices"
	"testing"
	"time"
)

type benchReq struct {
	Msg string `json:"msg"`
	N   int    `json:"n"`
}

// BenchmarkRoundTrip measures the latency of one small call at a time over
// loopback, reporting the median and 99th percentile.
func BenchmarkRoundTrip(b *testing.B) {
	ts := startServer(b, ServerConfig{}, "")
	c := dial(b, ts.addr, ClientConfig{})
	ctx := testCtx(b)
	req := benchReq{Msg: "ping", N: 1}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if _, err := c.Call(ctx, mEcho, req, nil); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkParallel64 measures calls per second with 64 concurrent callers
// sharing one connection.
func BenchmarkParallel64(b *testing.B) {
	ts := startServer(b, ServerConfig{}, "")
	c := dial(b, ts.addr, ClientConfig{})
	ctx := testCtx(b)
	req := benchReq{Msg: "ping", N: 1}
	b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Call(ctx, mEcho, req, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}

// BenchmarkStreamChunks measures streamed chunks per second in one call,
// each chunk a token-sized JSON object as the inference tier sends them.
func BenchmarkStreamChunks(b *testing.B) {
	ts := startServer(b, ServerConfig{}, "")
	type delta struct {
		Content string `json:"content"`
	}
	ts.rpc.Handle("bench::stream", func(_ context.Context, p json.RawMessage, send func(any) error) (any, error) {
		var n int
		_ = json.Unmarshal(p, &n)
		d := delta{Content: " token"}
		for range n {
			if err := send(d); err != nil {
				return nil, err
			}
		}
		return n, nil
	})
	// The buffer is as deep as the stream: this measures the frame path,
	// not how far a consumer that shares two busy cores may fall behind.
	c := dial(b, ts.addr, ClientConfig{ChunkBuffer: b.N + 1})
	got := 0
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	_, err := c.Call(testCtx(b), "bench::stream", b.N, func(json.RawMessage) error { got++; return nil })
	elapsed := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	if got != b.N {
		b.Fatalf("got %d chunks, want %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "chunks/s")
}

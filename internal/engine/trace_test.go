package engine

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// TestRequestSpans proves a traced request's phases become spans under its
// span: queue, prompt (with its prompt and cached tokens) and generate
// (with its completion tokens), one after the other. The same prompt twice
// on one slot finds all of it but the last token cached the second time.
func TestRequestSpans(t *testing.T) {
	e := openStories(t, Config{Parallel: 1})
	rec := tracetest.NewSpanRecorder()
	tracer := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")
	req := userMsg("Once upon a time", 8)

	for turn := range 2 {
		ctx, parent := tracer.Start(context.Background(), "call")
		res, err := e.GenerateDeltas(ctx, req, func(chat.Delta) error { return nil })
		parent.End()
		if err != nil {
			t.Fatal(err)
		}
		if turn == 1 && res.CachedTokens != res.PromptTokens-1 {
			t.Fatalf("second turn: %d of %d prompt tokens cached, want all but the last", res.CachedTokens, res.PromptTokens)
		}
		phases := map[string]sdktrace.ReadOnlySpan{}
		for _, s := range rec.Ended() {
			if s.Parent().SpanID() == parent.SpanContext().SpanID() {
				phases[s.Name()] = s
			}
		}
		q, p, g := phases["engine.queue"], phases["engine.prompt"], phases["engine.generate"]
		if len(phases) != 3 || q == nil || p == nil || g == nil {
			t.Fatalf("turn %d: spans %v under the call, want engine.queue, engine.prompt and engine.generate", turn, phases)
		}
		if q.EndTime().After(p.StartTime()) || p.EndTime().After(g.StartTime()) || q.StartTime().After(q.EndTime()) || g.StartTime().After(g.EndTime()) {
			t.Errorf("turn %d: phases out of order: queue %s–%s, prompt %s–%s, generate %s–%s", turn,
				q.StartTime(), q.EndTime(), p.StartTime(), p.EndTime(), g.StartTime(), g.EndTime())
		}
		want := map[sdktrace.ReadOnlySpan]map[string]int64{
			p: {"gen_ai.usage.input_tokens": int64(res.PromptTokens), "gen_ai.usage.cache_read.input_tokens": int64(res.CachedTokens)},
			g: {"gen_ai.usage.output_tokens": int64(res.CompletionTokens)},
		}
		for s, attrs := range want {
			got := map[string]int64{}
			for _, a := range s.Attributes() {
				got[string(a.Key)] = a.Value.AsInt64()
			}
			for k, v := range attrs {
				if got[k] != v {
					t.Errorf("turn %d: %s %s = %d, want %d", turn, s.Name(), k, got[k], v)
				}
			}
		}
	}
}

// TestUntracedRequestMakesNoSpans proves a request outside any recorded
// trace costs the engine no span.
func TestUntracedRequestMakesNoSpans(t *testing.T) {
	e := openStories(t, Config{Parallel: 1})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.NeverSample()))
	ctx, parent := tp.Tracer("test").Start(context.Background(), "call")
	defer parent.End()
	if _, err := e.GenerateDeltas(ctx, userMsg("Once", 4), nil); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Started()); n != 0 {
		t.Errorf("an unsampled request started %d spans", n)
	}
}

package engine

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// instrumentation names the tracer of the engine's spans.
const instrumentation = "github.com/slm-mesh/slm-mesh/internal/engine"

// The attributes of the engine's spans, after OpenTelemetry's conventions
// for generative AI.
const (
	attrInputTokens  = attribute.Key("gen_ai.usage.input_tokens")
	attrCachedTokens = attribute.Key("gen_ai.usage.cache_read.input_tokens")
	attrOutputTokens = attribute.Key("gen_ai.usage.output_tokens")
	attrFinish       = attribute.Key("gen_ai.response.finish_reasons")
)

// traceRequest records the phases of s, a request that ended at end with
// res or err, as spans under the span of ctx (the RPC call's): engine.queue
// from its arrival to its slot, engine.prompt while its prompt was processed
// (with the prompt tokens and those found in the slot's KV cache), and
// engine.generate from there to the end (with the completion tokens). A
// phase the request never reached has no span; the phase it failed in is
// an error. The loop only notes times (sequence.admittedAt, prefilled):
// the spans are made here, on the request's goroutine, and only when its
// trace is recorded, so tracing costs the loop nothing.
func (e *Engine) traceRequest(ctx context.Context, s *sequence, res chat.Result, err error, end time.Time) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return
	}
	tracer := parent.TracerProvider().Tracer(instrumentation)
	e.mu.Lock()
	admitted, cached := s.admittedAt, s.cachedPrompt()
	e.mu.Unlock()
	var prefilled time.Time
	if ns := s.prefilled.Load(); ns != 0 {
		prefilled = time.Unix(0, ns)
	}

	phase := func(name string, from, to time.Time, failed bool, attrs ...attribute.KeyValue) {
		_, span := tracer.Start(ctx, name, trace.WithTimestamp(from), trace.WithAttributes(attrs...))
		if failed && err != nil {
			span.SetAttributes(attribute.String("error.type", string(chat.Code(err))))
			span.SetStatus(codes.Error, err.Error())
		}
		span.End(trace.WithTimestamp(to))
	}
	if admitted.IsZero() {
		phase("engine.queue", s.queuedAt, end, true)
		return
	}
	phase("engine.queue", s.queuedAt, admitted, false)
	prompt := []attribute.KeyValue{attrInputTokens.Int(s.promptTokens()), attrCachedTokens.Int(cached)}
	if prefilled.IsZero() {
		phase("engine.prompt", admitted, end, true, prompt...)
		return
	}
	phase("engine.prompt", admitted, prefilled, false, prompt...)
	var gen []attribute.KeyValue
	if err == nil {
		gen = []attribute.KeyValue{attrOutputTokens.Int(res.CompletionTokens), attrFinish.StringSlice([]string{res.FinishReason})}
	}
	phase("engine.generate", prefilled, end, true, gen...)
}

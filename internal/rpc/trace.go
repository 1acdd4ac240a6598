package rpc

import (
	"context"
	"net"
	"strconv"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Each RPC hop of a traced request is a client span at the caller and a
// server span at the callee, joined by the W3C trace context the call frame
// carries (its traceparent and tracestate fields). A call is traced only
// when its context already belongs to a trace (a request the gateway
// traces): background calls (status, capacity, health) start none, and a
// peer that sends no traceparent gets no server span. The spans come from
// OpenTelemetry's global tracer provider, a no-op unless the service set
// one up (internal/telemetry), or from the TracerProvider of the client's
// or server's configuration; with the global no-op one the trace context
// still passes through, so a service with tracing off does not break the
// trace of the others.

// instrumentation names the tracer of the package's spans.
const instrumentation = "github.com/slm-mesh/slm-mesh/internal/rpc"

// tracerOf is the tracer of tp, or of the global tracer provider if nil.
func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(instrumentation)
}

// rpcSystem is the rpc.system.name of the spans.
const rpcSystem = "slm-mesh"

// w3c reads and writes the frame's trace context: the W3C format always,
// whatever global propagator the service configured.
var w3c propagation.TraceContext

// traceCarrier holds the trace context of one call frame.
type traceCarrier struct{ parent, state string }

var _ propagation.TextMapCarrier = (*traceCarrier)(nil)

func (c *traceCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.parent
	case "tracestate":
		return c.state
	}
	return ""
}

func (c *traceCarrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.parent = value
	case "tracestate":
		c.state = value
	}
}

func (c *traceCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

// startClientSpan starts the client span of a call to method on the server
// at addr when ctx belongs to a trace; otherwise it returns ctx and nil.
func startClientSpan(ctx context.Context, tracer trace.Tracer, method, addr string) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, nil
	}
	attrs := []attribute.KeyValue{semconv.RPCSystemNameKey.String(rpcSystem), semconv.RPCMethod(method)}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		attrs = append(attrs, semconv.ServerAddress(host))
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, semconv.ServerPort(p))
		}
	}
	return tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// injectTrace writes ctx's trace context into the call frame f.
func injectTrace(ctx context.Context, f *frameBuf) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	var tc traceCarrier
	w3c.Inject(ctx, &tc)
	if tc.parent != "" {
		f.str("traceparent", tc.parent)
	}
	if tc.state != "" {
		f.str("tracestate", tc.state)
	}
}

// startServerSpan starts the server span of call frame f, a child of the
// caller's span, when f carries a trace context; otherwise it returns ctx
// and nil.
func startServerSpan(ctx context.Context, tracer trace.Tracer, f *frame) (context.Context, trace.Span) {
	if f.TraceParent == "" {
		return ctx, nil
	}
	ctx = w3c.Extract(ctx, &traceCarrier{parent: f.TraceParent, state: f.TraceState})
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, nil // a malformed traceparent starts nothing
	}
	return tracer.Start(ctx, f.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(semconv.RPCSystemNameKey.String(rpcSystem), semconv.RPCMethod(f.Method)))
}

// endSpan ends span (nil: none) with the outcome of its call: an error
// sets the span's status and error.type, the error's code.
func endSpan(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.SetAttributes(semconv.ErrorTypeKey.String(string(chat.Code(err))))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// RequestLogger returns log with the fields that tie a line to the request
// ctx belongs to: request_id (WithRequestID) and, when the request is
// traced, trace_id. Every log line about a request goes through it, so
// that one id finds a request's lines in every service, and the trace id
// leads from them to its trace.
func RequestLogger(ctx context.Context, log hclog.Logger) hclog.Logger {
	var fields []any
	if id := RequestID(ctx); id != "" {
		fields = append(fields, "request_id", id)
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		fields = append(fields, "trace_id", sc.TraceID().String())
	}
	if len(fields) == 0 {
		return log
	}
	return log.With(fields...)
}

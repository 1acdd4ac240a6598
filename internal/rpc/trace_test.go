package rpc

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// mTrace answers with the trace context its handler's ctx carries.
const mTrace = "test::trace"

type seenTrace struct {
	TraceID, SpanID, TraceState string
	Valid                       bool
}

// tracedPair starts a server that serves mTrace and mFail with spans from
// its own tracer provider and dials it with a client that has another, as
// two processes would; the recorders hold the ended spans of each side.
func tracedPair(t *testing.T) (c *Conn, client, server *tracetest.SpanRecorder) {
	t.Helper()
	client, server = tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder()
	ts := startServer(t, ServerConfig{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(server))}, "")
	ts.rpc.Handle(mTrace, func(ctx context.Context, _ json.RawMessage, _ func(any) error) (any, error) {
		sc := trace.SpanContextFromContext(ctx)
		return seenTrace{TraceID: sc.TraceID().String(), SpanID: sc.SpanID().String(), TraceState: sc.TraceState().String(), Valid: sc.IsValid()}, nil
	})
	c = dial(t, ts.addr, ClientConfig{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(client))})
	return c, client, server
}

func callTrace(t *testing.T, ctx context.Context, c *Conn) seenTrace {
	t.Helper()
	res, err := c.Call(ctx, mTrace, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var seen seenTrace
	if err := json.Unmarshal(res, &seen); err != nil {
		t.Fatal(err)
	}
	return seen
}

// TestTraceCrossesCall proves the W3C trace context survives the call
// frame's round trip: the handler runs in a server span of the caller's
// trace, child of the call's client span, with the caller's tracestate.
func TestTraceCrossesCall(t *testing.T) {
	t.Parallel()
	c, client, server := tracedPair(t)

	// The request's span, as the gateway's would be: here a remote parent
	// with a tracestate, which every span of the trace inherits.
	state, err := trace.ParseTraceState("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
	if err != nil {
		t.Fatal(err)
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled, TraceState: state, Remote: true,
	})
	ctx := trace.ContextWithRemoteSpanContext(testCtx(t), parent)
	seen := callTrace(t, ctx, c)

	cs, ss := client.Ended(), server.Ended()
	if len(cs) != 1 || len(ss) != 1 {
		t.Fatalf("%d client and %d server spans, want one of each", len(cs), len(ss))
	}
	cspan, sspan := cs[0], ss[0]
	if cspan.SpanKind() != trace.SpanKindClient || sspan.SpanKind() != trace.SpanKindServer || cspan.Name() != mTrace || sspan.Name() != mTrace {
		t.Errorf("spans %s (%s) and %s (%s), want the method's client and server spans", cspan.Name(), cspan.SpanKind(), sspan.Name(), sspan.SpanKind())
	}
	if cspan.Parent().SpanID() != parent.SpanID() || cspan.SpanContext().TraceID() != parent.TraceID() {
		t.Errorf("client span %s in trace %s, parent %s: want a child of the request's span %s", cspan.SpanContext().SpanID(), cspan.SpanContext().TraceID(), cspan.Parent().SpanID(), parent.SpanID())
	}
	if sspan.SpanContext().TraceID() != parent.TraceID() || sspan.Parent().SpanID() != cspan.SpanContext().SpanID() || !sspan.Parent().IsRemote() {
		t.Errorf("server span in trace %s with parent %s, want trace %s and the client span %s as remote parent",
			sspan.SpanContext().TraceID(), sspan.Parent().SpanID(), parent.TraceID(), cspan.SpanContext().SpanID())
	}
	if !seen.Valid || seen.TraceID != parent.TraceID().String() || seen.SpanID != sspan.SpanContext().SpanID().String() {
		t.Errorf("the handler saw %+v, want the server span %s of trace %s", seen, sspan.SpanContext().SpanID(), parent.TraceID())
	}
	if seen.TraceState != state.String() {
		t.Errorf("tracestate %q arrived as %q", state, seen.TraceState)
	}
}

// TestUntracedCall proves a call outside any trace starts no span on
// either side and carries no trace context: background calls stay out of
// the traces, and the server sees what a peer that predates tracing sends.
func TestUntracedCall(t *testing.T) {
	t.Parallel()
	c, client, server := tracedPair(t)
	if seen := callTrace(t, testCtx(t), c); seen.Valid {
		t.Errorf("the handler of an untraced call saw trace %s", seen.TraceID)
	}
	if n, m := len(client.Ended()), len(server.Ended()); n+m != 0 {
		t.Errorf("an untraced call made %d client and %d server spans", n, m)
	}
}

// TestTracedCallFails proves a failed call ends both spans as errors with
// the error's code.
func TestTracedCallFails(t *testing.T) {
	t.Parallel()
	c, client, server := tracedPair(t)
	tp := sdktrace.NewTracerProvider()
	ctx, root := tp.Tracer("test").Start(testCtx(t), "request")
	_, err := c.Call(ctx, mFail, map[string]string{"code": string(chat.CodeOverloaded), "message": "busy"}, nil)
	root.End()
	wantCode(t, err, chat.CodeOverloaded)
	for _, s := range append(client.Ended(), server.Ended()...) {
		var code string
		for _, a := range s.Attributes() {
			if a.Key == "error.type" {
				code = a.Value.AsString()
			}
		}
		if s.Status().Code.String() != "Error" || code != string(chat.CodeOverloaded) {
			t.Errorf("%s span: status %v, error.type %q; want Error and %s", s.SpanKind(), s.Status(), code, chat.CodeOverloaded)
		}
	}
	if n, m := len(client.Ended()), len(server.Ended()); n != 1 || m != 1 {
		t.Errorf("%d client and %d server spans, want one of each", n, m)
	}
}

// TestMalformedTraceparent proves a call frame whose traceparent does not
// parse is served as an untraced call.
func TestMalformedTraceparent(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tracer := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")
	for _, tp := range []string{"00-zz-yy-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", strings.Repeat("0", 55)} {
		ctx, span := startServerSpan(context.Background(), tracer, &frame{Method: "m", TraceParent: tp})
		if span != nil || trace.SpanContextFromContext(ctx).IsValid() {
			t.Errorf("traceparent %q started a span", tp)
		}
	}
	if len(rec.Ended())+len(rec.Started()) != 0 {
		t.Errorf("malformed traceparents made spans")
	}
}

// TestRequestLogger proves a request's log lines carry its request id and,
// once it is traced, its trace id.
func TestRequestLogger(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, JSONFormat: true})
	ctx := WithRequestID(context.Background(), "req-1")
	RequestLogger(ctx, log).Info("untraced")
	ctx, span := sdktrace.NewTracerProvider().Tracer("test").Start(ctx, "request")
	defer span.End()
	RequestLogger(ctx, log).Info("traced")
	RequestLogger(context.Background(), log).Info("no request")

	var lines []map[string]any
	dec := json.NewDecoder(strings.NewReader(out.String()))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("%d log lines: %s", len(lines), out.String())
	}
	want := []struct{ rid, tid any }{{"req-1", nil}, {"req-1", span.SpanContext().TraceID().String()}, {nil, nil}}
	for i, w := range want {
		if lines[i]["request_id"] != w.rid || lines[i]["trace_id"] != w.tid {
			t.Errorf("line %d: request_id %v trace_id %v, want %v and %v", i, lines[i]["request_id"], lines[i]["trace_id"], w.rid, w.tid)
		}
	}
}

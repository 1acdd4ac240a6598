package gateway

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
)

// TestRequestSpan proves a chat request is one server span named after its
// route, with its status and request id, whose trace the RPC call carries
// to the caller; /health makes none.
func TestRequestSpan(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		seen trace.SpanContext
	)
	fake := &meshtest.Caller{Generate: func(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
		mu.Lock()
		seen = trace.SpanContextFromContext(ctx)
		mu.Unlock()
		return meshtest.Reply("tiny", "Hi")(ctx, req, send)
	}, Report: serving("tiny")}
	rec := tracetest.NewSpanRecorder()
	srv := serveGateway(t, Config{Caller: startFakeCaller(t, fake), TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))}, nil)

	resp := post(t, srv, `{"messages":[{"role":"user","content":"hi"}]}`)
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %d", resp.StatusCode)
	}
	health, err := http.Get(srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	health.Body.Close()

	meshtest.Eventually(t, "the request's span to end", func() bool { return len(rec.Ended()) > 0 })
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want the chat request's only", len(spans))
	}
	s := spans[0]
	attrs := map[string]string{}
	for _, a := range s.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	if s.Name() != "POST /v1/chat/completions" || s.SpanKind() != trace.SpanKindServer || s.Parent().IsValid() {
		t.Errorf("span %q (%s, parent %v), want the root server span POST /v1/chat/completions", s.Name(), s.SpanKind(), s.Parent().SpanID())
	}
	want := map[string]string{
		"http.request.method": "POST", "http.route": "/v1/chat/completions", "http.response.status_code": "200",
		"slm.request_id": resp.Header.Get(requestIDHeader),
	}
	for k, v := range want {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, attrs[k], v)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seen.TraceID() != s.SpanContext().TraceID() {
		t.Errorf("the caller saw trace %s, want the request's %s", seen.TraceID(), s.SpanContext().TraceID())
	}
}

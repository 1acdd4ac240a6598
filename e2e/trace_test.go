package e2e

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/otlptest"
)

// TestTrace sends one chat request, with a client's traceparent, through
// the real gateway, caller and inference, each exporting its spans by
// OTLP/HTTP to a real receiver (OTEL_EXPORTER_OTLP_ENDPOINT): the request
// is one trace, the client's, made of the gateway's server span, each RPC
// hop's client and server spans and the engine's phases, from three
// processes that name themselves after their binaries. The spans arrive by
// the time the services have exited: each flushes its last ones on
// SIGTERM.
func TestTrace(t *testing.T) {
	t.Parallel()
	rcv := otlptest.Start(t)
	m := startMesh(t, localmesh.Config{Parallel: 2, Env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.Endpoint()}})

	const (
		traceID   = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientID  = "00f067aa0ba902b7"
		requestID = "e2e-trace-1"
	)
	resp, body := m.request(t, http.MethodPost, "/v1/chat/completions",
		`{"messages":[{"role":"user","content":"`+story+`"}],"max_tokens":8,"temperature":0}`,
		http.Header{"Traceparent": {"00-" + traceID + "-" + clientID + "-01"}, "X-Request-Id": {requestID}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	var completion struct {
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &completion); err != nil {
		t.Fatal(err)
	}
	m.Stop()

	spans := rcv.Spans()
	byName := map[string]otlptest.Span{}
	for _, s := range spans {
		if s.TraceID != traceID {
			t.Errorf("%s span %q of trace %s: the request should be the only trace", s.Service, s.Name, s.TraceID)
			continue
		}
		key := s.Service + " " + s.Name
		if _, dup := byName[key]; dup {
			t.Errorf("two %s spans", key)
		}
		byName[key] = s
	}
	// Each span, the process that sends it, its kind, and its parent.
	want := []struct {
		service, name string
		kind          tracepb.Span_SpanKind
		parent        string // service and name of the parent span; "" for the client's
	}{
		{"gateway", "POST /v1/chat/completions", tracepb.Span_SPAN_KIND_SERVER, ""},
		{"gateway", "inference::get_response", tracepb.Span_SPAN_KIND_CLIENT, "gateway POST /v1/chat/completions"},
		{"caller", "inference::get_response", tracepb.Span_SPAN_KIND_SERVER, "gateway inference::get_response"},
		{"caller", "inference::run_inference", tracepb.Span_SPAN_KIND_CLIENT, "caller inference::get_response"},
		{"inference", "inference::run_inference", tracepb.Span_SPAN_KIND_SERVER, "caller inference::run_inference"},
		{"inference", "engine.queue", tracepb.Span_SPAN_KIND_INTERNAL, "inference inference::run_inference"},
		{"inference", "engine.prompt", tracepb.Span_SPAN_KIND_INTERNAL, "inference inference::run_inference"},
		{"inference", "engine.generate", tracepb.Span_SPAN_KIND_INTERNAL, "inference inference::run_inference"},
	}
	for _, w := range want {
		key := w.service + " " + w.name
		s, ok := byName[key]
		if !ok {
			t.Errorf("no %s span", key)
			continue
		}
		parent := clientID
		if w.parent != "" {
			parent = byName[w.parent].SpanID
		}
		if s.Kind != w.kind || s.ParentID != parent || s.Error {
			t.Errorf("%s: kind %s, parent %s, error %v; want %s, parent %s (%s), no error", key, s.Kind, s.ParentID, s.Error, w.kind, parent, w.parent)
		}
	}
	if len(byName) != len(want) {
		t.Errorf("%d spans in the trace, want %d: %v", len(byName), len(want), spans)
	}
	services := map[string]bool{}
	for _, s := range byName {
		services[s.Service] = true
	}
	if len(services) != 3 {
		t.Errorf("the spans come from %v, want three services", services)
	}
	attrs := []struct{ span, key, want string }{
		{"gateway POST /v1/chat/completions", "http.response.status_code", "200"},
		{"gateway POST /v1/chat/completions", "slm.request_id", requestID},
		{"inference engine.prompt", "gen_ai.usage.input_tokens", strconv.Itoa(completion.Usage.PromptTokens)},
		{"inference engine.generate", "gen_ai.usage.output_tokens", strconv.Itoa(completion.Usage.CompletionTokens)},
	}
	for _, a := range attrs {
		if got := byName[a.span].Attributes[a.key]; got != a.want {
			t.Errorf("%s: %s = %q, want %q", a.span, a.key, got, a.want)
		}
	}
	if _, ok := byName["inference engine.prompt"].Attributes["gen_ai.usage.cache_read.input_tokens"]; !ok {
		t.Error("the prompt span has no cached-token count")
	}
}

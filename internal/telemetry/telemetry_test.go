package telemetry

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/slm-mesh/slm-mesh/internal/otlptest"
)

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	binary := filepath.Base(os.Args[0])
	for _, tc := range []struct {
		name string
		env  map[string]string
		want Config
	}{
		{"no variable", nil, Config{ServiceName: binary}},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, Config{Export: true, ServiceName: binary}},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, Config{Export: true, ServiceName: binary}},
		{"service name", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SERVICE_NAME": "slm-gateway"}, Config{Export: true, ServiceName: "slm-gateway"}},
		{"other variables only", map[string]string{"OTEL_SERVICE_NAME": "slm-gateway", "OTEL_EXPORTER_OTLP_HEADERS": "a=b"}, Config{ServiceName: "slm-gateway"}},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, Config{ServiceName: binary}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := configFrom(func(k string) string { return tc.env[k] }); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestOffByDefault proves that without an endpoint Start creates no
// exporter and installs nothing: the global tracer provider stays the
// no-op one, whose spans record nothing.
func TestOffByDefault(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	before := otel.GetTracerProvider()
	tr, err := Start(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Stop()
	if tr.Enabled() || tr.provider != nil {
		t.Fatal("tracing is on without an OTLP endpoint")
	}
	if otel.GetTracerProvider() != before {
		t.Fatal("Start replaced the global tracer provider without an OTLP endpoint")
	}
	if _, span := otel.Tracer("test").Start(context.Background(), "x"); span.IsRecording() {
		t.Error("a span records with tracing off")
	}
}

// TestExports proves that with OTEL_EXPORTER_OTLP_ENDPOINT set, a span
// reaches an OTLP/HTTP receiver there under the service's name, by
// Shutdown at the latest.
func TestExports(t *testing.T) {
	rcv := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.Endpoint())
	t.Setenv("OTEL_SERVICE_NAME", "telemetry-test")
	tr, err := Start(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("tracing is off with an OTLP endpoint")
	}
	_, span := otel.Tracer("test").Start(context.Background(), "work", trace.WithSpanKind(trace.SpanKindServer))
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.Spans()
	if len(spans) != 1 {
		t.Fatalf("received %d spans, want 1: %+v", len(spans), spans)
	}
	s := spans[0]
	if s.Name != "work" || s.Service != "telemetry-test" || s.Kind != tracepb.Span_SPAN_KIND_SERVER || s.TraceID != span.SpanContext().TraceID().String() {
		t.Errorf("received %+v", s)
	}
}

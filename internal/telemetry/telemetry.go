// Package telemetry sets up OpenTelemetry tracing for a service of the mesh.
//
// Traces are exported over OTLP/HTTP when the standard variables name an
// endpoint (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT;
// the exporter reads the rest of OTEL_EXPORTER_OTLP_*, such as headers and
// timeouts, itself). Without one, tracing is off: Start installs nothing,
// OpenTelemetry's global tracer provider stays its no-op one and no exporter
// or goroutine exists. The spans themselves are made where the work is: the
// gateway's HTTP request (internal/gateway), each RPC hop (internal/rpc) and
// the engine's phases (internal/engine).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Config says whether a service exports traces, and under which name.
type Config struct {
	// Export turns tracing on: spans are recorded and sent by OTLP/HTTP to
	// the endpoint the OTEL_EXPORTER_OTLP_* variables name. DefaultConfig
	// sets it when one of the endpoint variables is set and
	// OTEL_SDK_DISABLED is not "true".
	Export bool
	// ServiceName is the service.name of the service's spans:
	// OTEL_SERVICE_NAME, or else the name of the running binary.
	ServiceName string
}

// DefaultConfig reads the configuration from the environment.
func DefaultConfig() Config {
	return configFrom(os.Getenv)
}

func configFrom(getenv func(string) string) Config {
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	disabled := strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true")
	name := getenv("OTEL_SERVICE_NAME")
	if name == "" {
		name = filepath.Base(os.Args[0])
	}
	return Config{Export: endpoint && !disabled, ServiceName: name}
}

// stopTimeout bounds the flush of the last spans when a service exits.
const stopTimeout = 5 * time.Second

// Tracing is a service's tracing, on or off. Its zero value is off.
type Tracing struct {
	provider *sdktrace.TracerProvider // nil: off
	log      hclog.Logger
}

// Start sets tracing up as cfg says and, when it is on, installs it as
// OpenTelemetry's global tracer provider, with the W3C trace context as the
// global propagator (which the gateway reads from incoming requests). With
// cfg.Export false it does nothing. Export failures are logged to log.
func Start(cfg Config, log hclog.Logger) (*Tracing, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	t := &Tracing{log: log.Named("telemetry")}
	if !cfg.Export {
		return t, nil
	}
	ctx := context.Background()
	// The exporter reads the endpoint, headers, timeout and compression
	// from OTEL_EXPORTER_OTLP_*; creating it does not connect.
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	// OTEL_RESOURCE_ATTRIBUTES may add to the resource; the service name
	// is the configuration's.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(), resource.WithHost(), resource.WithFromEnv(),
		resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	t.provider = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(t.provider)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		t.log.Warn("tracing failed", "error", err)
	}))
	t.log.Info("exporting traces by OTLP/HTTP", "service", cfg.ServiceName)
	return t, nil
}

// Enabled reports whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t != nil && t.provider != nil }

// Shutdown exports the spans not yet sent and stops the exporter, waiting
// until ctx ends at most.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// Stop is Shutdown within a few seconds, logging a failure: what a
// service's main defers, so that the spans of its last requests leave
// before it exits.
func (t *Tracing) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		t.log.Warn("could not export the last spans", "error", err)
	}
}

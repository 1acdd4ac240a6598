package gateway

import (
	"strconv"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// instrumentation names the tracer of the gateway's spans.
const instrumentation = "github.com/slm-mesh/slm-mesh/internal/gateway"

// trace makes the server span of a request to the API, named as
// OpenTelemetry's HTTP conventions name it ("POST /v1/chat/completions"):
// the root of the request's trace, or a child of the client's span when the
// client sent a traceparent that the service's propagator reads (the W3C
// one when tracing is on; none when it is off). The RPC calls the request
// makes carry its trace on to the caller and to inference. Only /v1/* is
// traced: /health and /metrics, polled all day, would bury the requests.
func (s *Server) trace(c *gin.Context) {
	r := c.Request
	route := c.FullPath()
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := s.tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(semconv.HTTPRequestMethodKey.String(r.Method), semconv.HTTPRoute(route),
			attribute.String("slm.request_id", requestIDOf(c))))
	defer span.End()
	c.Request = r.WithContext(ctx)
	c.Next()
	status := c.Writer.Status()
	span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	if status >= 500 {
		// As the conventions say for a server: a 4xx is the client's
		// doing, not a failure of the span.
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		span.SetStatus(codes.Error, "")
	}
}

// reqLog is the log of c's request: every line carries its request id and,
// when it is traced, its trace id (rpc.RequestLogger).
func (s *Server) reqLog(c *gin.Context) hclog.Logger {
	return rpc.RequestLogger(c.Request.Context(), s.log)
}

package mesh

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/prom"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Service is what the tiers behind the gateway (caller, inference) serve on
// their one port: RPC at rpc.PathRPC, GET /health and GET /metrics, with
// the Prometheus registry of those metrics and the count and time of every
// generation call (Generation). Register the tier's methods on RPC.
type Service struct {
	// RPC serves the tier's methods (RegisterCaller, RegisterInference).
	RPC *rpc.Server
	// Registry is what /metrics reports; the tier adds its own series.
	Registry *prometheus.Registry

	mux      *http.ServeMux
	log      hclog.Logger
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

var _ http.Handler = (*Service)(nil)

// NewService returns the Service of the tier name ("caller", "inference";
// its metrics are slm_<name>_requests_total by outcome and
// slm_<name>_request_duration_seconds), whose /health answers health.
func NewService(name string, cfg rpc.ServerConfig, log hclog.Logger, health func(*http.Request) Health) *Service {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	cfg.Logger = log
	s := &Service{RPC: rpc.NewServer(cfg), Registry: prom.NewRegistry(), mux: http.NewServeMux(), log: log}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "slm_" + name + "_requests_total", Help: "Generation calls by outcome (ok or an error code).",
	}, []string{"code"})
	s.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "slm_" + name + "_request_duration_seconds", Help: "Time from call to result.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
	s.Registry.MustRegister(s.requests, s.duration)
	s.mux.Handle(rpc.PathRPC, s.RPC)
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { health(r).Write(w) })
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
	return s
}

// ServeHTTP serves /rpc, /health and /metrics.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Shutdown stops taking calls and lets running ones finish until ctx ends
// (rpc.Server.Shutdown).
func (s *Service) Shutdown(ctx context.Context) error { return s.RPC.Shutdown(ctx) }

// Generation runs one generation call, f, and counts and times it by its
// outcome. A failure is logged here at debug level only, so that an error
// is logged once: the rpc.Server logs, with its detail, an error it does
// not send whole (one that is not a *chat.Error), and a *chat.Error
// travels whole to the gateway, which logs the internal ones.
func (s *Service) Generation(ctx context.Context, f func() (chat.Result, error)) (chat.Result, error) {
	start := time.Now()
	res, err := f()
	code := "ok"
	if err != nil {
		code = string(chat.Code(err))
		rpc.RequestLogger(ctx, s.log).Debug("generation failed", "code", code, "error", err)
	}
	s.requests.WithLabelValues(code).Inc()
	s.duration.Observe(time.Since(start).Seconds())
	return res, err
}

// Package inference is the inference service: it loads a model into the
// engine and serves mesh.InferenceService (inference::run_inference,
// inference::info) over the mesh's RPC, plus GET /health and GET /metrics,
// all on one port.
package inference

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/engine"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/prom"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Server is the inference service. It answers /health with 503 until the
// model is loaded (SetEngine), so that Consul and the callers send it no
// work before then.
type Server struct {
	log     hclog.Logger
	rpc     *rpc.Server
	mux     *http.ServeMux
	eng     atomic.Pointer[engine.Engine]
	started time.Time

	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	ttft     prometheus.Histogram
	duration prometheus.Histogram
}

// Config configures a Server.
type Config struct {
	// RPC configures the RPC endpoint (token, limits).
	RPC    rpc.ServerConfig
	Logger hclog.Logger
}

// New returns a Server without a model; call SetEngine when it is loaded.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	cfg.RPC.Logger = cfg.Logger.Named("rpc")
	s := &Server{
		log:     cfg.Logger,
		rpc:     rpc.NewServer(cfg.RPC),
		mux:     http.NewServeMux(),
		started: time.Now(),
		reg:     prom.NewRegistry(),
	}
	mesh.RegisterInference(s.rpc, s)
	s.registerMetrics()
	s.mux.Handle(rpc.PathRPC, s.rpc)
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return s
}

var (
	_ http.Handler          = (*Server)(nil)
	_ mesh.InferenceService = (*Server)(nil)
)

// ServeHTTP serves /rpc, /health and /metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetEngine makes the server ready with a loaded engine.
func (s *Server) SetEngine(e *engine.Engine) { s.eng.Store(e) }

// Shutdown stops taking calls, lets running generations finish until ctx
// ends, then closes the RPC connections.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if e := s.eng.Load(); e != nil {
		errs = append(errs, e.Drain(ctx))
	}
	errs = append(errs, s.rpc.Shutdown(ctx))
	return errors.Join(errs...)
}

// RunInference serves inference::run_inference (mesh.InferenceService):
// a chat.Request in, a chat.Delta per piece of text, a chat.Result at the
// end.
func (s *Server) RunInference(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
	start := time.Now()
	res, err := s.generate(ctx, req, send, func() { s.ttft.Observe(time.Since(start).Seconds()) })
	code := "ok"
	if err != nil {
		code = string(rpc.CodeOf(err))
	}
	s.requests.WithLabelValues(code).Inc()
	s.duration.Observe(time.Since(start).Seconds())
	if rpc.CodeOf(err) == rpc.CodeInternal {
		s.log.Error("generation failed", "request_id", rpc.RequestID(ctx), "error", err)
	}
	return res, err
}

func (s *Server) generate(ctx context.Context, req chat.Request, send func(chat.Delta) error, first func()) (chat.Result, error) {
	e := s.eng.Load()
	if e == nil {
		return chat.Result{}, rpc.Errorf(rpc.CodeUnavailable, "the model is still loading")
	}
	if req.Model != "" && req.Model != e.Name() {
		return chat.Result{}, &rpc.Error{Code: rpc.CodeNotFound, Param: "model",
			Message: fmt.Sprintf("model %q is not served here (this instance serves %q)", req.Model, e.Name())}
	}
	gotFirst := false
	res, err := e.GenerateDeltas(ctx, engine.Request{Request: req}, func(d chat.Delta) error {
		if !gotFirst && d.Content != "" {
			gotFirst = true
			first()
		}
		return send(d)
	})
	return res, codeFor(err)
}

// codeFor is the one place that gives engine errors their RPC codes.
func codeFor(err error) error {
	var ee *engine.Error
	var code rpc.Code
	switch {
	case err == nil:
		return nil
	case errors.Is(err, engine.ErrInvalid):
		code = rpc.CodeInvalidArgument
	case errors.Is(err, engine.ErrOverloaded):
		code = rpc.CodeOverloaded
	case errors.Is(err, engine.ErrClosed):
		code = rpc.CodeUnavailable
	default:
		// Context errors and *rpc.Error (a failed send) keep their own code.
		return err
	}
	if !errors.As(err, &ee) {
		return rpc.Errorf(code, "%s", err.Error())
	}
	return &rpc.Error{Code: code, Message: ee.Message, Param: ee.Param, Reason: ee.Reason, RetryAfter: ee.RetryAfter}
}

// Info serves inference::info (mesh.InferenceService): the same report as
// /health, so that the caller can tell the gateway which models the mesh
// serves.
func (s *Server) Info(context.Context) (mesh.InferenceInfo, error) {
	rep, ok := s.report()
	if !ok {
		return mesh.InferenceInfo{}, rpc.Errorf(rpc.CodeUnavailable, "the model is still loading")
	}
	return rep, nil
}

// report says whether the model is loaded and what the engine is doing.
func (s *Server) report() (mesh.InferenceInfo, bool) {
	rep := mesh.InferenceInfo{Status: "loading", UptimeSeconds: int64(time.Since(s.started).Seconds())}
	e := s.eng.Load()
	if e == nil {
		return rep, false
	}
	st := e.Stats()
	rep.Status, rep.Model, rep.Template = "ok", st.Model, st.Template
	if !st.Created.IsZero() {
		rep.Created = st.Created.Unix()
	}
	rep.Slots, rep.Busy, rep.Queued, rep.ContextPerSeq = st.Slots, st.Busy, st.Queued, st.ContextPerSeq
	return rep, true
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	rep, ok := s.report()
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(rep)
}

func (s *Server) registerMetrics() {
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "slm_inference_requests_total", Help: "Generations by outcome (ok or an RPC error code).",
	}, []string{"code"})
	s.ttft = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "slm_inference_time_to_first_token_seconds", Help: "Time from call to first text.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	})
	s.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "slm_inference_request_duration_seconds", Help: "Time from call to result.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
	stat := func(f func(engine.Stats) float64) func() float64 {
		return func() float64 {
			if e := s.eng.Load(); e != nil {
				return f(e.Stats())
			}
			return 0
		}
	}
	s.reg.MustRegister(
		s.requests, s.ttft, s.duration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slm_inference_slots", Help: "Sequences decoded together."},
			stat(func(st engine.Stats) float64 { return float64(st.Slots) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slm_inference_requests_running", Help: "Slots in use."},
			stat(func(st engine.Stats) float64 { return float64(st.Busy) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slm_inference_requests_waiting", Help: "Requests queued for a slot."},
			stat(func(st engine.Stats) float64 { return float64(st.Queued) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slm_inference_queue_wait_seconds", Help: "Expected wait for a slot of a request arriving now (past -max-queue-wait it is refused)."},
			stat(func(st engine.Stats) float64 { return st.QueueWait.Seconds() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "slm_inference_prompt_tokens_total", Help: "Prompt tokens of requests, cached ones included."},
			stat(func(st engine.Stats) float64 { return float64(st.PromptTokens) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "slm_inference_prompt_tokens_cached_total", Help: "Prompt tokens found in a slot's KV cache, not processed again; the cache-hit ratio is this over slm_inference_prompt_tokens_total."},
			stat(func(st engine.Stats) float64 { return float64(st.CachedTokens) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "slm_inference_generation_tokens_total", Help: "Tokens generated."},
			stat(func(st engine.Stats) float64 { return float64(st.CompletionTokens) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "slm_inference_decode_steps_total", Help: "llama.cpp decode steps."},
			stat(func(st engine.Stats) float64 { return float64(st.Steps) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slm_inference_model_loaded", Help: "1 once the model is loaded."},
			func() float64 {
				if s.eng.Load() != nil {
					return 1
				}
				return 0
			}),
	)
}

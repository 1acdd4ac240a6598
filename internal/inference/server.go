// Package inference is the inference service: it loads a model into the
// engine and serves mesh.InferenceService (inference::run_inference,
// inference::info) over the mesh's RPC, plus GET /health and GET /metrics,
// all on one port.
package inference

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/engine"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Server is the inference service. It answers /health with 503 until the
// model is loaded (SetEngine), so that Consul and the callers send it no
// work before then.
type Server struct {
	svc     *mesh.Service
	eng     atomic.Pointer[engine.Engine]
	started time.Time
	ttft    prometheus.Histogram
}

// Config configures a Server.
type Config struct {
	// RPC configures the RPC endpoint (token, limits).
	RPC    rpc.ServerConfig
	Logger hclog.Logger
}

// New returns a Server without a model; call SetEngine when it is loaded.
func New(cfg Config) *Server {
	s := &Server{started: time.Now()}
	s.svc = mesh.NewService("inference", cfg.RPC, cfg.Logger, s.health)
	mesh.RegisterInference(s.svc.RPC, s)
	mesh.RegisterInferenceEmbeddings(s.svc.RPC, s)
	s.registerMetrics()
	return s
}

var (
	_ http.Handler          = (*Server)(nil)
	_ mesh.InferenceService = (*Server)(nil)
	_ mesh.Embedder         = (*Server)(nil)
)

// ServeHTTP serves /rpc, /health and /metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.svc.ServeHTTP(w, r) }

// SetEngine makes the server ready with a loaded engine.
func (s *Server) SetEngine(e *engine.Engine) { s.eng.Store(e) }

// Shutdown stops taking calls, lets running generations finish until ctx
// ends, then closes the RPC connections.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if e := s.eng.Load(); e != nil {
		errs = append(errs, e.Drain(ctx))
	}
	errs = append(errs, s.svc.Shutdown(ctx))
	return errors.Join(errs...)
}

// RunInference serves inference::run_inference (mesh.InferenceService):
// a chat.Request in, a chat.Delta per piece of text, a chat.Result at the
// end.
func (s *Server) RunInference(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
	start := time.Now()
	return s.svc.Generation(ctx, func() (chat.Result, error) {
		return s.generate(ctx, req, send, func() { s.ttft.Observe(time.Since(start).Seconds()) })
	})
}

func (s *Server) generate(ctx context.Context, req chat.Request, send func(chat.Delta) error, first func()) (chat.Result, error) {
	e, err := s.engine(req.Model)
	if err != nil {
		return chat.Result{}, err
	}
	if e.Embedding() {
		return chat.Result{}, chat.Invalidf("model", "model %s is an embedding model and does not support chat completions; use /v1/embeddings", e.Name())
	}
	gotFirst := false
	res, err := e.GenerateDeltas(ctx, engine.Request{Request: req}, func(d chat.Delta) error {
		if !gotFirst && (d.Content != "" || len(d.ToolCalls) > 0) {
			gotFirst = true
			first()
		}
		return send(d)
	})
	// The engine's refusals are *chat.Error already, with their codes.
	return res, err
}

// Embed serves inference::run_embeddings (mesh.Embedder).
func (s *Server) Embed(ctx context.Context, req chat.EmbedRequest) (chat.EmbedResult, error) {
	var res chat.EmbedResult
	_, err := s.svc.Generation(ctx, func() (chat.Result, error) {
		e, err := s.engine(req.Model)
		if err == nil {
			res, err = e.Embed(ctx, req)
		}
		return chat.Result{}, err
	})
	return res, err
}

// engine is the loaded engine, if it serves model (empty: any).
func (s *Server) engine(model string) (*engine.Engine, error) {
	e := s.eng.Load()
	if e == nil {
		return nil, chat.Errorf(chat.CodeUnavailable, "the model is still loading")
	}
	if model != "" && model != e.Name() {
		return nil, &chat.Error{Code: chat.CodeNotFound, Param: "model",
			Message: fmt.Sprintf("model %q is not served here (this instance serves %q)", model, e.Name())}
	}
	return e, nil
}

// Info serves inference::info (mesh.InferenceService): the same report as
// /health, so that the caller can tell the gateway which models the mesh
// serves.
func (s *Server) Info(context.Context) (mesh.InferenceInfo, error) {
	rep, ok := s.report()
	if !ok {
		return mesh.InferenceInfo{}, chat.Errorf(chat.CodeUnavailable, "the model is still loading")
	}
	return rep, nil
}

// report says whether the model is loaded and what the engine is doing.
func (s *Server) report() (mesh.InferenceInfo, bool) {
	rep := mesh.InferenceInfo{UptimeSeconds: int64(time.Since(s.started).Seconds())}
	e := s.eng.Load()
	if e == nil {
		return rep, false
	}
	st := e.Stats()
	rep.Model, rep.Template = st.Model, st.Template
	if !st.Created.IsZero() {
		rep.Created = st.Created.Unix()
	}
	rep.Slots, rep.Busy, rep.Queued, rep.ContextPerSeq = st.Slots, st.Busy, st.Queued, st.ContextPerSeq
	return rep, true
}

// health is the instance's /health: its model and load, unavailable
// until the model is loaded.
func (s *Server) health(*http.Request) mesh.Health {
	rep, ok := s.report()
	h := mesh.Health{Status: mesh.HealthOK, InferenceInfo: &rep}
	if ok {
		h.Models = []string{rep.Model}
	} else {
		h.Fail(mesh.FailingModel, "the model is still loading")
	}
	return h
}

func (s *Server) registerMetrics() {
	s.ttft = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "slm_inference_time_to_first_token_seconds", Help: "Time from call to first text.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	})
	stat := func(f func(engine.Stats) float64) func() float64 {
		return func() float64 {
			if e := s.eng.Load(); e != nil {
				return f(e.Stats())
			}
			return 0
		}
	}
	s.svc.Registry.MustRegister(
		s.ttft,
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

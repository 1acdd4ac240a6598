// Package caller is the policy tier between the gateway and the inference
// instances. It serves inference::get_response: it checks and normalises a
// chat request, applies the limits of this deployment, picks an inference
// instance through the discovery pool (which retries once on another
// instance when the first fails before any text), and streams the text back.
// It holds no model; queueing policy and future routing live here.
package caller

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/prom"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Config configures a Server. Zero limits take the defaults given.
type Config struct {
	// DefaultMaxTokens applies when a request sets no max_tokens; default 256.
	DefaultMaxTokens int
	// MaxTokensLimit caps max_tokens; a request above it is refused
	// (invalid_argument) rather than silently cut. Default 2048.
	MaxTokensLimit int
	// Inference is the pool of inference instances.
	Inference *rpc.Pool
	// RPC configures this service's own RPC endpoint.
	RPC    rpc.ServerConfig
	Logger hclog.Logger
}

// Server is the caller service.
type Server struct {
	cfg Config
	log hclog.Logger
	rpc *rpc.Server
	mux *http.ServeMux

	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

var _ http.Handler = (*Server)(nil)

// New returns a Server that forwards to cfg.Inference.
func New(cfg Config) *Server {
	if cfg.DefaultMaxTokens <= 0 {
		cfg.DefaultMaxTokens = 256
	}
	if cfg.MaxTokensLimit <= 0 {
		cfg.MaxTokensLimit = 2048
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	cfg.RPC.Logger = cfg.Logger.Named("rpc")
	s := &Server{cfg: cfg, log: cfg.Logger, rpc: rpc.NewServer(cfg.RPC), mux: http.NewServeMux(), reg: prom.NewRegistry()}
	s.rpc.Handle(rpc.MethodGetResponse, s.getResponse)
	s.rpc.Handle(rpc.MethodStatus, s.status)
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "slm_caller_requests_total", Help: "get_response calls by outcome (ok or an RPC error code).",
	}, []string{"code"})
	s.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "slm_caller_request_duration_seconds", Help: "Time from call to result.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
	s.reg.MustRegister(s.requests, s.duration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slm_caller_inference_instances", Help: "Connected inference instances."},
			func() float64 { return float64(cfg.Inference.Healthy()) }))
	s.mux.Handle(rpc.PathRPC, s.rpc)
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return s
}

// ServeHTTP serves /rpc, /health and /metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Shutdown stops taking calls and lets running ones finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.rpc.Shutdown(ctx) }

// getResponse serves inference::get_response.
func (s *Server) getResponse(ctx context.Context, payload json.RawMessage, send func(any) error) (any, error) {
	start := time.Now()
	res, err := s.forward(ctx, payload, send)
	code := "ok"
	if err != nil {
		code = string(rpc.CodeOf(err))
		if rpc.CodeOf(err) == rpc.CodeInternal {
			s.log.Error("get_response failed", "request_id", rpc.RequestID(ctx), "error", err)
		} else {
			s.log.Debug("get_response refused", "request_id", rpc.RequestID(ctx), "code", code, "error", err)
		}
	}
	s.requests.WithLabelValues(code).Inc()
	s.duration.Observe(time.Since(start).Seconds())
	return res, err
}

func (s *Server) forward(ctx context.Context, payload json.RawMessage, send func(any) error) (json.RawMessage, error) {
	var req chat.Request
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, rpc.Errorf(rpc.CodeInvalidArgument, "decode request: %v", err)
	}
	if err := s.normalise(&req); err != nil {
		return nil, err
	}
	return s.cfg.Inference.Call(ctx, rpc.MethodRunInference, req, func(chunk json.RawMessage) error {
		// Chunks are chat.Delta already: relay them without decoding.
		return send(chunk)
	})
}

// normalise checks what the gateway forwarded and applies this tier's
// limits. The gateway validates the OpenAI wire format; this is the policy
// any client of the caller gets, whichever edge it came through.
func (s *Server) normalise(req *chat.Request) error {
	if len(req.Messages) == 0 {
		return rpc.Errorf(rpc.CodeInvalidArgument, "messages must not be empty")
	}
	for i, m := range req.Messages {
		if !slices.Contains([]string{chat.RoleSystem, chat.RoleUser, chat.RoleAssistant}, m.Role) {
			return rpc.Errorf(rpc.CodeInvalidArgument, "messages[%d].role %q is not one of system, user, assistant", i, m.Role)
		}
	}
	switch {
	case req.MaxTokens < 0:
		return rpc.Errorf(rpc.CodeInvalidArgument, "max_tokens must be positive")
	case req.MaxTokens == 0:
		req.MaxTokens = s.cfg.DefaultMaxTokens
	case req.MaxTokens > s.cfg.MaxTokensLimit:
		return rpc.Errorf(rpc.CodeInvalidArgument, "max_tokens %d is above this deployment's limit of %d", req.MaxTokens, s.cfg.MaxTokensLimit)
	}
	if len(req.Stop) > chat.MaxStop {
		return rpc.Errorf(rpc.CodeInvalidArgument, "at most %d stop strings", chat.MaxStop)
	}
	return nil
}

// Status is the result of caller::status: what the gateway's /health and
// /v1/models report.
type Status struct {
	// Inference lists the connected inference instances and their models.
	Inference []InstanceStatus `json:"inference"`
}

// InstanceStatus is one inference instance as the caller sees it: its
// model, or why it cannot serve (an instance the pool is reconnecting to is
// listed "not connected").
type InstanceStatus struct {
	Addr  string `json:"addr"`
	Model string `json:"model,omitempty"`
	Error string `json:"error,omitempty"`
}

// Models returns the distinct models of the instances that answered.
func (st Status) Models() []string {
	var out []string
	for _, in := range st.Inference {
		if in.Error == "" && in.Model != "" && !slices.Contains(out, in.Model) {
			out = append(out, in.Model)
		}
	}
	return out
}

// status serves caller::status by asking every connected inference
// instance for its info.
func (s *Server) status(ctx context.Context, _ json.RawMessage, _ func(any) error) (any, error) {
	return s.inferenceStatus(ctx), nil
}

func (s *Server) inferenceStatus(ctx context.Context) Status {
	var st Status
	answered := map[string]bool{}
	for _, r := range s.cfg.Inference.Broadcast(ctx, rpc.MethodInfo, nil) {
		answered[r.Addr] = true
		in := InstanceStatus{Addr: r.Addr}
		var info struct {
			Model string `json:"model"`
		}
		if r.Err != nil {
			in.Error = r.Err.Error()
		} else if err := json.Unmarshal(r.Result, &info); err != nil {
			in.Error = err.Error()
		} else {
			in.Model = info.Model
		}
		st.Inference = append(st.Inference, in)
	}
	// Broadcast reaches the connected instances only; the others are
	// listed too, so that /health names an instance that is down rather
	// than leaving it out.
	for _, in := range s.cfg.Inference.Instances() {
		if !in.Connected && !answered[in.Addr] {
			st.Inference = append(st.Inference, InstanceStatus{Addr: in.Addr, Error: "not connected"})
		}
	}
	return st
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	st := s.inferenceStatus(ctx)
	code := http.StatusOK
	body := map[string]any{"status": "ok", "inference": st.Inference}
	if len(st.Models()) == 0 {
		code = http.StatusServiceUnavailable
		body["status"] = "no healthy inference instance"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

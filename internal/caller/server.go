// Package caller is the policy tier between the gateway and the inference
// instances. It serves mesh.CallerService: it checks a chat request
// (chat.Request.Validate), applies the limits of this deployment, picks an
// inference instance through the discovery pool (which retries on another
// instance when the first fails before any text: the mesh's one layer of
// retries), and streams the text back. It holds no model; routing policy
// lives here: by default the turns of a conversation go to the instance
// that holds their prefix in its KV cache (Config.Routing).
package caller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/prom"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Config configures a Server. Zero limits take the defaults given.
type Config struct {
	// MaxTokensLimit caps max_tokens; a request above it is refused
	// (invalid_argument, param max_tokens) rather than silently cut.
	// Default 2048. A request without max_tokens is left without: the
	// inference engine owns that default, since only it knows how much
	// room the prompt leaves in the context.
	MaxTokensLimit int
	// Inference is the pool of inference instances. Give it
	// PoolConfig.Retries 1: the caller is the tier that retries.
	Inference *rpc.Pool
	// Routing picks an inference instance for each request: RoutingPrefix
	// (the default) or RoutingLeastBusy.
	Routing string
	// RPC configures this service's own RPC endpoint.
	RPC    rpc.ServerConfig
	Logger hclog.Logger
}

// Routing policies (Config.Routing, the caller's -routing flag).
const (
	// RoutingPrefix sends the turns of one conversation to the same
	// inference instance, which holds their prefix in its KV cache (see
	// PrefixKey), while it has a free slot (Slots), else within a load
	// bound (rpc.WithAffinity).
	RoutingPrefix = "prefix"
	// RoutingLeastBusy sends each request to the instance with the fewest
	// requests in flight.
	RoutingLeastBusy = "least-busy"
)

// CheckRouting refuses an unknown routing policy.
func CheckRouting(r string) error {
	if r != RoutingPrefix && r != RoutingLeastBusy {
		return fmt.Errorf("routing %q: want %s or %s", r, RoutingPrefix, RoutingLeastBusy)
	}
	return nil
}

// InferencePool is the configuration of the caller's pool over inference
// instances: the one tier that retries (a call refused by one instance
// before any text tries one other), and each instance's slots as its
// capacity for prefix routing.
func InferencePool(client rpc.ClientConfig, log hclog.Logger) rpc.PoolConfig {
	return rpc.PoolConfig{Client: client, Logger: log, Retries: 1, Capacity: Slots}
}

// Slots asks the inference instance at the other end of c how many
// requests it decodes at once: its capacity for the pool's prefix routing
// (rpc.PoolConfig.Capacity).
func Slots(ctx context.Context, c *rpc.Conn) (int, error) {
	info, err := mesh.NewInferenceClient(c).Info(ctx)
	return info.Slots, err
}

// PrefixKey is the affinity key of a request under prefix routing: a hash
// of its messages up to and including the first user message (and of the
// model it names). A chat client re-sends the whole conversation every
// turn, so every turn of a conversation starts with the same system prompt
// and first user message and gets the same key, while two conversations
// that share only a system prompt get different keys and spread over the
// instances (each instance then caches that system prompt once, a small
// cost). Hashing more of the prompt would move a conversation when it
// grows; hashing only the system prompt would send every conversation of
// an application to one instance. Empty for a request without messages.
func PrefixKey(req chat.Request) string {
	h := sha256.New()
	h.Write([]byte(req.Model))
	n := 0
	for _, m := range req.Messages {
		// Lengths first, so that no two different message lists write
		// the same bytes.
		fmt.Fprintf(h, "\x00%d:%s%d:", len(m.Role), m.Role, len(m.Content))
		h.Write([]byte(m.Content))
		n++
		if m.Role == chat.RoleUser {
			break
		}
	}
	if n == 0 {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Server is the caller service.
type Server struct {
	cfg       Config
	log       hclog.Logger
	rpc       *rpc.Server
	mux       *http.ServeMux
	inference *mesh.InferenceClient

	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

var (
	_ http.Handler       = (*Server)(nil)
	_ mesh.CallerService = (*Server)(nil)
)

// New returns a Server that forwards to cfg.Inference.
func New(cfg Config) *Server {
	if cfg.MaxTokensLimit <= 0 {
		cfg.MaxTokensLimit = 2048
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Routing == "" {
		cfg.Routing = RoutingPrefix
	}
	cfg.RPC.Logger = cfg.Logger.Named("rpc")
	s := &Server{
		cfg: cfg, log: cfg.Logger, rpc: rpc.NewServer(cfg.RPC), mux: http.NewServeMux(),
		inference: mesh.NewInferenceClient(cfg.Inference), reg: prom.NewRegistry(),
	}
	mesh.RegisterCaller(s.rpc, s)
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "slm_caller_requests_total", Help: "get_response calls by outcome (ok or an RPC error code).",
	}, []string{"code"})
	s.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "slm_caller_request_duration_seconds", Help: "Time from call to result.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
	s.reg.MustRegister(s.requests, s.duration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slm_caller_inference_instances", Help: "Connected inference instances."},
			func() float64 { return float64(cfg.Inference.Healthy()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "slm_caller_prefix_routed_total", Help: "Requests routed by prefix affinity (-routing prefix)."},
			func() float64 { n, _ := cfg.Inference.AffinityStats(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "slm_caller_prefix_spilled_total", Help: "Of those, requests the load bound sent past their prefix's instance."},
			func() float64 { _, n := cfg.Inference.AffinityStats(); return float64(n) }))
	s.mux.Handle(rpc.PathRPC, s.rpc)
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return s
}

// ServeHTTP serves /rpc, /health and /metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Shutdown stops taking calls and lets running ones finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.rpc.Shutdown(ctx) }

// GetResponse serves inference::get_response (mesh.CallerService).
func (s *Server) GetResponse(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
	start := time.Now()
	res, err := s.forward(ctx, req, send)
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

func (s *Server) forward(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
	if err := s.check(&req); err != nil {
		return chat.Result{}, err
	}
	if s.cfg.Routing == RoutingPrefix {
		ctx = rpc.WithAffinity(ctx, PrefixKey(req))
	}
	return s.inference.RunInference(ctx, req, send)
}

// check applies the rules every tier shares (chat.Request.Validate: the
// gateway is not the only possible client) and this deployment's limit.
func (s *Server) check(req *chat.Request) error {
	if err := req.Validate(); err != nil {
		return mesh.InvalidArgument(err)
	}
	if req.MaxTokens > s.cfg.MaxTokensLimit {
		return &rpc.Error{Code: rpc.CodeInvalidArgument, Param: "max_tokens", Message: fmt.Sprintf(
			"Invalid 'max_tokens': %d is above this deployment's limit of %d.", req.MaxTokens, s.cfg.MaxTokensLimit)}
	}
	return nil
}

// Status serves caller::status (mesh.CallerStatus) by asking every
// connected inference instance for its info; it lists the instances it is
// not connected to as well.
func (s *Server) Status(ctx context.Context) (mesh.CallerStatus, error) {
	return mesh.CallerStatus{Inference: s.inference.Infos(ctx)}, nil
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	st, _ := s.Status(ctx)
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

// Package caller is the policy tier between the gateway and the inference
// instances. It serves mesh.CallerService: it checks a chat request
// (chat.Request.Validate), applies the limits of this deployment, picks an
// inference instance through the discovery pool (which retries on another
// instance when the first fails before any text: the mesh's one layer of
// retries), and streams the text back. It holds no model; routing policy
// lives here: a request goes to an instance serving the model it names
// (or the default, Config.DefaultModel), and among those, by default, the
// turns of a conversation go to the instance that holds their prefix in
// its KV cache (Config.Routing).
package caller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Config configures a Server. A field left zero takes its value in
// DefaultConfig.
type Config struct {
	// MaxTokensLimit caps max_tokens; a request above it is refused
	// (invalid_argument, the field named as the client named it) rather
	// than silently cut.
	// Default 2048. A request without max_tokens is left without: the
	// inference engine owns that default, since only it knows how much
	// room the prompt leaves in the context.
	MaxTokensLimit int
	// Inference finds the inference instances. The caller keeps a pool of
	// connections to them (rpc.Pool), the mesh's one tier that retries: a
	// call refused by one instance before any text tries one other.
	Inference discovery.Resolver
	// Client configures the connections to inference instances.
	Client rpc.ClientConfig
	// Routing picks an inference instance for each request among those
	// serving its model: RoutingPrefix (the default) or RoutingLeastBusy.
	Routing string
	// DefaultModel is the model a request that names none goes to. Empty:
	// the only model the inference instances serve; with several, such a
	// request is refused (invalid_argument, param model).
	DefaultModel string
	// RPC configures this service's own RPC endpoint.
	RPC    rpc.ServerConfig
	Logger hclog.Logger
}

// DefaultConfig is a caller's configuration but for its discovery and
// RPC: the flags start from it, and New fills a field left zero from
// it.
func DefaultConfig() Config {
	return Config{MaxTokensLimit: 2048, Routing: RoutingPrefix}
}

// Validate refuses a configuration a Server cannot run with: no way to
// find inference instances, or an unknown routing policy (empty is the
// default's).
func (c Config) Validate() error {
	if c.Inference == nil {
		return errors.New("caller: no resolver for inference instances")
	}
	if r := c.Routing; r != "" && r != RoutingPrefix && r != RoutingLeastBusy {
		return fmt.Errorf("routing %q: want %s or %s", r, RoutingPrefix, RoutingLeastBusy)
	}
	return nil
}

// Server is the caller service.
type Server struct {
	cfg       Config
	svc       *mesh.Service
	pool      *rpc.Pool // over the inference instances
	prefix    *prefixPicker
	inference *mesh.InferenceClient
	known     models
}

var (
	_ http.Handler       = (*Server)(nil)
	_ mesh.CallerService = (*Server)(nil)
)

// New returns a Server that forwards to the instances cfg.Inference finds,
// or the error of cfg.Validate.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.MaxTokensLimit <= 0 {
		cfg.MaxTokensLimit = d.MaxTokensLimit
	}
	cfg.Routing = cmp.Or(cfg.Routing, d.Routing)
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	s := &Server{cfg: cfg, prefix: &prefixPicker{}}
	// The default model is known before any instance serves it: a
	// request for it waits or is unavailable, never not_found.
	s.known.add(cfg.DefaultModel)
	within := rpc.Picker(rpc.LeastBusy{})
	if cfg.Routing == RoutingPrefix {
		within = s.prefix
	}
	pool := rpc.PoolConfig{Client: cfg.Client, Logger: cfg.Logger.Named("pool"), Retries: 1, Describe: Describe, Described: described, Picker: modelPicker{within}}
	s.pool = rpc.NewPool(cfg.Inference, discovery.ServiceInference, pool)
	s.inference = mesh.NewInferenceClient(s.pool)
	s.svc = mesh.NewService("caller", cfg.RPC, cfg.Logger, s.health)
	mesh.RegisterCaller(s.svc.RPC, s)
	mesh.RegisterCallerEmbeddings(s.svc.RPC, s)
	s.svc.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slm_caller_inference_instances", Help: "Connected inference instances."},
			func() float64 { return float64(s.pool.Healthy()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "slm_caller_prefix_routed_total", Help: "Requests routed by prefix affinity (-routing prefix)."},
			func() float64 { return float64(s.prefix.routed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "slm_caller_prefix_spilled_total", Help: "Of those, requests the load bound sent past their prefix's instance."},
			func() float64 { return float64(s.prefix.spilled.Load()) }))
	return s, nil
}

// ServeHTTP serves /rpc, /health and /metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.svc.ServeHTTP(w, r) }

// Shutdown stops taking calls and lets running ones finish until ctx ends,
// then closes the connections to inference instances.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.svc.Shutdown(ctx)
	s.pool.Close()
	return err
}

// GetResponse serves inference::get_response (mesh.CallerService).
func (s *Server) GetResponse(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
	return s.svc.Generation(ctx, func() (chat.Result, error) { return s.forward(ctx, req, send) })
}

func (s *Server) forward(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
	if err := s.check(&req); err != nil {
		return chat.Result{}, err
	}
	model, err := s.model(req)
	if err != nil {
		return chat.Result{}, err
	}
	req.Model = model
	if model != "" {
		ctx = withModel(ctx, model)
	}
	if s.cfg.Routing == RoutingPrefix {
		ctx = withPrefixKey(ctx, PrefixKey(req))
	}
	res, err := s.inference.RunInference(ctx, req, send)
	if model != "" && chat.Code(err) == chat.CodeUnavailable && !s.ready(model) {
		err = unavailable(model, err)
	}
	return res, err
}

// check applies the rules every tier shares (chat.Request.Validate: the
// gateway is not the only possible client) and this deployment's limit.
func (s *Server) check(req *chat.Request) error {
	if err := req.Validate(); err != nil {
		return err
	}
	if req.MaxTokens > s.cfg.MaxTokensLimit {
		return chat.Invalidf(req.MaxTokensName(), "Invalid '%s': %d is above this deployment's limit of %d.",
			req.MaxTokensName(), req.MaxTokens, s.cfg.MaxTokensLimit)
	}
	return nil
}

// Status serves caller::status (mesh.CallerStatus) by asking every
// connected inference instance for its info; it lists the instances it is
// not connected to as well, the models it routes (those with no instance
// ready included) and its default model.
func (s *Server) Status(ctx context.Context) (mesh.CallerStatus, error) {
	st := mesh.CallerStatus{Inference: s.inference.Infos(ctx), Default: s.cfg.DefaultModel}
	// A model an instance has just told is known, though the pool may not
	// have its description yet.
	s.known.add(st.Models()...)
	st.Known, _ = s.known.update(s.pool.Instances())
	if d := st.Default; d == "" && len(st.Known) == 1 {
		st.Default = st.Known[0]
	}
	return st, nil
}

// health is the caller's /health: ok while some inference instance serves
// a model.
func (s *Server) health(r *http.Request) mesh.Health {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	st, _ := s.Status(ctx)
	return mesh.MeshHealth(st)
}

// Package gateway is the public edge of slm-mesh: the OpenAI-compatible
// HTTP API (gin). It holds no model; every chat request becomes a
// GetResponse call (mesh.CallerClient) to a caller instance found through
// discovery.
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/openai"
	"github.com/slm-mesh/slm-mesh/internal/prom"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Config configures a Server. A field left zero takes its value in
// DefaultConfig.
type Config struct {
	// Caller is the pool of caller instances. Leave its PoolConfig.Retries
	// at 0: the callers retry on another inference instance, and retries
	// here too would multiply the attempts an overloaded mesh makes.
	Caller *rpc.Pool
	// APIKeys, when not empty, are the keys accepted in
	// "Authorization: Bearer <key>" on /v1/*. /health and /metrics stay open.
	APIKeys []string
	// CORSOrigins are the origins allowed to call the API from a browser;
	// empty: CORS off. "*" allows any origin.
	CORSOrigins []string
	// Limits bound a request: body 1 MiB, 256 messages and 200,000
	// characters by default.
	Limits openai.Limits
	// RequestTimeout bounds one request, generation included; default 5m.
	RequestTimeout time.Duration
	// WriteTimeout bounds each write to a client: every event of a stream,
	// and a response written after a long generation, gets this long from
	// the moment it is written. A client that stops reading is cut off
	// after it, and its generation cancelled; one that reads slowly is not.
	// Give it the http.Server's WriteTimeout, which it overrides: that one
	// counts from the request and would cut long responses short. Zero: no
	// deadline of its own.
	WriteTimeout time.Duration
	// BodyTimeout bounds each wait for the next bytes of a request body,
	// so that a client that declares a body and never sends it (or stops
	// halfway) is answered 408 and cut off after it, not after the
	// server's whole-request ReadTimeout; default 10s. A client that sends
	// slowly but steadily is not cut off by it.
	BodyTimeout time.Duration
	// ReadTimeout is the http.Server's ReadTimeout, to give it here too:
	// the body's deadlines replace the server's on the connection, so the
	// gateway applies it to the body itself. Zero: no bound of its own.
	ReadTimeout time.Duration
	// RateLimit, when positive, limits each client (API key, or address
	// without keys) to this many chat requests per second on average, with
	// bursts of RateBurst; above it: 429 with Retry-After.
	RateLimit float64
	RateBurst int
	Logger    hclog.Logger
	// TracerProvider makes the spans of the requests to /v1/*; default:
	// OpenTelemetry's global tracer provider (internal/telemetry).
	TracerProvider trace.TracerProvider
}

// Server is the gateway. It is an http.Handler.
type Server struct {
	cfg    Config
	log    hclog.Logger
	router *gin.Engine
	m      *metrics
	caller *mesh.CallerClient
	tracer trace.Tracer

	// The caller's status, remembered for statusTTL; statusGroup makes
	// one refresh at a time, shared by whoever asks meanwhile.
	statusGroup   singleflight.Group
	statusMu      sync.Mutex
	status        mesh.CallerStatus
	statusAt      time.Time
	statusTTL     time.Duration
	statusTimeout time.Duration

	keys       [][]byte
	corsOrigin map[string]bool
	limiter    *rateLimiter // nil: no rate limit
}

var _ http.Handler = (*Server)(nil)

// DefaultConfig is a gateway's configuration but for its caller pool: the
// flags start from it, and New fills a field left zero from it. (The
// write and read timeouts are the http.Server's, whose flags are
// cli.Timeouts'.)
func DefaultConfig() Config {
	return Config{
		Limits:         openai.Limits{MaxBodyBytes: 1 << 20, MaxMessages: 256, MaxChars: 200_000},
		RequestTimeout: 5 * time.Minute,
		BodyTimeout:    10 * time.Second,
		RateBurst:      10,
	}
}

// Validate refuses a configuration a Server cannot run with.
func (c Config) Validate() error {
	if c.Caller == nil {
		return errors.New("gateway: no caller pool")
	}
	return nil
}

// New returns a gateway that forwards to cfg.Caller, or the error of
// cfg.Validate.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.Limits.MaxBodyBytes <= 0 {
		cfg.Limits.MaxBodyBytes = d.Limits.MaxBodyBytes
	}
	if cfg.Limits.MaxMessages <= 0 {
		cfg.Limits.MaxMessages = d.Limits.MaxMessages
	}
	if cfg.Limits.MaxChars <= 0 {
		cfg.Limits.MaxChars = d.Limits.MaxChars
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = d.RateBurst
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = d.RequestTimeout
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = d.BodyTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, caller: mesh.NewCallerClient(cfg.Caller),
		statusTTL: 2 * time.Second, statusTimeout: 3 * time.Second, corsOrigin: map[string]bool{},
		tracer: cfg.TracerProvider.Tracer(instrumentation),
	}
	for _, k := range cfg.APIKeys {
		if k = strings.TrimSpace(k); k != "" {
			s.keys = append(s.keys, []byte(k))
		}
	}
	for _, o := range cfg.CORSOrigins {
		s.corsOrigin[strings.TrimSpace(o)] = true
	}
	s.m = newMetrics(cfg.Caller)
	if cfg.RateLimit > 0 {
		s.limiter = newRateLimiter(cfg.RateLimit, cfg.RateBurst)
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	// A path with a trailing slash is another path: 404 unknown_url in the
	// API's format, not a redirect with an empty body that POST clients
	// do not follow.
	r.RedirectTrailingSlash = false
	r.ContextWithFallback = true
	r.Use(s.recover, s.requestID, s.observe, s.writeDeadlines, s.cors)
	r.NoRoute(func(c *gin.Context) { s.fail(c, openai.UnknownRoute(c.Request.Method, c.Request.URL.Path)) })
	r.NoMethod(func(c *gin.Context) { s.fail(c, openai.MethodNotAllowed(c.Request.Method, c.Request.URL.Path)) })
	r.GET("/health", s.Health)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})))
	v1 := r.Group("/v1", s.trace, s.auth)
	v1.POST("/chat/completions", s.rateLimit, s.ChatCompletions)
	v1.POST("/embeddings", s.rateLimit, s.Embeddings)
	v1.POST("/completions", s.rateLimit, s.Completions)
	v1.GET("/models", s.Models)
	v1.GET("/models/:id", s.Model)
	s.router = r
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// fail writes e as the response, with Retry-After where it applies, and
// aborts the handler chain.
func (s *Server) fail(c *gin.Context, e *openai.Error) {
	if e.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	c.AbortWithStatusJSON(e.Status, e)
}

// clientError turns a failure of the mesh into what the client sees
// (openai.FromError); an internal error's detail goes to the log only.
func (s *Server) clientError(c *gin.Context, err error) *openai.Error {
	if chat.Code(err) == chat.CodeInternal {
		s.reqLog(c).Error("request failed", "error", err)
	}
	return openai.FromError(err)
}

// auth requires an API key on /v1/* when keys are configured.
func (s *Server) auth(c *gin.Context) {
	if len(s.keys) == 0 || c.Request.Method == http.MethodOptions {
		return
	}
	h := c.GetHeader("Authorization")
	key, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || key == "" {
		s.fail(c, openai.Unauthorized("missing API key: send it as \"Authorization: Bearer <key>\""))
		return
	}
	// Compare against every key, without stopping early, so that timing
	// says nothing about which key or how much of one matched.
	match := 0
	for _, k := range s.keys {
		match |= subtle.ConstantTimeCompare([]byte(key), k)
	}
	if match != 1 {
		s.reqLog(c).Info("rejected API key", "remote", c.ClientIP())
		s.fail(c, openai.Unauthorized("incorrect API key"))
	}
}

// rateLimit applies the per-client rate limit to chat requests.
func (s *Server) rateLimit(c *gin.Context) {
	if s.limiter == nil {
		return
	}
	key := "ip:" + c.ClientIP()
	if h, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer "); ok && len(s.keys) > 0 {
		key = "key:" + h // auth already checked it is a valid key
	}
	if ok, wait := s.limiter.allow(key, time.Now()); !ok {
		s.fail(c, openai.Overloaded(fmt.Sprintf("rate limit of %g requests per second exceeded", s.cfg.RateLimit), openai.RetryAfterSeconds(wait)))
	}
}

// cors answers browsers from the configured origins only.
func (s *Server) cors(c *gin.Context) {
	origin := c.GetHeader("Origin")
	if origin == "" || !(s.corsOrigin["*"] || s.corsOrigin[origin]) {
		return
	}
	h := c.Writer.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if c.Request.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id")
		h.Set("Access-Control-Max-Age", "600")
		c.AbortWithStatus(http.StatusNoContent)
	}
}

// recover turns a panic in a handler into a 500 in the API's format.
func (s *Server) recover(c *gin.Context) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.reqLog(c).Error("handler panic", "panic", p)
			if !c.Writer.Written() {
				s.fail(c, openai.Internal())
			}
		}
	}()
	c.Next()
}

// writeDeadlines gives every write of the response WriteTimeout from the
// moment it is made (see Config.WriteTimeout), and logs a response that
// could not be delivered.
func (s *Server) writeDeadlines(c *gin.Context) {
	if s.cfg.WriteTimeout <= 0 {
		return
	}
	// The controller works on net/http's writer under gin's, whose Flush
	// reports errors (gin's drops them).
	var inner http.ResponseWriter = c.Writer
	if u, ok := c.Writer.(interface{ Unwrap() http.ResponseWriter }); ok {
		inner = u.Unwrap()
	}
	w := &deadlineWriter{ResponseWriter: c.Writer, rc: http.NewResponseController(inner), timeout: s.cfg.WriteTimeout}
	c.Writer = w
	c.Next()
	// The server still writes after the handler: the headers of an empty
	// response, the end of a chunked body.
	w.arm()
	if w.err != nil {
		s.reqLog(c).Info("client did not take the response", "remote", c.ClientIP(), "error", w.err)
	}
}

// deadlineWriter sets the connection's write deadline before every write
// and flush, and remembers the first failure. (A failed write also cancels
// the request's context, which cancels its generation.)
type deadlineWriter struct {
	gin.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	err     error
}

var _ gin.ResponseWriter = (*deadlineWriter)(nil)

func (w *deadlineWriter) arm() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }

func (w *deadlineWriter) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.arm()
	n, err := w.ResponseWriter.Write(b)
	if err != nil {
		w.fail(err)
	}
	return n, err
}

func (w *deadlineWriter) WriteString(str string) (int, error) {
	w.arm()
	n, err := w.ResponseWriter.WriteString(str)
	if err != nil {
		w.fail(err)
	}
	return n, err
}

// Flush is gin's Flush (headers, then the buffered body), with the error.
func (w *deadlineWriter) Flush() {
	w.arm()
	w.ResponseWriter.WriteHeaderNow()
	if err := w.rc.Flush(); err != nil {
		w.fail(err)
	}
}

// Unwrap lets http.ResponseController reach the connection through w.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

const requestIDHeader = "X-Request-Id"

// requestID takes the client's X-Request-Id (when it is short and printable)
// or makes one, returns it in the response and puts it into the context,
// from where the RPC calls carry it into every service's logs.
func (s *Server) requestID(c *gin.Context) {
	id := c.GetHeader(requestIDHeader)
	if !validRequestID(id) {
		id = newRequestID()
	}
	c.Header(requestIDHeader, id)
	c.Request = c.Request.WithContext(rpc.WithRequestID(c.Request.Context(), id))
	c.Next()
}

func requestIDOf(c *gin.Context) string { return rpc.RequestID(c.Request.Context()) }

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if r < 0x21 || r > 0x7e {
			return false
		}
	}
	return true
}

// callerStatus asks a caller which inference instances and models are
// live, remembering the answer for a moment so that /health and /v1/models
// under load do not multiply calls.
//
// The refresh runs once for everyone asking at the time, on a context of
// its own (the first asker's values, not its cancellation) with its own
// timeout: a client that goes away mid-refresh must not fail it for the
// others, or turn /health into a 503 that Consul acts on. A failure is not
// remembered; the next asker tries again.
func (s *Server) callerStatus(ctx context.Context) (mesh.CallerStatus, error) {
	s.statusMu.Lock()
	if time.Since(s.statusAt) < s.statusTTL {
		st := s.status
		s.statusMu.Unlock()
		return st, nil
	}
	s.statusMu.Unlock()
	ch := s.statusGroup.DoChan("status", func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.statusTimeout)
		defer cancel()
		st, err := s.caller.Status(ctx)
		if err == nil {
			s.statusMu.Lock()
			s.status, s.statusAt = st, time.Now()
			s.statusMu.Unlock()
		}
		return st, err
	})
	select {
	case r := <-ch:
		return r.Val.(mesh.CallerStatus), r.Err
	case <-ctx.Done():
		return mesh.CallerStatus{}, ctx.Err()
	}
}

// Health serves GET /health: 200 only when a request can travel gateway →
// caller → inference right now.
func (s *Server) Health(c *gin.Context) {
	st, err := s.callerStatus(c.Request.Context())
	h := mesh.MeshHealth(st)
	if err != nil {
		h.Fail(mesh.FailingCaller, err.Error())
	}
	h.Write(c.Writer)
}

// Models serves GET /v1/models: the models the live inference instances
// serve.
func (s *Server) Models(c *gin.Context) {
	st, err := s.callerStatus(c.Request.Context())
	if err != nil {
		s.fail(c, s.clientError(c, err))
		return
	}
	list := make([]openai.Model, 0)
	for _, m := range st.Models() {
		list = append(list, openai.NewModel(m, st.Created(m), ownedBy))
	}
	c.JSON(http.StatusOK, openai.NewModelList(list...))
}

// Model serves GET /v1/models/{id}: one of the models the live inference
// instances serve, or 404 model_not_found.
func (s *Server) Model(c *gin.Context) {
	st, err := s.callerStatus(c.Request.Context())
	if err != nil {
		s.fail(c, s.clientError(c, err))
		return
	}
	id := c.Param("id")
	if !slices.Contains(st.Models(), id) {
		s.fail(c, openai.ModelNotFound(id))
		return
	}
	c.JSON(http.StatusOK, openai.NewModel(id, st.Created(id), ownedBy))
}

// ownedBy is the owned_by of the models the gateway lists.
const ownedBy = "slm-mesh"

// metrics are the gateway's Prometheus series, named after the vLLM and
// llama.cpp servers' with an slm_ prefix.
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	ttft       prometheus.Histogram
	prompt     prometheus.Counter
	completion prometheus.Counter
	inFlight   prometheus.Gauge
}

func newMetrics(pool *rpc.Pool) *metrics {
	m := &metrics{
		reg: prom.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slm_http_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "slm_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}, []string{"route"}),
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "slm_time_to_first_token_seconds", Help: "Time from request to first generated text.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		prompt:     prometheus.NewCounter(prometheus.CounterOpts{Name: "slm_prompt_tokens_total", Help: "Prompt tokens of finished requests."}),
		completion: prometheus.NewCounter(prometheus.CounterOpts{Name: "slm_generation_tokens_total", Help: "Completion tokens of finished requests."}),
		inFlight:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "slm_requests_running", Help: "Chat requests in progress."}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.ttft, m.prompt, m.completion, m.inFlight,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slm_caller_instances", Help: "Connected caller instances."},
			func() float64 { return float64(pool.Healthy()) }))
	return m
}

// observe counts every request by route and status.
func (s *Server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	s.m.requests.WithLabelValues(route, strconv.Itoa(c.Writer.Status())).Inc()
	s.m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
}

// newRequestID returns a random id for a request that brought none.
func newRequestID() string { return "req-" + rand.Text()[:20] }

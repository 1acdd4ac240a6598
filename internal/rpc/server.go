package rpc

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Handler serves one method. payload is the caller's request as JSON ("null"
// when it sent none). A streaming handler calls send for each chunk, in
// order; send fails once ctx is done, so a handler that streams notices a
// cancellation at its next send. The returned result is encoded as JSON and
// ends the call; a returned error ends it with that error's code (see
// Server.Handle).
//
// ctx is canceled when the caller cancels, when the call's deadline passes,
// or when the connection is lost; it carries the caller's request id
// (RequestID), deadline and, for a traced call, the call's server span.
type Handler func(ctx context.Context, payload json.RawMessage, send func(chunk any) error) (result any, err error)

// ServerConfig configures a Server. Zero fields take the defaults named in
// each comment.
type ServerConfig struct {
	// Token admits peers: a client must send "Authorization: Bearer <Token>"
	// on the upgrade request, or gets 401. Empty means no authentication.
	Token string
	// Logger receives the server's logs. Default: no logs.
	Logger hclog.Logger
	// MaxFrameBytes bounds one WebSocket message in either direction, and so
	// every frame. A peer that sends more loses its connection. Default
	// DefaultMaxFrameBytes (1 MiB).
	MaxFrameBytes int64
	// HandshakeTimeout bounds writing the upgrade response. (Reading the
	// request is bounded by the http.Server's ReadHeaderTimeout.) Default
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// PingInterval is how often the server pings each client; PongTimeout is
	// how long past that it waits for any frame before it declares the
	// client dead and cancels its calls. Defaults DefaultPingInterval and
	// DefaultPongTimeout.
	PingInterval, PongTimeout time.Duration
	// MaxInFlight bounds the calls the server runs at once, over all
	// connections; beyond it calls fail at once with chat.CodeOverloaded. Zero
	// means no bound.
	MaxInFlight int
	// TracerProvider makes the server spans of traced calls. Default:
	// OpenTelemetry's global tracer provider.
	TracerProvider trace.TracerProvider
}

func (c *ServerConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = DefaultPongTimeout
	}
}

// Server serves RPC methods to WebSocket clients. Mount it at PathRPC on the
// service's http.Server; register methods with Handle before serving.
type Server struct {
	cfg       ServerConfig
	log       hclog.Logger
	tracer    trace.Tracer
	upgrader  websocket.Upgrader
	tokenHash [sha256.Size]byte

	handlersMu sync.RWMutex
	handlers   map[string]Handler

	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	draining bool
	inFlight int
	calls    sync.WaitGroup // one per running handler; Add only while !draining
}

var _ http.Handler = (*Server)(nil)

// NewServer returns a server with no methods.
func NewServer(cfg ServerConfig) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger.Named("rpc"),
		tracer: tracerOf(cfg.TracerProvider),
		upgrader: websocket.Upgrader{
			HandshakeTimeout: cfg.HandshakeTimeout,
			ReadBufferSize:   socketBuffer,
			WriteBufferSize:  socketBuffer,
		},
		handlers: make(map[string]Handler),
		conns:    make(map[*serverConn]struct{}),
	}
	if cfg.Token != "" {
		s.tokenHash = sha256.Sum256([]byte(cfg.Token))
	}
	return s
}

// Handle registers h for method, replacing any earlier handler.
//
// What the caller sees when h fails: a *chat.Error anywhere in the returned
// error's chain is sent whole (all but its local cause); a context error is sent
// as canceled or deadline_exceeded; any other error is logged here with the
// method and request id and sent as code internal with the message
// "internal error" — internal detail stays in this service's log. A
// panicking handler is treated as an internal error.
func (s *Server) Handle(method string, h Handler) {
	s.handlersMu.Lock()
	defer s.handlersMu.Unlock()
	s.handlers[method] = h
}

func (s *Server) handler(method string) Handler {
	s.handlersMu.RLock()
	defer s.handlersMu.RUnlock()
	return s.handlers[method]
}

// InFlight is the number of calls running now.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// ServeHTTP admits a peer by its token and upgrades the request to the RPC
// WebSocket. The connection lives on after ServeHTTP returns.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if reason := s.checkToken(r); reason != "" {
		// Never log the presented token, only that it was wrong.
		s.log.Warn("rejected RPC connection", "peer", r.RemoteAddr, "reason", reason)
		w.Header().Set("WWW-Authenticate", `Bearer realm="slm-mesh rpc"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if s.isDraining() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// Upgrade has already answered with an HTTP error.
		s.log.Debug("websocket upgrade failed", "peer", r.RemoteAddr, "error", err)
		return
	}
	sc := &serverConn{s: s, calls: make(map[uint64]*serverCall)}
	sc.ctx, sc.cancel = context.WithCancel(context.Background())
	sc.w = newWire(ws, wireConfig{
		maxFrameBytes: s.cfg.MaxFrameBytes,
		pingInterval:  s.cfg.PingInterval,
		pongTimeout:   s.cfg.PongTimeout,
		log:           s.log,
		dispatch:      sc.dispatch,
		onClose:       sc.onClose,
	})
	s.mu.Lock()
	draining := s.draining
	if !draining {
		s.conns[sc] = struct{}{}
	}
	s.mu.Unlock()
	sc.w.start()
	if draining {
		sc.w.close(&chat.Error{Code: chat.CodeUnavailable, Message: "server is shutting down"}, websocket.CloseGoingAway)
		return
	}
	s.log.Debug("RPC peer connected", "peer", r.RemoteAddr)
}

// checkToken returns why r is not admitted, or "" if it is. Both tokens are
// hashed first so the constant-time compare does not leak the length.
func (s *Server) checkToken(r *http.Request) string {
	if s.cfg.Token == "" {
		return ""
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return "missing token"
	}
	got, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return "authorization is not a bearer token"
	}
	sum := sha256.Sum256([]byte(got))
	if subtle.ConstantTimeCompare(sum[:], s.tokenHash[:]) != 1 {
		return "wrong token"
	}
	return ""
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Shutdown stops accepting connections and calls (new calls fail with
// chat.CodeUnavailable, so a pool retries them elsewhere), waits for the running
// calls to finish and their results to be sent, then closes every
// connection, returning once each peer has answered the close (or
// closeWait has passed) so that the process may exit. If ctx ends first,
// it closes the connections anyway, which cancels the handlers still
// running, and returns ctx's error.
//
// Hijacked WebSocket connections are invisible to http.Server.Shutdown, so
// a service calls this as well, first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()

	drained := make(chan struct{})
	go func() {
		s.calls.Wait()
		close(drained)
	}()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = ctx.Err()
	}

	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	bye := &chat.Error{Code: chat.CodeUnavailable, Message: "server shut down"}
	for _, sc := range conns {
		if err == nil {
			sc.w.closeAfterQueued(bye)
		} else {
			sc.w.close(bye, websocket.CloseGoingAway)
		}
	}
	// Wait for each socket to end, not only for its close frame to be
	// queued: the caller exits next, and a socket closed before the peer
	// has read everything can lose the peer the results it had not read
	// (see wire.awaitPeerClose). The read loop ends once the peer answers
	// the close frame, or closeWait after it was sent.
	for _, sc := range conns {
		select {
		case <-sc.w.readDone:
		case <-ctx.Done():
			sc.w.close(bye, websocket.CloseGoingAway)
		}
	}
	return err
}

// serverConn is the server's side of one client connection.
type serverConn struct {
	s *Server
	w *wire
	// ctx is the parent of every handler context on this connection; it is
	// canceled when the connection closes, because nobody is left to read
	// the results.
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	calls map[uint64]*serverCall
}

// serverCall is one running handler.
type serverCall struct {
	cancel context.CancelFunc
	span   trace.Span // the call's server span; nil when not traced
	// peerCanceled means the client sent cancel: it no longer waits for a
	// final frame, so none is sent.
	peerCanceled atomic.Bool
	// returned means the handler has returned; a later send is a bug.
	returned atomic.Bool
}

func (sc *serverConn) onClose(err *chat.Error) {
	sc.cancel()
	sc.s.mu.Lock()
	delete(sc.s.conns, sc)
	sc.s.mu.Unlock()
	sc.s.log.Debug("RPC peer disconnected", "peer", sc.w.ws.RemoteAddr().String(), "reason", err.Message)
}

func (sc *serverConn) dispatch(f *frame) {
	switch f.Type {
	case frameCall:
		sc.startCall(f)
	case frameCancel:
		sc.mu.Lock()
		c := sc.calls[f.ID]
		sc.mu.Unlock()
		if c != nil {
			c.peerCanceled.Store(true)
			c.cancel()
		}
	default:
		sc.s.log.Debug("ignoring unexpected frame from client", "type", f.Type, "id", f.ID)
	}
}

// reject ends call id with err without running a handler. It runs on its
// own goroutine because the read goroutine must not wait on the writer.
func (sc *serverConn) reject(id uint64, err *chat.Error) {
	go sc.w.send(nil, errorFrame(id, err))
}

func (sc *serverConn) startCall(f *frame) {
	s := sc.s
	if f.ID == 0 {
		s.log.Debug("ignoring call frame without id", "method", f.Method)
		return
	}
	sc.mu.Lock()
	_, dup := sc.calls[f.ID]
	sc.mu.Unlock()
	if dup {
		sc.reject(f.ID, chat.Errorf(chat.CodeInvalidArgument, "call id %d is already in use", f.ID))
		return
	}
	h := s.handler(f.Method)
	if h == nil {
		sc.reject(f.ID, chat.Errorf(chat.CodeNotFound, "no method %q", f.Method))
		return
	}
	s.mu.Lock()
	switch {
	case s.draining:
		s.mu.Unlock()
		sc.reject(f.ID, chat.Errorf(chat.CodeUnavailable, "server is shutting down"))
		return
	case s.cfg.MaxInFlight > 0 && s.inFlight >= s.cfg.MaxInFlight:
		s.mu.Unlock()
		sc.reject(f.ID, chat.Errorf(chat.CodeOverloaded, "server is at its limit of %d calls", s.cfg.MaxInFlight))
		return
	}
	s.inFlight++
	s.calls.Add(1)
	s.mu.Unlock()

	var ctx context.Context
	call := &serverCall{}
	if d, ok := callTimeout(f.TimeoutMS); ok {
		ctx, call.cancel = context.WithTimeout(sc.ctx, d)
	} else {
		ctx, call.cancel = context.WithCancel(sc.ctx)
	}
	if f.RequestID != "" {
		ctx = WithRequestID(ctx, f.RequestID)
	}
	ctx, call.span = startServerSpan(ctx, s.tracer, f)
	sc.mu.Lock()
	sc.calls[f.ID] = call
	sc.mu.Unlock()
	go sc.run(ctx, call, f.ID, f.Method, f.Payload, h)
}

// run runs one handler and sends its final frame.
func (sc *serverConn) run(ctx context.Context, call *serverCall, id uint64, method string, payload json.RawMessage, h Handler) {
	s := sc.s
	defer func() {
		call.cancel()
		sc.mu.Lock()
		delete(sc.calls, id)
		sc.mu.Unlock()
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
		s.calls.Done()
	}()
	if payload == nil {
		payload = json.RawMessage("null")
	}
	send := func(chunk any) error {
		if call.returned.Load() {
			return chat.Errorf(chat.CodeInternal, "%s: send called after the handler returned", method)
		}
		if err := ctx.Err(); err != nil {
			return contextError(method, err)
		}
		f := newFrame(frameChunk, id)
		if err := f.value("payload", chunk); err != nil {
			f.release()
			return chat.Errorf(chat.CodeInvalidArgument, "encode chunk: %w", err)
		}
		f.end()
		if len(f.b) > int(s.cfg.MaxFrameBytes) {
			n := len(f.b)
			f.release()
			return frameTooLarge("chunk", n, s.cfg.MaxFrameBytes)
		}
		if err := sc.w.send(ctx.Done(), f); err != nil {
			if errors.Is(err, errGaveUp) {
				return contextError(method, ctx.Err())
			}
			return err
		}
		return nil
	}

	result, err := sc.invoke(ctx, method, h, payload, send)
	call.returned.Store(true)
	if call.peerCanceled.Load() {
		endSpan(call.span, contextError(method, context.Canceled))
		return
	}
	var f *frameBuf
	if err == nil {
		f = newFrame(frameResult, id)
		if encErr := f.value("payload", result); encErr != nil {
			f.release()
			f, err = nil, fmt.Errorf("encode result of %s: %w", method, encErr)
		} else if f.end(); len(f.b) > int(s.cfg.MaxFrameBytes) {
			n := len(f.b)
			f.release()
			f, err = nil, frameTooLarge("result", n, s.cfg.MaxFrameBytes)
		}
	}
	if err != nil {
		e := sc.wireError(ctx, method, err)
		f, err = errorFrame(id, e), e
	}
	endSpan(call.span, err)
	_ = sc.w.send(nil, f) // fails only if the connection is gone
}

// invoke calls h, turning a panic into an error.
func (sc *serverConn) invoke(ctx context.Context, method string, h Handler, payload json.RawMessage, send func(any) error) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			RequestLogger(ctx, sc.s.log).Error("RPC handler panicked", "method", method, "panic", p, "stack", string(debug.Stack()))
			err = chat.Errorf(chat.CodeInternal, "internal error (request id %q)", RequestID(ctx))
		}
	}()
	return h(ctx, payload, send)
}

// wireError is what the peer is told about a failed call; see Handle.
func (sc *serverConn) wireError(ctx context.Context, method string, err error) *chat.Error {
	var e *chat.Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.Canceled):
		return &chat.Error{Code: chat.CodeCanceled, Message: method + ": canceled"}
	case errors.Is(err, context.DeadlineExceeded):
		return &chat.Error{Code: chat.CodeDeadlineExceeded, Message: method + ": deadline exceeded"}
	}
	RequestLogger(ctx, sc.s.log).Error("RPC handler failed", "method", method, "error", err)
	return &chat.Error{Code: chat.CodeInternal, Message: fmt.Sprintf("internal error (request id %q)", RequestID(ctx))}
}

// callTimeout converts a frame's timeout_ms into a duration. A value of zero
// or less sets no deadline, and so does one too large for a time.Duration
// (some 292 years), which would otherwise overflow into the past and expire
// the call at once.
func callTimeout(ms int64) (time.Duration, bool) {
	if ms <= 0 || ms > math.MaxInt64/int64(time.Millisecond) {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// ClientConfig configures a client connection. Zero fields take the
// defaults named in each comment.
type ClientConfig struct {
	// Token is sent as "Authorization: Bearer <Token>" on the upgrade
	// request. Empty sends none.
	Token string
	// TLS, when set, makes Dial use wss:// with this configuration (see
	// ClientTLSConfig). Nil means plain ws://.
	TLS *tls.Config
	// Logger receives the connection's logs. Default: no logs.
	Logger hclog.Logger
	// MaxFrameBytes bounds one WebSocket message in either direction. A call
	// whose request frame is larger fails with chat.CodeInvalidArgument without
	// touching the connection; a larger message from the server closes the
	// connection. Use the server's value. Default DefaultMaxFrameBytes.
	MaxFrameBytes int64
	// DialTimeout bounds connecting and the WebSocket handshake. Default
	// DefaultHandshakeTimeout.
	DialTimeout time.Duration
	// PingInterval is how often the client pings the server; PongTimeout is
	// how long past that it waits for any frame before it declares the
	// connection dead and fails every pending call with chat.CodeUnavailable.
	// Defaults DefaultPingInterval and DefaultPongTimeout.
	PingInterval, PongTimeout time.Duration
	// ChunkBuffer is how many received chunks of one call may wait for its
	// onChunk. A call whose consumer falls further behind fails with
	// chat.CodeOverloaded and is canceled on the server, so one slow consumer
	// neither stalls the other calls on the connection nor grows memory
	// without bound. Default DefaultChunkBuffer.
	ChunkBuffer int
	// DefaultTimeout is the deadline given to a call whose context has none:
	// every call carries a deadline. Default DefaultCallTimeout.
	DefaultTimeout time.Duration
	// TracerProvider makes the client spans of traced calls. Default:
	// OpenTelemetry's global tracer provider.
	TracerProvider trace.TracerProvider
}

func (c *ClientConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultHandshakeTimeout
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.ChunkBuffer <= 0 {
		c.ChunkBuffer = DefaultChunkBuffer
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = DefaultCallTimeout
	}
}

// ClientTLSConfig returns a TLS configuration that trusts the PEM
// certificates in caFile (and only those) and expects serverName in the
// peer's certificate ("" for the address dialled), for ClientConfig.TLS.
// Peers found in Consul are dialled by address, while their certificates
// name their tier (discovery.ServiceCaller, ServiceInference): the name,
// not the address, is what a certificate of another tier cannot carry.
func ClientTLSConfig(caFile, serverName string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}, nil
}

// Conn is a client's connection to one server. It is safe for concurrent
// use: calls are multiplexed on it by id.
type Conn struct {
	addr   string
	cfg    ClientConfig
	tracer trace.Tracer
	log    hclog.Logger
	w      *wire
	nextID atomic.Uint64

	mu       sync.Mutex
	calls    map[uint64]*clientCall
	draining bool
	idle     chan struct{} // closed when draining and no call is left
}

// Dial connects to the server at addr (host:port; the path is PathRPC) and
// performs the handshake. addr may also be a full ws:// or wss:// URL. A
// server that refuses the token answers 401, and Dial fails with
// chat.CodeUnavailable saying so; every Dial failure has that code.
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*Conn, error) {
	cfg.setDefaults()
	url := addr
	if !strings.Contains(addr, "://") {
		scheme := "ws://"
		if cfg.TLS != nil {
			scheme = "wss://"
		}
		url = scheme + addr + PathRPC
	}
	d := websocket.Dialer{
		HandshakeTimeout: cfg.DialTimeout,
		TLSClientConfig:  cfg.TLS,
		ReadBufferSize:   socketBuffer,
		WriteBufferSize:  socketBuffer,
	}
	var hdr http.Header
	if cfg.Token != "" {
		hdr = http.Header{"Authorization": []string{"Bearer " + cfg.Token}}
	}
	ws, resp, err := d.DialContext(ctx, url, hdr)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return nil, chat.Errorf(chat.CodeUnavailable, "dial %s: server refused the token (401)", addr)
		}
		if resp != nil {
			return nil, chat.Errorf(chat.CodeUnavailable, "dial %s: handshake answered %s: %w", addr, resp.Status, err)
		}
		return nil, chat.Errorf(chat.CodeUnavailable, "dial %s: %w", addr, err)
	}
	c := &Conn{
		addr:   addr,
		cfg:    cfg,
		tracer: tracerOf(cfg.TracerProvider),
		log:    cfg.Logger.Named("rpc").With("peer", addr),
		calls:  make(map[uint64]*clientCall),
		idle:   make(chan struct{}),
	}
	c.w = newWire(ws, wireConfig{
		maxFrameBytes: cfg.MaxFrameBytes,
		pingInterval:  cfg.PingInterval,
		pongTimeout:   cfg.PongTimeout,
		log:           c.log,
		dispatch:      c.dispatch,
		onClose:       c.onClose,
	})
	c.w.start()
	return c, nil
}

// clientCall is one pending call. The read goroutine appends chunks and sets
// the outcome; the goroutine in Call consumes them. A queue under a mutex
// (rather than a channel per call) costs nothing until chunks arrive and
// lets the consumer take every waiting chunk at once.
type clientCall struct {
	notify  chan struct{} // capacity 1: "something changed"
	discard bool          // no onChunk: drop chunks on arrival

	mu     sync.Mutex
	chunks []json.RawMessage
	done   bool
	result json.RawMessage
	err    error
}

func (cl *clientCall) wake() {
	select {
	case cl.notify <- struct{}{}:
	default:
	}
}

// finish sets the outcome of the call unless it already has one.
func (cl *clientCall) finish(result json.RawMessage, err error) {
	cl.mu.Lock()
	if !cl.done {
		cl.done, cl.result, cl.err = true, result, err
	}
	cl.mu.Unlock()
	cl.wake()
}

// Broadcast calls method on the instance at the other end, as
// Pool.Broadcast does on every instance of a pool: one result, with an
// empty Addr.
func (c *Conn) Broadcast(ctx context.Context, method string, req any) []BroadcastResult {
	res, err := c.Call(ctx, method, req, nil)
	return []BroadcastResult{{Result: res, Err: err}}
}

// Call calls method with req (encoded as JSON) and returns the result as
// JSON. If the server streams, onChunk receives each chunk in order, on the
// calling goroutine, before Call returns; nil onChunk discards chunks. An
// error from onChunk cancels the call, and Call returns that error as is.
//
// The deadline of ctx (or ClientConfig.DefaultTimeout), its request id
// (WithRequestID) and, when ctx belongs to a trace, the trace context of
// the call's client span travel with the call; canceling ctx cancels the
// handler on the server. Every other
// failure is an *chat.Error: the server's code and message, chat.CodeUnavailable when
// the connection is lost or closed, chat.CodeCanceled or chat.CodeDeadlineExceeded
// when ctx ends (these unwrap to ctx's error), chat.CodeOverloaded when onChunk
// falls more than ChunkBuffer chunks behind.
func (c *Conn) Call(ctx context.Context, method string, req any, onChunk func(json.RawMessage) error) (json.RawMessage, error) {
	ctx, span := startClientSpan(ctx, c.tracer, method, c.addr)
	res, err := c.call(ctx, method, req, onChunk)
	endSpan(span, err)
	return res, err
}

func (c *Conn) call(ctx context.Context, method string, req any, onChunk func(json.RawMessage) error) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, contextError(method, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.DefaultTimeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}
	remaining := time.Until(deadline)
	if remaining <= 0 {
		return nil, contextError(method, context.DeadlineExceeded)
	}

	id := c.nextID.Add(1)
	f := newFrame(frameCall, id)
	f.str("method", method)
	// Round up: a call with 300µs left must not arrive with no deadline.
	f.int("timeout_ms", int64((remaining+time.Millisecond-1)/time.Millisecond))
	if rid := RequestID(ctx); rid != "" {
		f.str("request_id", rid)
	}
	injectTrace(ctx, f)
	if err := f.value("payload", req); err != nil {
		f.release()
		return nil, chat.Errorf(chat.CodeInvalidArgument, "encode request for %s: %w", method, err)
	}
	f.end()
	if len(f.b) > int(c.cfg.MaxFrameBytes) {
		n := len(f.b)
		f.release()
		return nil, frameTooLarge("call", n, c.cfg.MaxFrameBytes)
	}

	cl := &clientCall{notify: make(chan struct{}, 1), discard: onChunk == nil}
	if err := c.register(id, cl); err != nil {
		f.release()
		return nil, err
	}
	if err := c.w.send(ctx.Done(), f); err != nil {
		c.unregister(id)
		if errors.Is(err, errGaveUp) {
			return nil, contextError(method, ctx.Err())
		}
		return nil, err
	}
	return c.wait(ctx, id, method, cl, onChunk)
}

// wait consumes chunks of call id until it has an outcome.
func (c *Conn) wait(ctx context.Context, id uint64, method string, cl *clientCall, onChunk func(json.RawMessage) error) (json.RawMessage, error) {
	var batch []json.RawMessage
	for {
		select {
		case <-cl.notify:
		case <-ctx.Done():
			c.abandon(id)
			return nil, contextError(method, ctx.Err())
		}
		cl.mu.Lock()
		// Swap buffers: chunks that arrived before the outcome are all in
		// this batch, so handling the batch first keeps the order.
		batch, cl.chunks = cl.chunks, batch[:0]
		done, result, err := cl.done, cl.result, cl.err
		cl.mu.Unlock()
		for i, chunk := range batch {
			batch[i] = nil
			if onChunk == nil {
				continue
			}
			if cerr := onChunk(chunk); cerr != nil {
				c.abandon(id)
				return nil, cerr
			}
		}
		if done {
			return result, err
		}
		if ctx.Err() != nil {
			c.abandon(id)
			return nil, contextError(method, ctx.Err())
		}
	}
}

func (c *Conn) register(id uint64, cl *clientCall) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.w.closed:
		return c.w.err
	default:
	}
	if c.draining {
		return chat.Errorf(chat.CodeUnavailable, "connection is draining")
	}
	c.calls[id] = cl
	return nil
}

// unregister forgets call id and reports whether it was still pending.
// Callers hold no lock.
func (c *Conn) unregister(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unregisterLocked(id)
}

func (c *Conn) unregisterLocked(id uint64) bool {
	if _, ok := c.calls[id]; !ok {
		return false
	}
	delete(c.calls, id)
	if c.draining && len(c.calls) == 0 {
		close(c.idle)
	}
	return true
}

// abandon forgets call id and, if the server may still be running it, tells
// the server to cancel it.
func (c *Conn) abandon(id uint64) {
	if c.unregister(id) {
		c.w.sendSoon(newFrame(frameCancel, id).end())
	}
}

// dispatch handles a frame from the server, on the read goroutine.
func (c *Conn) dispatch(f *frame) {
	switch f.Type {
	case frameChunk:
		c.mu.Lock()
		cl := c.calls[f.ID]
		c.mu.Unlock()
		if cl == nil || cl.discard {
			return // abandoned (its chunks may still arrive), or nobody reads them
		}
		cl.mu.Lock()
		queued := len(cl.chunks)
		full := queued >= c.cfg.ChunkBuffer
		if !full && !cl.done {
			cl.chunks = append(cl.chunks, f.Payload)
		}
		cl.mu.Unlock()
		if full {
			c.abandon(f.ID)
			cl.finish(nil, chat.Errorf(chat.CodeOverloaded, "consumer fell %d chunks behind; call canceled", c.cfg.ChunkBuffer))
			return
		}
		cl.wake()
		if queued >= c.cfg.ChunkBuffer/2 {
			// The consumer we just woke waits in this P's run queue while
			// this goroutine decodes a whole batch; yield so that a consumer
			// that is merely unscheduled is not declared too slow.
			runtime.Gosched()
		}
	case frameResult, frameError:
		c.mu.Lock()
		cl := c.calls[f.ID]
		c.unregisterLocked(f.ID)
		c.mu.Unlock()
		if cl == nil {
			return
		}
		if f.Type == frameResult {
			cl.finish(f.Payload, nil)
		} else {
			cl.finish(nil, f.Err)
		}
	default:
		c.log.Debug("ignoring unexpected frame from server", "type", f.Type, "id", f.ID)
	}
}

// onClose fails every pending call with the reason the connection closed.
func (c *Conn) onClose(err *chat.Error) {
	c.mu.Lock()
	calls := c.calls
	c.calls = make(map[uint64]*clientCall)
	if c.draining && len(calls) > 0 {
		close(c.idle)
	}
	c.mu.Unlock()
	for _, cl := range calls {
		cl.finish(nil, err)
	}
	c.log.Debug("RPC connection closed", "reason", err.Message, "failed_calls", len(calls))
}

// InFlight is the number of calls pending on the connection.
func (c *Conn) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

// Done is closed when the connection has closed, for whatever reason.
func (c *Conn) Done() <-chan struct{} { return c.w.closed }

// Err returns why the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	select {
	case <-c.w.closed:
		return c.w.err
	default:
		return nil
	}
}

// Close closes the connection at once; pending calls fail with
// chat.CodeUnavailable.
func (c *Conn) Close() error {
	c.w.close(&chat.Error{Code: chat.CodeUnavailable, Message: "connection closed by client"}, websocket.CloseNormalClosure)
	return nil
}

// Shutdown refuses new calls (chat.CodeUnavailable), waits until the pending ones
// finish or ctx ends, and closes the connection. It returns ctx's error if
// calls were still pending.
func (c *Conn) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if !c.draining {
		c.draining = true
		if len(c.calls) == 0 {
			close(c.idle)
		}
	}
	c.mu.Unlock()
	var err error
	select {
	case <-c.idle:
	case <-c.w.closed:
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.Close()
	return err
}

package rpc

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// TestConcurrentCallsReturnToTheirCallers proves that many calls in flight
// on one connection each get their own result.
func TestConcurrentCallsReturnToTheirCallers(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	c := dial(t, ts.addr, ClientConfig{})

	const callers = 200
	errs := make(chan error, callers)
	for i := range callers {
		go func() {
			want := fmt.Sprintf(`{"caller":%d}`, i)
			got, err := c.Call(testCtx(t), mEcho, json.RawMessage(want), nil)
			if err == nil && string(got) != want {
				err = fmt.Errorf("caller %d got %s", i, got)
			}
			errs <- err
		}()
	}
	for range callers {
		if err := within(t, "calls", errs); err != nil {
			t.Error(err)
		}
	}
	if n := c.InFlight(); n != 0 {
		t.Errorf("InFlight = %d after all calls returned", n)
	}
}

// TestStreamingKeepsOrder proves chunks reach onChunk in the order the
// handler sent them, all before the result, also with streams interleaved.
func TestStreamingKeepsOrder(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	// The handler produces as fast as it can; a buffer as deep as the stream
	// keeps this test about order (overflow has its own test).
	c := dial(t, ts.addr, ClientConfig{ChunkBuffer: 2000})

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			const count = 2000
			next := 0
			res, err := c.Call(testCtx(t), mStream, streamReq{Count: count}, func(p json.RawMessage) error {
				var ch streamChunk
				if err := json.Unmarshal(p, &ch); err != nil {
					return err
				}
				if ch.N != next {
					return fmt.Errorf("chunk %d arrived when %d was due", ch.N, next)
				}
				next++
				return nil
			})
			if err != nil {
				t.Error(err)
				return
			}
			if next != count || string(res) != `{"count":2000}` {
				t.Errorf("got %d chunks, result %s", next, res)
			}
		})
	}
	wg.Wait()
}

// TestCancelReachesHandler proves that canceling the caller's context
// cancels the handler's context on the server.
func TestCancelReachesHandler(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	started := make(chan struct{})
	handlerErr := make(chan error, 1)
	ts.rpc.Handle("test::wait", func(ctx context.Context, _ json.RawMessage, _ func(any) error) (any, error) {
		close(started)
		<-ctx.Done()
		handlerErr <- ctx.Err()
		return nil, ctx.Err()
	})
	c := dial(t, ts.addr, ClientConfig{})

	ctx, cancel := context.WithCancel(testCtx(t))
	callErr := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, "test::wait", nil, nil)
		callErr <- err
	}()
	within(t, "handler start", started)
	cancel()

	err := within(t, "call to return", callErr)
	wantCode(t, err, chat.CodeCanceled)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("%v does not unwrap to context.Canceled", err)
	}
	if err := within(t, "handler to see the cancel", handlerErr); !errors.Is(err, context.Canceled) {
		t.Errorf("handler ctx ended with %v, want context.Canceled", err)
	}
	eventually(t, "server in-flight to reach 0", func() bool { return ts.rpc.InFlight() == 0 })
}

// TestDeadlineTravelsWithCall proves the caller's deadline reaches the
// handler's context and a call that outlives it fails with
// deadline_exceeded.
func TestDeadlineTravelsWithCall(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	type seen struct {
		deadline time.Time
		ok       bool
		err      error
	}
	handlerSaw := make(chan seen, 1)
	ts.rpc.Handle("test::deadline", func(ctx context.Context, _ json.RawMessage, _ func(any) error) (any, error) {
		d, ok := ctx.Deadline()
		<-ctx.Done()
		handlerSaw <- seen{d, ok, ctx.Err()}
		return nil, ctx.Err()
	})
	c := dial(t, ts.addr, ClientConfig{})

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	callerDeadline, _ := ctx.Deadline()
	_, err := c.Call(ctx, "test::deadline", nil, nil)
	wantCode(t, err, chat.CodeDeadlineExceeded)

	s := within(t, "handler", handlerSaw)
	if !s.ok {
		t.Fatal("handler context has no deadline")
	}
	// The server's deadline is derived from the remaining time, so it can
	// only be later than the caller's by the transit time.
	if s.deadline.Before(callerDeadline.Add(-time.Second)) || s.deadline.After(callerDeadline.Add(time.Second)) {
		t.Errorf("handler deadline %v, caller deadline %v", s.deadline, callerDeadline)
	}
	// Either the server's own timer or the client's cancel ended it.
	if s.err == nil {
		t.Error("handler context never ended")
	}
}

// TestDefaultDeadline proves a call without a deadline still carries one.
func TestDefaultDeadline(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	ts.rpc.Handle("test::has_deadline", func(ctx context.Context, _ json.RawMessage, _ func(any) error) (any, error) {
		_, ok := ctx.Deadline()
		return ok, nil
	})
	c := dial(t, ts.addr, ClientConfig{DefaultTimeout: time.Minute})
	res, err := c.Call(context.Background(), "test::has_deadline", nil, nil)
	if err != nil || string(res) != "true" {
		t.Fatalf("got %s, %v; want true", res, err)
	}
}

// TestRequestIDReachesHandler proves the request id travels with the call.
func TestRequestIDReachesHandler(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	ts.rpc.Handle("test::rid", func(ctx context.Context, _ json.RawMessage, _ func(any) error) (any, error) {
		return RequestID(ctx), nil
	})
	c := dial(t, ts.addr, ClientConfig{})
	res, err := c.Call(WithRequestID(testCtx(t), "req-7f3a"), "test::rid", nil, nil)
	if err != nil || string(res) != `"req-7f3a"` {
		t.Fatalf("got %s, %v", res, err)
	}
}

// TestHandlerErrors proves error codes survive the hop, and internal
// detail of other errors does not.
func TestHandlerErrors(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	ts := startServer(t, ServerConfig{Logger: hclog.New(&hclog.LoggerOptions{Output: logs})}, "")
	ts.rpc.Handle("test::wrapped", func(context.Context, json.RawMessage, func(any) error) (any, error) {
		return nil, fmt.Errorf("engine: %w", chat.Errorf(chat.CodeOverloaded, "all sequences busy"))
	})
	ts.rpc.Handle("test::plain", func(context.Context, json.RawMessage, func(any) error) (any, error) {
		return nil, errors.New("open /secret/model.gguf: permission denied")
	})
	ts.rpc.Handle("test::panic", func(context.Context, json.RawMessage, func(any) error) (any, error) {
		panic("boom")
	})
	detailed := &chat.Error{Code: chat.CodeOverloaded, Message: "queue full", Param: "messages", Reason: "queue_full", RetryAfter: 1500 * time.Millisecond}
	ts.rpc.Handle("test::detailed", func(context.Context, json.RawMessage, func(any) error) (any, error) {
		return nil, fmt.Errorf("engine: %w", detailed)
	})
	c := dial(t, ts.addr, ClientConfig{})

	// An error's optional fields cross the hop as they were set.
	_, err := c.Call(testCtx(t), "test::detailed", nil, nil)
	var got *chat.Error
	if !errors.As(err, &got) || got.Code != detailed.Code || got.Param != detailed.Param ||
		got.Reason != detailed.Reason || got.RetryAfter != detailed.RetryAfter {
		t.Errorf("detailed error arrived as %#v, want %#v", got, detailed)
	}

	tests := []struct {
		name, method string
		req          any
		code         chat.ErrorCode
		msg          string
	}{
		{"rpc error", mFail, map[string]string{"Code": "not_found", "Message": "no model x"}, chat.CodeNotFound, "no model x"},
		{"wrapped rpc error", "test::wrapped", nil, chat.CodeOverloaded, "all sequences busy"},
		{"plain error is internal", "test::plain", nil, chat.CodeInternal, "internal error"},
		{"panic is internal", "test::panic", nil, chat.CodeInternal, "internal error"},
		{"unknown method", "test::nope", nil, chat.CodeNotFound, `no method "test::nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Call(testCtx(t), tt.method, tt.req, nil)
			wantCode(t, err, tt.code)
			var e *chat.Error
			if !errors.As(err, &e) || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("message of %v does not contain %q", err, tt.msg)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("internal detail leaked to the caller: %v", err)
			}
		})
	}
	if !strings.Contains(logs.String(), "/secret/model.gguf") {
		t.Error("the server did not log the internal error")
	}
}

// TestServerMaxInFlight proves calls beyond the server's bound fail with
// overloaded rather than queueing.
func TestServerMaxInFlight(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{MaxInFlight: 1}, "")
	c := dial(t, ts.addr, ClientConfig{})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	go c.Call(ctx, mBlock, nil, nil)
	eventually(t, "first call to start", func() bool { return ts.rpc.InFlight() == 1 })
	_, err := c.Call(testCtx(t), mEcho, 1, nil)
	wantCode(t, err, chat.CodeOverloaded)
}

// TestOversizeFrames proves the frame limit is enforced on both sides with
// a clear error.
func TestOversizeFrames(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 2000)

	t.Run("request over the client's limit fails alone", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, ServerConfig{}, "")
		c := dial(t, ts.addr, ClientConfig{MaxFrameBytes: 1024})
		_, err := c.Call(testCtx(t), mEcho, big, nil)
		wantCode(t, err, chat.CodeInvalidArgument)
		if !strings.Contains(err.Error(), "exceeds the limit of 1024 bytes") {
			t.Errorf("unclear error: %v", err)
		}
		if _, err := c.Call(testCtx(t), mEcho, "small", nil); err != nil {
			t.Errorf("connection unusable after a rejected frame: %v", err)
		}
	})
	t.Run("request over the server's limit closes the connection", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, ServerConfig{MaxFrameBytes: 1024}, "")
		c := dial(t, ts.addr, ClientConfig{})
		_, err := c.Call(testCtx(t), mEcho, big, nil)
		wantCode(t, err, chat.CodeUnavailable)
		if !strings.Contains(err.Error(), "size limit") {
			t.Errorf("unclear error: %v", err)
		}
		within(t, "connection to close", c.Done())
	})
	t.Run("result over the server's limit", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, ServerConfig{MaxFrameBytes: 1024}, "")
		c := dial(t, ts.addr, ClientConfig{MaxFrameBytes: 1024})
		ts.rpc.Handle("test::big", func(context.Context, json.RawMessage, func(any) error) (any, error) {
			return big, nil
		})
		ts.rpc.Handle("test::bigchunk", func(_ context.Context, _ json.RawMessage, send func(any) error) (any, error) {
			return nil, send(big)
		})
		for _, m := range []string{"test::big", "test::bigchunk"} {
			_, err := c.Call(testCtx(t), m, nil, nil)
			wantCode(t, err, chat.CodeInvalidArgument)
			if !strings.Contains(err.Error(), "exceeds the limit") {
				t.Errorf("%s: unclear error: %v", m, err)
			}
		}
	})
	t.Run("message over the client's limit closes the connection", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, ServerConfig{}, "")
		c := dial(t, ts.addr, ClientConfig{MaxFrameBytes: 1024})
		_, err := c.Call(testCtx(t), mStream, streamReq{Count: 1000}, nil)
		// A stream this long is batched into messages above 1 KiB.
		wantCode(t, err, chat.CodeUnavailable)
		if !strings.Contains(err.Error(), "frame limit") {
			t.Errorf("unclear error: %v", err)
		}
	})
}

// TestTokenAuth proves peers are admitted by the shared token, that a wrong
// or missing one gets 401, and that the log never shows the token.
func TestTokenAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, server, client string
		ok                   bool
		logged               string
	}{
		{"no auth configured", "", "", true, ""},
		{"right token", "s3cret-token", "s3cret-token", true, ""},
		{"wrong token", "s3cret-token", "guessed-token", false, "wrong token"},
		{"missing token", "s3cret-token", "", false, "missing token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logs := &syncBuffer{}
			ts := startServer(t, ServerConfig{Token: tt.server, Logger: hclog.New(&hclog.LoggerOptions{Output: logs})}, "")
			ctx := testCtx(t)
			c, err := Dial(ctx, ts.addr, ClientConfig{Token: tt.client})
			if tt.ok {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				defer c.Close()
				if _, err := c.Call(ctx, mEcho, 1, nil); err != nil {
					t.Fatalf("call: %v", err)
				}
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded with a bad token")
			}
			wantCode(t, err, chat.CodeUnavailable)
			if !strings.Contains(err.Error(), "401") {
				t.Errorf("dial error does not say 401: %v", err)
			}

			// The plain HTTP answer, as any client sees it.
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ts.addr+PathRPC, nil)
			if tt.client != "" {
				req.Header.Set("Authorization", "Bearer "+tt.client)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", resp.StatusCode)
			}
			out := logs.String()
			if !strings.Contains(out, tt.logged) {
				t.Errorf("log lacks %q:\n%s", tt.logged, out)
			}
			if strings.Contains(out, "s3cret") || (tt.client != "" && strings.Contains(out, tt.client)) {
				t.Errorf("log contains a token:\n%s", out)
			}
		})
	}
}

// TestTLS proves Dial speaks wss:// with a config from ClientTLSConfig.
func TestTLS(t *testing.T) {
	t.Parallel()
	s := NewServer(ServerConfig{})
	registerTestHandlers(s)
	hs := httptest.NewUnstartedServer(s)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshake below is expected
	hs.StartTLS()
	t.Cleanup(hs.Close)
	t.Cleanup(func() { _ = s.Shutdown(testCtx(t)) })

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	// httptest's certificate names example.com: the name, not the address
	// dialled, is checked.
	tlsCfg, err := ClientTLSConfig(caFile, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, hs.Listener.Addr().String(), ClientConfig{TLS: tlsCfg})
	if res, err := c.Call(testCtx(t), mEcho, "over tls", nil); err != nil || string(res) != `"over tls"` {
		t.Fatalf("got %s, %v", res, err)
	}

	// A certificate of the right CA for another name (another tier's) fails.
	other, err := ClientTLSConfig(caFile, "slm-inference")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(testCtx(t), hs.Listener.Addr().String(), ClientConfig{TLS: other})
	wantCode(t, err, chat.CodeUnavailable)

	// Without the CA the handshake fails.
	_, err = Dial(testCtx(t), hs.Listener.Addr().String(), ClientConfig{TLS: &tls.Config{MinVersion: tls.VersionTLS12}})
	wantCode(t, err, chat.CodeUnavailable)
}

// TestPeerKilledFailsPendingCalls proves that when the server dies every
// pending call fails promptly with unavailable.
func TestPeerKilledFailsPendingCalls(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	c := dial(t, ts.addr, ClientConfig{})

	const pending = 5
	errs := make(chan error, pending)
	for range pending {
		go func() {
			_, err := c.Call(testCtx(t), mBlock, nil, nil)
			errs <- err
		}()
	}
	eventually(t, "calls to reach the server", func() bool { return ts.rpc.InFlight() == pending })
	ts.kill()
	for range pending {
		wantCode(t, within(t, "pending call to fail", errs), chat.CodeUnavailable)
	}
	within(t, "Done", c.Done())
	_, err := c.Call(testCtx(t), mEcho, 1, nil)
	wantCode(t, err, chat.CodeUnavailable)
}

// blackHole is a TCP proxy that can go silent without closing anything, like
// a peer whose host vanished from the network.
type blackHole struct {
	ln     net.Listener
	silent atomic.Bool
}

func newBlackHole(t *testing.T, target string) *blackHole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bh := &blackHole{ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				return
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			go bh.pipe(out, in)
			go bh.pipe(in, out)
		}
	}()
	return bh
}

func (bh *blackHole) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if bh.silent.Load() {
			continue // swallow: nothing arrives, nothing closes
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// TestKeepaliveDetectsSilentPeer proves a peer that stops answering
// without closing the connection is detected by ping/pong, and its pending
// calls fail with unavailable.
func TestKeepaliveDetectsSilentPeer(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	bh := newBlackHole(t, ts.addr)
	// A pong timeout well above a loaded machine's scheduling delays: a
	// healthy connection must not be taken for a silent one.
	c := dial(t, bh.ln.Addr().String(), ClientConfig{PingInterval: 100 * time.Millisecond, PongTimeout: 500 * time.Millisecond})

	errs := make(chan error, 1)
	go func() {
		_, err := c.Call(testCtx(t), mBlock, nil, nil)
		errs <- err
	}()
	eventually(t, "call to reach the server", func() bool { return ts.rpc.InFlight() == 1 })
	// A connection that only idles stays up across several ping intervals
	// and pong timeouts.
	time.Sleep(1200 * time.Millisecond)
	if err := c.Err(); err != nil {
		t.Fatalf("healthy idle connection closed: %v", err)
	}
	bh.silent.Store(true)
	err := within(t, "keepalive to fail the call", errs)
	wantCode(t, err, chat.CodeUnavailable)
	if !strings.Contains(err.Error(), "keepalive") {
		t.Errorf("unclear error: %v", err)
	}
}

// TestSlowConsumerDoesNotStallOtherCalls proves a call whose consumer stops
// reading fails with overloaded once its buffer is full, is canceled on the
// server, and meanwhile other calls on the connection go on.
func TestSlowConsumerDoesNotStallOtherCalls(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	handlerCanceled := make(chan struct{})
	ts.rpc.Handle("test::flood", func(ctx context.Context, _ json.RawMessage, send func(any) error) (any, error) {
		for i := 0; i < 100000 && send(i) == nil; i++ {
		}
		<-ctx.Done()
		close(handlerCanceled)
		return nil, ctx.Err()
	})
	c := dial(t, ts.addr, ClientConfig{ChunkBuffer: 8})

	release := make(chan struct{})
	slowErr := make(chan error, 1)
	go func() {
		_, err := c.Call(testCtx(t), "test::flood", nil, func(json.RawMessage) error {
			<-release // a consumer that stopped reading
			return nil
		})
		slowErr <- err
	}()
	within(t, "server to cancel the flooding handler", handlerCanceled)

	// The stuck consumer holds nothing up. (Streams stay within the small
	// ChunkBuffer of this connection.)
	for i := range 20 {
		if _, err := c.Call(testCtx(t), mStream, streamReq{Count: 5}, func(json.RawMessage) error { return nil }); err != nil {
			t.Fatalf("call %d behind the slow consumer: %v", i, err)
		}
	}
	close(release)
	wantCode(t, within(t, "slow call to fail", slowErr), chat.CodeOverloaded)
}

// TestGracefulShutdown proves Shutdown refuses new calls but lets an
// in-flight call finish and deliver its result.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	release := make(chan struct{})
	ts.rpc.Handle("test::slow", func(_ context.Context, _ json.RawMessage, send func(any) error) (any, error) {
		<-release
		if err := send("last words"); err != nil {
			return nil, err
		}
		return "finished", nil
	})
	c := dial(t, ts.addr, ClientConfig{})

	type outcome struct {
		res    json.RawMessage
		chunks int
		err    error
	}
	inflight := make(chan outcome, 1)
	go func() {
		var o outcome
		o.res, o.err = c.Call(testCtx(t), "test::slow", nil, func(json.RawMessage) error { o.chunks++; return nil })
		inflight <- o
	}()
	eventually(t, "call to start", func() bool { return ts.rpc.InFlight() == 1 })

	shutdown := make(chan error, 1)
	go func() { shutdown <- ts.rpc.Shutdown(testCtx(t)) }()
	eventually(t, "new calls to be refused", func() bool {
		_, err := c.Call(testCtx(t), mEcho, 1, nil)
		return chat.Code(err) == chat.CodeUnavailable
	})
	close(release)

	o := within(t, "in-flight call", inflight)
	if o.err != nil || string(o.res) != `"finished"` || o.chunks != 1 {
		t.Fatalf("in-flight call: %s, %d chunks, %v", o.res, o.chunks, o.err)
	}
	if err := within(t, "Shutdown", shutdown); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	within(t, "connection to close", c.Done())
}

// TestShutdownBound proves Shutdown gives up at its context's end, closing
// connections and canceling handlers still running.
func TestShutdownBound(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	c := dial(t, ts.addr, ClientConfig{})
	callErr := make(chan error, 1)
	go func() {
		_, err := c.Call(testCtx(t), mBlock, nil, nil)
		callErr <- err
	}()
	eventually(t, "call to start", func() bool { return ts.rpc.InFlight() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.rpc.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want deadline exceeded", err)
	}
	wantCode(t, within(t, "call", callErr), chat.CodeUnavailable)
	eventually(t, "handler to be canceled", func() bool { return ts.rpc.InFlight() == 0 })
}

// TestShutdownWaitsForPeerClose proves Shutdown returns only once the peer
// has answered the close frame, that is, once it has read every frame
// before it. The process exits after Shutdown, and exiting closes the
// sockets: a socket closed while the peer still sends (a new call, a ping)
// answers with a reset, and the peer then fails the calls whose results it
// had not yet read. (Seen end to end: a stream cut off by a caller's
// graceful restart.)
func TestShutdownWaitsForPeerClose(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{}, "")
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ts.addr+PathRPC, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.Close()
	eventually(t, "connection to register", func() bool { return ts.openConns() == 1 })

	shutdown := make(chan error, 1)
	go func() { shutdown <- ts.rpc.Shutdown(testCtx(t)) }()
	// The peer is slow to read: Shutdown waits for it (up to closeWait).
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) before the peer read its close frame", err)
	case <-time.After(closeWait / 4):
	}
	// The peer reads on, meets the close frame, and gorilla answers it.
	for {
		if _, _, err := ws.NextReader(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("peer read: %v, want a close frame", err)
			}
			break
		}
	}
	if err := within(t, "Shutdown after the peer's close", shutdown); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// testServer is a real HTTP server on loopback with an rpc.Server at
// PathRPC, whose TCP connections a test can cut abruptly.
type testServer struct {
	rpc  *Server
	http *httptest.Server
	addr string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// startServer serves an rpc.Server built from cfg on addr ("" for any free
// loopback port), with the methods of registerTestHandlers.
func startServer(t testing.TB, cfg ServerConfig, addr string) *testServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ts := &testServer{rpc: NewServer(cfg), conns: make(map[net.Conn]struct{})}
	registerTestHandlers(ts.rpc)
	mux := http.NewServeMux()
	mux.Handle(PathRPC, ts.rpc)
	ts.http = httptest.NewUnstartedServer(mux)
	ts.http.Listener.Close()
	ts.http.Listener = ln
	ts.http.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			ts.mu.Lock()
			ts.conns[c] = struct{}{}
			ts.mu.Unlock()
		}
	}
	ts.http.Start()
	ts.addr = ln.Addr().String()
	t.Cleanup(ts.kill)
	return ts
}

// kill stops the server the hard way: no close frames, no draining, as if
// the process died.
func (ts *testServer) kill() {
	ts.http.Listener.Close()
	ts.mu.Lock()
	for c := range ts.conns {
		c.Close()
	}
	ts.conns = make(map[net.Conn]struct{})
	ts.mu.Unlock()
	ts.http.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = ts.rpc.Shutdown(ctx) // cancels any handler still running
}

// openConns is how many RPC connections the server holds.
func (ts *testServer) openConns() int {
	ts.rpc.mu.Lock()
	defer ts.rpc.mu.Unlock()
	return len(ts.rpc.conns)
}

// Methods every test server serves.
const (
	mEcho   = "test::echo"   // returns its payload
	mStream = "test::stream" // streams {"n":0..Count-1}, returns {"count":Count}
	mBlock  = "test::block"  // waits until its context ends, returns ctx.Err()
	mFail   = "test::fail"   // returns the *chat.Error described by its payload
)

type streamReq struct {
	Count int `json:"count"`
}

type streamChunk struct {
	N int `json:"n"`
}

func registerTestHandlers(s *Server) {
	s.Handle(mEcho, func(_ context.Context, p json.RawMessage, _ func(any) error) (any, error) {
		return p, nil
	})
	s.Handle(mStream, func(_ context.Context, p json.RawMessage, send func(any) error) (any, error) {
		var req streamReq
		if err := json.Unmarshal(p, &req); err != nil {
			return nil, chat.Errorf(chat.CodeInvalidArgument, "bad request: %v", err)
		}
		for i := range req.Count {
			if err := send(streamChunk{N: i}); err != nil {
				return nil, err
			}
		}
		return req, nil
	})
	s.Handle(mBlock, func(ctx context.Context, _ json.RawMessage, _ func(any) error) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	s.Handle(mFail, func(_ context.Context, p json.RawMessage, _ func(any) error) (any, error) {
		var e struct{ Code, Message string }
		_ = json.Unmarshal(p, &e)
		return nil, &chat.Error{Code: chat.ErrorCode(e.Code), Message: e.Message}
	})
}

// dial connects to ts and closes the connection when the test ends.
func dial(t testing.TB, addr string, cfg ClientConfig) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testCtx is a context for one call of a test: generous, so that only a
// hang makes it expire.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 10ms for up to 10s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// within fails the test unless ch yields within 10s.
func within[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func wantCode(t testing.TB, err error, want chat.ErrorCode) {
	t.Helper()
	if got := chat.Code(err); got != want {
		t.Fatalf("error %v: code %q, want %q", err, got, want)
	}
}

// syncBuffer is a log destination tests can read while servers write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var errTest = errors.New("test error")

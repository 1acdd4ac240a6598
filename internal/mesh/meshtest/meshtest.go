// Package meshtest serves one tier of the mesh as an in-process fake, on a
// real rpc.Server on loopback, so that the tier in front of it can be
// tested with its real server, pool and clients. Fakes stand in only for
// the other tier; the real tiers together are tested end to end (e2e).
package meshtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Serve serves h on a loopback port until the test ends and returns its
// address (host:port). h is usually a service's own http.Handler, or an
// rpc.Server (see ServeRPC).
func Serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

// ServeRPC serves an rpc.Server, with the methods register puts on it, at
// rpc.PathRPC on a loopback port until the test ends, and returns its
// address.
func ServeRPC(t testing.TB, register func(*rpc.Server)) string {
	t.Helper()
	srv := rpc.NewServer(rpc.ServerConfig{})
	register(srv)
	mux := http.NewServeMux()
	mux.Handle(rpc.PathRPC, srv)
	addr := Serve(t, mux)
	t.Cleanup(func() {
		// Hijacked connections are the rpc.Server's to close; an ended
		// context closes them at once and cancels what still runs.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = srv.Shutdown(ctx)
	})
	return addr
}

// Pool returns a pool for service over addrs (static discovery), closed when
// the test ends.
func Pool(t testing.TB, service string, cfg rpc.PoolConfig, addrs ...string) *rpc.Pool {
	t.Helper()
	res := discovery.NewStatic()
	res.Set(service, addrs...)
	p := rpc.NewPool(res, service, cfg)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Generator serves a generation method: RunInference or GetResponse.
type Generator func(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error)

// Reply is a Generator that sends parts, one delta each, and then a result
// naming model that counts one token per part.
func Reply(model string, parts ...string) Generator {
	return func(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
		for _, p := range parts {
			if err := send(chat.Delta{Content: p}); err != nil {
				return chat.Result{}, err
			}
		}
		return chat.Result{FinishReason: chat.FinishStop, PromptTokens: len(req.Messages), CompletionTokens: len(parts), Model: model}, nil
	}
}

// Fail is a Generator that sends parts and then fails with err.
func Fail(err error, parts ...string) Generator {
	return func(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
		for _, p := range parts {
			if err := send(chat.Delta{Content: p}); err != nil {
				return chat.Result{}, err
			}
		}
		return chat.Result{}, err
	}
}

// recorder counts and keeps the requests a fake received.
type recorder struct {
	mu   sync.Mutex
	reqs []chat.Request
}

func (r *recorder) record(req chat.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
}

// Requests returns the generation requests received so far, in order.
func (r *recorder) Requests() []chat.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]chat.Request(nil), r.reqs...)
}

// Calls is the number of generation calls received so far.
func (r *recorder) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// Inference is a fake inference tier. Set its fields before serving it.
type Inference struct {
	// Model is what Info reports.
	Model string
	// Generate serves RunInference; nil replies "Hello world" in two
	// deltas.
	Generate Generator
	// InfoErr, when set, is what Info fails with (a loading instance:
	// chat.CodeUnavailable).
	InfoErr error
	// Loaded, when set, holds Info back as a loading instance's until it
	// is closed: Info fails with chat.CodeUnavailable before.
	Loaded <-chan struct{}
	recorder
}

var _ mesh.InferenceService = (*Inference)(nil)

// RunInference implements mesh.InferenceService.
func (f *Inference) RunInference(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
	f.record(req)
	if f.Generate == nil {
		return Reply(f.Model, "Hello", " world")(ctx, req, send)
	}
	return f.Generate(ctx, req, send)
}

// Info implements mesh.InferenceService.
func (f *Inference) Info(context.Context) (mesh.InferenceInfo, error) {
	if f.InfoErr != nil {
		return mesh.InferenceInfo{}, f.InfoErr
	}
	if f.Loaded != nil {
		select {
		case <-f.Loaded:
		default:
			return mesh.InferenceInfo{}, chat.Errorf(chat.CodeUnavailable, "the model is still loading")
		}
	}
	return mesh.InferenceInfo{Model: f.Model, Slots: 1}, nil
}

// Serve serves f on a loopback port until the test ends and returns its
// address.
func (f *Inference) Serve(t testing.TB) string {
	return ServeRPC(t, func(srv *rpc.Server) { mesh.RegisterInference(srv, f) })
}

// Caller is a fake caller tier. Set its fields before serving it.
type Caller struct {
	// Generate serves GetResponse; nil replies "Hello world" from model
	// "fake" in two deltas.
	Generate Generator
	// Report is what Status returns; StatusErr, when set, makes Status
	// fail with it instead. StatusFunc, when set, serves Status instead of
	// both.
	Report     mesh.CallerStatus
	StatusErr  error
	StatusFunc func(ctx context.Context) (mesh.CallerStatus, error)
	recorder

	statusMu    sync.Mutex
	statusCalls int
}

var _ mesh.CallerService = (*Caller)(nil)

// GetResponse implements mesh.CallerService.
func (f *Caller) GetResponse(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
	f.record(req)
	if f.Generate == nil {
		return Reply("fake", "Hello", " world")(ctx, req, send)
	}
	return f.Generate(ctx, req, send)
}

// Status implements mesh.CallerService.
func (f *Caller) Status(ctx context.Context) (mesh.CallerStatus, error) {
	f.statusMu.Lock()
	f.statusCalls++
	f.statusMu.Unlock()
	if f.StatusFunc != nil {
		return f.StatusFunc(ctx)
	}
	return f.Report, f.StatusErr
}

// StatusCalls is the number of Status calls received so far.
func (f *Caller) StatusCalls() int {
	f.statusMu.Lock()
	defer f.statusMu.Unlock()
	return f.statusCalls
}

// Serve serves f on a loopback port until the test ends and returns its
// address.
func (f *Caller) Serve(t testing.TB) string {
	return ServeRPC(t, func(srv *rpc.Server) { mesh.RegisterCaller(srv, f) })
}

// Eventually polls cond every 10ms until it holds, for up to ten seconds,
// and fails the test with what it waited for if it never does.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
)

const testService = "slm-test"

// newTestPool follows a static resolver, retries once as the caller's pool
// does, and closes when the test ends.
func newTestPool(t *testing.T, addrs ...string) (*Pool, *discovery.Static) {
	t.Helper()
	return newTestPoolRetries(t, 1, addrs...)
}

func newTestPoolRetries(t *testing.T, retries int, addrs ...string) (*Pool, *discovery.Static) {
	t.Helper()
	res := discovery.NewStatic()
	res.Set(testService, addrs...)
	p := NewPool(res, testService, PoolConfig{
		ConnectWait: 200 * time.Millisecond,
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  100 * time.Millisecond,
		Retries:     retries,
	})
	t.Cleanup(func() { p.Close() })
	return p, res
}

// countingHandler counts its calls and then behaves like h.
func countingHandler(n *atomic.Int64, h Handler) Handler {
	return func(ctx context.Context, p json.RawMessage, send func(any) error) (any, error) {
		n.Add(1)
		return h(ctx, p, send)
	}
}

// TestPoolPicksLeastInFlight proves calls go to the instance with the fewest
// calls in flight.
func TestPoolPicksLeastInFlight(t *testing.T) {
	t.Parallel()
	a := startServer(t, ServerConfig{}, "")
	b := startServer(t, ServerConfig{}, "")
	p, _ := newTestPool(t, a.addr, b.addr)
	eventually(t, "both instances connected", func() bool { return p.Healthy() == 2 })

	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	const calls = 6
	errs := make(chan error, calls)
	for i := range calls {
		go func() {
			_, err := p.Call(ctx, mBlock, nil, nil)
			errs <- err
		}()
		// One at a time, so each pick sees the previous call.
		eventually(t, "call to reach a server", func() bool { return a.rpc.InFlight()+b.rpc.InFlight() == i+1 })
	}
	if a.rpc.InFlight() != calls/2 || b.rpc.InFlight() != calls/2 {
		t.Errorf("in flight: a=%d b=%d, want %d each", a.rpc.InFlight(), b.rpc.InFlight(), calls/2)
	}
	total := 0
	for _, in := range p.Instances() {
		total += in.InFlight
	}
	if total != calls {
		t.Errorf("Instances() counts %d calls in flight, want %d", total, calls)
	}
	cancel()
	for range calls {
		wantCode(t, within(t, "call", errs), chat.CodeCanceled)
	}
}

// TestPoolRetriesBeforeFirstChunk proves a call that fails with
// unavailable before any chunk is retried once on another instance.
func TestPoolRetriesBeforeFirstChunk(t *testing.T) {
	t.Parallel()
	bad := startServer(t, ServerConfig{}, "")
	good := startServer(t, ServerConfig{}, "")
	var badCalls, goodCalls atomic.Int64
	bad.rpc.Handle("test::work", countingHandler(&badCalls, func(context.Context, json.RawMessage, func(any) error) (any, error) {
		return nil, chat.Errorf(chat.CodeUnavailable, "model not loaded yet")
	}))
	good.rpc.Handle("test::work", countingHandler(&goodCalls, func(_ context.Context, _ json.RawMessage, send func(any) error) (any, error) {
		return "ok", send("tok")
	}))
	p, _ := newTestPool(t, bad.addr, good.addr)
	eventually(t, "both instances connected", func() bool { return p.Healthy() == 2 })

	const calls = 6
	for i := range calls {
		chunks := 0
		res, err := p.Call(testCtx(t), "test::work", i, func(json.RawMessage) error { chunks++; return nil })
		if err != nil || string(res) != `"ok"` || chunks != 1 {
			t.Fatalf("call %d: %s, %d chunks, %v", i, res, chunks, err)
		}
	}
	if badCalls.Load() == 0 {
		t.Error("no call went to the failing instance first; the test proved nothing")
	}
	if goodCalls.Load() != calls {
		t.Errorf("good instance served %d calls, want %d", goodCalls.Load(), calls)
	}
}

// TestPoolRetries proves a call that every instance refuses makes at most
// Retries+1 attempts, each on an instance not tried yet, and returns the
// first refusal.
func TestPoolRetries(t *testing.T) {
	t.Parallel()
	const instances = 3
	var served atomic.Int64
	var addrs []string
	for i := range instances {
		ts := startServer(t, ServerConfig{}, "")
		ts.rpc.Handle("test::work", countingHandler(&served, func(context.Context, json.RawMessage, func(any) error) (any, error) {
			return nil, &chat.Error{Code: chat.CodeOverloaded, Message: fmt.Sprintf("instance %d is full", i)}
		}))
		addrs = append(addrs, ts.addr)
	}
	for _, tt := range []struct{ retries, attempts int }{{0, 1}, {1, 2}, {2, 3}, {5, instances}} {
		t.Run(fmt.Sprintf("retries %d", tt.retries), func(t *testing.T) {
			p, _ := newTestPoolRetries(t, tt.retries, addrs...)
			eventually(t, "every instance connected", func() bool { return p.Healthy() == instances })
			before := served.Load()
			_, err := p.Call(testCtx(t), "test::work", nil, nil)
			wantCode(t, err, chat.CodeOverloaded)
			if got := served.Load() - before; got != int64(tt.attempts) {
				t.Errorf("%d attempts, want %d", got, tt.attempts)
			}
		})
	}
}

// TestPoolDoesNotRetryAfterChunk proves a call that fails after a chunk
// reached the caller is not retried.
func TestPoolDoesNotRetryAfterChunk(t *testing.T) {
	t.Parallel()
	var served atomic.Int64
	midStream := countingHandler(&served, func(_ context.Context, _ json.RawMessage, send func(any) error) (any, error) {
		if err := send("partial"); err != nil {
			return nil, err
		}
		return nil, chat.Errorf(chat.CodeUnavailable, "lost the model mid-stream")
	})
	a := startServer(t, ServerConfig{}, "")
	b := startServer(t, ServerConfig{}, "")
	a.rpc.Handle("test::work", midStream)
	b.rpc.Handle("test::work", midStream)
	p, _ := newTestPool(t, a.addr, b.addr)
	eventually(t, "both instances connected", func() bool { return p.Healthy() == 2 })

	const calls = 4
	for i := range calls {
		chunks := 0
		_, err := p.Call(testCtx(t), "test::work", i, func(json.RawMessage) error { chunks++; return nil })
		wantCode(t, err, chat.CodeUnavailable)
		if chunks != 1 {
			t.Errorf("call %d saw %d chunks, want 1", i, chunks)
		}
	}
	if served.Load() != calls {
		t.Errorf("handlers ran %d times for %d calls: a call was retried after a chunk", served.Load(), calls)
	}
}

// TestPoolWithoutInstances proves a call fails with unavailable when no
// instance is connected, after a short bounded wait.
func TestPoolWithoutInstances(t *testing.T) {
	t.Parallel()
	ln := startServer(t, ServerConfig{}, "")
	deadAddr := ln.addr
	ln.kill() // a port where nothing listens

	for _, addrs := range [][]string{nil, {deadAddr}} {
		p, _ := newTestPool(t, addrs...)
		_, err := p.Call(testCtx(t), mEcho, 1, nil)
		wantCode(t, err, chat.CodeUnavailable)
		if p.Healthy() != 0 {
			t.Errorf("Healthy = %d", p.Healthy())
		}
	}
}

// TestPoolReconnects proves the pool fails calls fast while its only
// instance is down and reconnects when a server is back on the address.
func TestPoolReconnects(t *testing.T) {
	t.Parallel()
	first := startServer(t, ServerConfig{}, "")
	addr := first.addr
	p, _ := newTestPool(t, addr)
	if _, err := p.Call(testCtx(t), mEcho, 1, nil); err != nil {
		t.Fatal(err)
	}

	first.kill()
	eventually(t, "pool to notice the loss", func() bool { return p.Healthy() == 0 })
	_, err := p.Call(testCtx(t), mEcho, 1, nil)
	wantCode(t, err, chat.CodeUnavailable)

	startServer(t, ServerConfig{}, addr)
	eventually(t, "pool to reconnect", func() bool {
		_, err := p.Call(testCtx(t), mEcho, 1, nil)
		return err == nil
	})
	if st := p.Instances(); len(st) != 1 || !st[0].Connected || st[0].Addr != addr {
		t.Errorf("Instances() = %+v", st)
	}
}

// TestPoolDrainsRemovedInstance proves an instance that leaves the set gets
// no new calls, finishes its calls in flight, and is then disconnected.
func TestPoolDrainsRemovedInstance(t *testing.T) {
	t.Parallel()
	old := startServer(t, ServerConfig{}, "")
	replacement := startServer(t, ServerConfig{}, "")
	release := make(chan struct{})
	old.rpc.Handle("test::work", func(context.Context, json.RawMessage, func(any) error) (any, error) {
		<-release
		return "old", nil
	})
	var newCalls atomic.Int64
	replacement.rpc.Handle("test::work", countingHandler(&newCalls, func(context.Context, json.RawMessage, func(any) error) (any, error) {
		return "new", nil
	}))
	p, res := newTestPool(t, old.addr)

	inflight := make(chan error, 1)
	go func() {
		out, err := p.Call(testCtx(t), "test::work", nil, nil)
		if err == nil && string(out) != `"old"` {
			t.Errorf("in-flight call got %s", out)
		}
		inflight <- err
	}()
	eventually(t, "call to reach the old instance", func() bool { return old.rpc.InFlight() == 1 })

	res.Set(testService, replacement.addr)
	eventually(t, "pool to route to the replacement", func() bool {
		st := p.Instances()
		return len(st) == 1 && st[0].Addr == replacement.addr && st[0].Connected
	})
	for range 3 {
		if out, err := p.Call(testCtx(t), "test::work", nil, nil); err != nil || string(out) != `"new"` {
			t.Fatalf("new call: %s, %v", out, err)
		}
	}
	if old.openConns() != 1 {
		t.Errorf("old instance has %d connections while draining, want 1", old.openConns())
	}
	close(release)
	if err := within(t, "in-flight call", inflight); err != nil {
		t.Errorf("in-flight call on the drained instance: %v", err)
	}
	eventually(t, "drained connection to close", func() bool { return old.openConns() == 0 })
	if newCalls.Load() != 3 {
		t.Errorf("replacement served %d calls, want 3", newCalls.Load())
	}
}

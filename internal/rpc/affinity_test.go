package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/discovery"
)

// mWho answers with the address of the server that served it.
const mWho = "test::who"

// startWhoServers starts n servers that answer mWho with their address.
func startWhoServers(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		ts := startServer(t, ServerConfig{}, "")
		addr := ts.addr
		ts.rpc.Handle(mWho, func(context.Context, json.RawMessage, func(any) error) (any, error) { return addr, nil })
		addrs = append(addrs, addr)
	}
	return addrs
}

// who calls mWho with key's affinity and returns the server that answered.
func who(t *testing.T, p *Pool, key string) string {
	t.Helper()
	res, err := p.Call(WithAffinity(testCtx(t), key), mWho, nil, nil)
	if err != nil {
		t.Fatalf("call with key %q: %v", key, err)
	}
	var addr string
	if err := json.Unmarshal(res, &addr); err != nil {
		t.Fatal(err)
	}
	return addr
}

// firstChoice is the instance rendezvous hashing gives key among ids.
func firstChoice(key string, ids []string) string {
	best, bestW := "", uint64(0)
	for _, id := range ids {
		if w := rendezvous(key, id); best == "" || w > bestW {
			best, bestW = id, w
		}
	}
	return best
}

// TestPoolAffinity: calls with one key go to one instance, its rendezvous
// choice; keys spread over every instance; when an instance leaves, only
// its keys move.
func TestPoolAffinity(t *testing.T) {
	t.Parallel()
	addrs := startWhoServers(t, 3)
	p, res := newTestPool(t, addrs...)
	eventually(t, "all instances connected", func() bool { return p.Healthy() == 3 })

	const keys = 60
	got := map[string]string{}
	perInstance := map[string]int{}
	for i := range keys {
		key := fmt.Sprintf("conversation-%d", i)
		a := who(t, p, key)
		if b := who(t, p, key); a != b {
			t.Fatalf("key %q went to %s, then to %s", key, a, b)
		}
		if want := firstChoice(key, addrs); a != want { // static discovery: id = address
			t.Errorf("key %q went to %s, want its rendezvous choice %s", key, a, want)
		}
		got[key] = a
		perInstance[a]++
	}
	for _, a := range addrs {
		if perInstance[a] < keys/3/2 {
			t.Errorf("keys per instance %v: %s got fewer than half its share", perInstance, a)
		}
	}
	if routed, spilled := p.AffinityStats(); routed != 2*keys || spilled != 0 {
		t.Errorf("AffinityStats = %d routed, %d spilled; want %d, 0 (one call at a time never reaches the bound)", routed, spilled, 2*keys)
	}

	res.Set(testService, addrs[:2]...)
	eventually(t, "the third instance gone", func() bool { return len(p.Instances()) == 2 })
	moved := 0
	for key, was := range got {
		now := who(t, p, key)
		switch {
		case was != addrs[2] && now != was:
			t.Errorf("key %q moved from %s to %s though its instance stayed", key, was, now)
		case was == addrs[2]:
			moved++
		}
	}
	if moved == 0 {
		t.Error("no key was on the removed instance; the test proved nothing")
	}
}

// TestPoolAffinityLoadBound: calls with one hot key fill its instance up to
// the bound (1.25 × the mean in flight + 1), then spill to the key's
// second choice; calls without a key still go to the least busy.
func TestPoolAffinityLoadBound(t *testing.T) {
	t.Parallel()
	servers := []*testServer{startServer(t, ServerConfig{}, ""), startServer(t, ServerConfig{}, ""), startServer(t, ServerConfig{}, "")}
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.addr)
	}
	p, _ := newTestPool(t, addrs...)
	eventually(t, "all instances connected", func() bool { return p.Healthy() == 3 })

	const key = "hot"
	first := firstChoice(key, addrs)
	var rest []string
	for _, a := range addrs {
		if a != first {
			rest = append(rest, a)
		}
	}
	second := firstChoice(key, rest)
	inFlight := func(addr string) int {
		for _, s := range servers {
			if s.addr == addr {
				return s.rpc.InFlight()
			}
		}
		return -1
	}

	ctx, cancel := context.WithCancel(WithAffinity(testCtx(t), key))
	defer cancel()
	errs := make(chan error, 4)
	call := func(ctx context.Context, n int) {
		go func() {
			_, err := p.Call(ctx, mBlock, nil, nil)
			errs <- err
		}()
		eventually(t, "call to reach a server", func() bool {
			total := 0
			for _, s := range servers {
				total += s.rpc.InFlight()
			}
			return total == n
		})
	}
	// In flight before each call → bound: 0 → 1, 1 → 1.42, 2 → 1.83.
	call(ctx, 1)
	call(ctx, 2)
	if got := inFlight(first); got != 2 {
		t.Fatalf("after two calls %d in flight on the key's instance, want 2", got)
	}
	call(ctx, 3)
	if a, b := inFlight(first), inFlight(second); a != 2 || b != 1 {
		t.Errorf("after three calls: %d on the first choice, %d on the second; want 2 and 1", a, b)
	}
	if _, spilled := p.AffinityStats(); spilled != 1 {
		t.Errorf("%d calls spilled, want 1", spilled)
	}
	// Without a key: the least busy, the one instance with nothing.
	plain, cancelPlain := context.WithCancel(testCtx(t))
	defer cancelPlain()
	call(plain, 4)
	third := rest[0]
	if third == second {
		third = rest[1]
	}
	if got := inFlight(third); got != 1 {
		t.Errorf("a call without a key: %d in flight on the idle instance, want 1", got)
	}
	cancel()
	cancelPlain()
	for range 4 {
		wantCode(t, within(t, "call", errs), CodeCanceled)
	}
}

// TestPoolAffinityCapacity: with capacities known, a key's calls stay on
// its instance while it has room (3 here), spill to the next with room,
// and only when every instance is full does the load bound choose. The
// load bound alone would have sent the fifth call to the full first
// choice (4 and 1).
func TestPoolAffinityCapacity(t *testing.T) {
	t.Parallel()
	servers := []*testServer{startServer(t, ServerConfig{}, ""), startServer(t, ServerConfig{}, "")}
	addrs := []string{servers[0].addr, servers[1].addr}
	res := discovery.NewStatic()
	res.Set(testService, addrs...)
	var asked atomic.Int32
	p := NewPool(res, testService, PoolConfig{
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
		// Each instance answers over its new connection; the first
		// question fails, as it does while an instance loads its model,
		// and is asked again.
		Capacity: func(ctx context.Context, c *Conn) (int, error) {
			if asked.Add(1) == 1 {
				return 0, Errorf(CodeUnavailable, "loading")
			}
			raw, err := c.Call(ctx, mEcho, 3, nil)
			if err != nil {
				return 0, err
			}
			var n int
			err = json.Unmarshal(raw, &n)
			return n, err
		},
	})
	t.Cleanup(func() { p.Close() })
	eventually(t, "every instance's capacity known", func() bool {
		in := p.Instances()
		return len(in) == 2 && in[0].Capacity == 3 && in[1].Capacity == 3
	})
	if n := asked.Load(); n != 3 {
		t.Errorf("capacity asked %d times, want 3 (once per instance, once more after the failure)", n)
	}

	const key = "hot"
	first := servers[0]
	second := servers[1]
	if firstChoice(key, addrs) != first.addr {
		first, second = second, first
	}
	ctx, cancel := context.WithCancel(WithAffinity(testCtx(t), key))
	defer cancel()
	errs := make(chan error, 7)
	for n := 1; n <= 7; n++ {
		go func() {
			_, err := p.Call(ctx, mBlock, nil, nil)
			errs <- err
		}()
		eventually(t, "call to reach a server", func() bool { return first.rpc.InFlight()+second.rpc.InFlight() == n })
		want := map[int][2]int{3: {3, 0}, 5: {3, 2}, 7: {4, 3}}
		if w, ok := want[n]; ok {
			if a, b := first.rpc.InFlight(), second.rpc.InFlight(); a != w[0] || b != w[1] {
				t.Errorf("after %d calls: %d on the first choice, %d on the second; want %d and %d", n, a, b, w[0], w[1])
			}
		}
	}
	if routed, spilled := p.AffinityStats(); routed != 7 || spilled != 3 {
		t.Errorf("AffinityStats = %d routed, %d spilled; want 7, 3", routed, spilled)
	}
	cancel()
	for range 7 {
		wantCode(t, within(t, "call", errs), CodeCanceled)
	}
}

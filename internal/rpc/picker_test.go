package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
)

// mWho answers with the address of the server that served it.
const mWho = "test::who"

// startWhoServers starts n servers that answer mWho with their address.
func startWhoServers(t *testing.T, n int) []*testServer {
	t.Helper()
	var out []*testServer
	for range n {
		ts := startServer(t, ServerConfig{}, "")
		addr := ts.addr
		ts.rpc.Handle(mWho, func(context.Context, json.RawMessage, func(any) error) (any, error) { return addr, nil })
		out = append(out, ts)
	}
	return out
}

type preferKey struct{}

// preferPicker takes the candidate whose address ctx names, else the
// first, and records the candidates it was offered.
type preferPicker struct {
	mu      sync.Mutex
	offered [][]Candidate
}

func (p *preferPicker) Pick(ctx context.Context, cs []Candidate) int {
	p.mu.Lock()
	p.offered = append(p.offered, slices.Clone(cs))
	p.mu.Unlock()
	want, _ := ctx.Value(preferKey{}).(string)
	return max(slices.IndexFunc(cs, func(c Candidate) bool { return c.Addr == want }), 0)
}

// TestPoolPicker: the pool's Picker chooses each call's instance among the
// connected ones, with the call's context; a retry offers only the
// instances not tried yet.
func TestPoolPicker(t *testing.T) {
	t.Parallel()
	servers := startWhoServers(t, 3)
	busy := servers[2]
	busy.rpc.Handle(mWho, func(context.Context, json.RawMessage, func(any) error) (any, error) {
		return nil, chat.Errorf(chat.CodeOverloaded, "full")
	})
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.addr)
	}
	res := discovery.NewStatic()
	res.Set(testService, addrs...)
	picker := &preferPicker{}
	p := NewPool(res, testService, PoolConfig{MinBackoff: 10 * time.Millisecond, Retries: 1, Picker: picker})
	t.Cleanup(func() { p.Close() })
	eventually(t, "all instances connected", func() bool { return p.Healthy() == 3 })

	call := func(prefer string) (string, error) {
		raw, err := p.Call(context.WithValue(testCtx(t), preferKey{}, prefer), mWho, nil, nil)
		var addr string
		if err == nil {
			err = json.Unmarshal(raw, &addr)
		}
		return addr, err
	}
	if got, err := call(addrs[1]); err != nil || got != addrs[1] {
		t.Fatalf("a call the picker sent to %s reached %s (%v)", addrs[1], got, err)
	}
	picker.mu.Lock()
	picker.offered = nil
	picker.mu.Unlock()
	got, err := call(busy.addr)
	if err != nil || got == busy.addr {
		t.Fatalf("a call refused by %s: reached %s (%v), want a retry elsewhere", busy.addr, got, err)
	}
	picker.mu.Lock()
	defer picker.mu.Unlock()
	if len(picker.offered) != 2 || len(picker.offered[0]) != 3 || len(picker.offered[1]) != 2 ||
		slices.ContainsFunc(picker.offered[1], func(c Candidate) bool { return c.Addr == busy.addr }) {
		t.Errorf("offered %+v: want all three, then the two not tried", picker.offered)
	}
}

// refusePicker takes none of its candidates.
type refusePicker struct{}

func (refusePicker) Pick(context.Context, []Candidate) int { return -1 }

// TestPoolPickerRefuses: a call no connected instance may take (the
// Picker returns -1) fails as with none connected, unavailable after
// ConnectWait.
func TestPoolPickerRefuses(t *testing.T) {
	t.Parallel()
	servers := startWhoServers(t, 1)
	res := discovery.NewStatic()
	res.Set(testService, servers[0].addr)
	p := NewPool(res, testService, PoolConfig{ConnectWait: 50 * time.Millisecond, Picker: refusePicker{}})
	t.Cleanup(func() { p.Close() })
	eventually(t, "the instance connected", func() bool { return p.Healthy() == 1 })
	if _, err := p.Call(testCtx(t), mWho, nil, nil); chat.Code(err) != chat.CodeUnavailable {
		t.Errorf("a call the picker refused: %v, want unavailable", err)
	}
}

// TestPoolLeastBusy: by default a call goes to the instance with the fewest
// calls in flight.
func TestPoolLeastBusy(t *testing.T) {
	t.Parallel()
	if i := (LeastBusy{}).Pick(context.Background(), []Candidate{{InFlight: 2}, {InFlight: 1}, {InFlight: 1}}); i != 1 {
		t.Errorf("LeastBusy picked %d, want 1 (the first of the least busy)", i)
	}
}

// TestPoolCapacity: the pool asks each newly connected instance its
// capacity and model (PoolConfig.Describe), again after a failure (an
// instance still loading), and a Picker sees them.
func TestPoolCapacity(t *testing.T) {
	t.Parallel()
	servers := startWhoServers(t, 2)
	res := discovery.NewStatic()
	res.Set(testService, servers[0].addr, servers[1].addr)
	var asked atomic.Int32
	picker := &preferPicker{}
	p := NewPool(res, testService, PoolConfig{
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
		Picker:     picker,
		// Each instance answers over its new connection; the first
		// question fails, as it does while an instance loads its model,
		// and is asked again.
		Describe: func(ctx context.Context, c *Conn) (Description, error) {
			if asked.Add(1) == 1 {
				return Description{}, chat.Errorf(chat.CodeUnavailable, "loading")
			}
			raw, err := c.Call(ctx, mEcho, 3, nil)
			if err != nil {
				return Description{}, err
			}
			var n int
			err = json.Unmarshal(raw, &n)
			return Description{Capacity: n, Model: "m"}, err
		},
	})
	t.Cleanup(func() { p.Close() })
	eventually(t, "every instance's capacity known", func() bool {
		in := p.Instances()
		return len(in) == 2 && in[0].Capacity == 3 && in[1].Capacity == 3 && in[0].Model == "m" && in[1].Model == "m"
	})
	if n := asked.Load(); n != 3 {
		t.Errorf("capacity asked %d times, want 3 (once per instance, once more after the failure)", n)
	}
	if _, err := p.Call(testCtx(t), mWho, nil, nil); err != nil {
		t.Fatal(err)
	}
	picker.mu.Lock()
	defer picker.mu.Unlock()
	if o := picker.offered; len(o) != 1 || len(o[0]) != 2 || o[0][0].Capacity != 3 || o[0][1].Capacity != 3 || o[0][0].Model != "m" {
		t.Errorf("offered %+v, want both instances with capacity 3 and model m", o)
	}
}

// TestPoolBroadcast: every connected instance answers, and an instance
// the pool cannot connect to is listed with ErrNotConnected.
func TestPoolBroadcast(t *testing.T) {
	t.Parallel()
	servers := startWhoServers(t, 2)
	down := startServer(t, ServerConfig{}, "")
	down.kill()
	p, _ := newTestPool(t, servers[0].addr, servers[1].addr, down.addr)
	eventually(t, "the live instances connected", func() bool { return p.Healthy() == 2 })
	got := map[string]string{}
	for _, r := range p.Broadcast(testCtx(t), mWho, nil) {
		switch {
		case errors.Is(r.Err, ErrNotConnected):
			got[r.Addr] = "not connected"
		case r.Err != nil:
			got[r.Addr] = r.Err.Error()
		default:
			var addr string
			_ = json.Unmarshal(r.Result, &addr)
			got[r.Addr] = addr
		}
	}
	want := map[string]string{servers[0].addr: servers[0].addr, servers[1].addr: servers[1].addr, down.addr: "not connected"}
	if !maps.Equal(got, want) {
		t.Errorf("Broadcast answered %v, want %v", got, want)
	}
}

// describedOnly takes the least busy instance that has described itself,
// as the caller's model routing does (an instance's model is known only
// then), and none while no instance has.
type describedOnly struct{}

func (describedOnly) Pick(_ context.Context, candidates []Candidate) int {
	best := -1
	for i, c := range candidates {
		if c.Capacity > 0 && (best < 0 || c.InFlight < candidates[best].InFlight) {
			best = i
		}
	}
	return best
}

// TestPoolWaitsForDescription: a call that arrives while the only
// instance is connected but cannot describe itself yet (its model still
// loading) waits, and is placed as soon as the instance has described
// itself, well within ConnectWait — not failed at its end. The regression:
// the pool asked again after a backoff grown to seconds and did not wake
// the waiting call when the answer came, which answered it 503 while the
// instance was ready.
func TestPoolWaitsForDescription(t *testing.T) {
	t.Parallel()
	servers := startWhoServers(t, 1)
	res := discovery.NewStatic()
	res.Set(testService, servers[0].addr)
	ready := time.Now().Add(400 * time.Millisecond)
	p := NewPool(res, testService, PoolConfig{
		ConnectWait: 2 * time.Second,
		MinBackoff:  100 * time.Millisecond,
		MaxBackoff:  10 * time.Second,
		Picker:      describedOnly{},
		Describe: func(ctx context.Context, c *Conn) (Description, error) {
			if time.Now().Before(ready) {
				return Description{}, chat.Errorf(chat.CodeUnavailable, "loading")
			}
			return Description{Capacity: 1, Model: "m"}, nil
		},
	})
	t.Cleanup(func() { p.Close() })
	eventually(t, "the instance connected", func() bool { return p.Healthy() == 1 })
	if _, err := p.Call(testCtx(t), mWho, nil, nil); err != nil {
		t.Fatalf("the call was not placed once the instance described itself: %v", err)
	}
}

// TestPoolDescribedByBroadcast: an instance that cannot describe itself
// through Describe takes calls once a Broadcast answer that Described
// reads as its description comes back; an answer without capacity, or to
// a method Described does not read, changes nothing. The regression: a
// caller's /health counted an instance ready from its answer to a status
// call while the pool, its own question still backing off, sent every
// call elsewhere.
func TestPoolDescribedByBroadcast(t *testing.T) {
	t.Parallel()
	servers := startWhoServers(t, 1)
	res := discovery.NewStatic()
	res.Set(testService, servers[0].addr)
	p := NewPool(res, testService, PoolConfig{
		ConnectWait: 200 * time.Millisecond,
		Picker:      describedOnly{},
		Describe: func(ctx context.Context, c *Conn) (Description, error) {
			return Description{}, chat.Errorf(chat.CodeUnavailable, "loading")
		},
		// An echoed number is the capacity the instance tells.
		Described: func(method string, result json.RawMessage) (Description, bool) {
			var n int
			if method != mEcho || json.Unmarshal(result, &n) != nil {
				return Description{}, false
			}
			return Description{Capacity: n, Model: "m"}, true
		},
	})
	t.Cleanup(func() { p.Close() })
	eventually(t, "the instance connected", func() bool { return p.Healthy() == 1 })

	p.Broadcast(testCtx(t), mEcho, 0)
	p.Broadcast(testCtx(t), mWho, nil)
	if in := p.Instances(); in[0].Capacity != 0 {
		t.Fatalf("instances %+v after answers that describe nothing; want it still undescribed", in)
	}
	if _, err := p.Call(testCtx(t), mWho, nil, nil); err == nil {
		t.Fatal("a call was placed on an instance that has not described itself")
	}

	p.Broadcast(testCtx(t), mEcho, 2)
	if in := p.Instances(); in[0].Capacity != 2 || in[0].Model != "m" {
		t.Errorf("instances %+v after the answer, want capacity 2 and model m", in)
	}
	if _, err := p.Call(testCtx(t), mWho, nil, nil); err != nil {
		t.Errorf("the call was not placed on the instance the answer described: %v", err)
	}
}

package caller

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

func TestPrefixKey(t *testing.T) {
	t.Parallel()
	sys := chat.Message{Role: chat.RoleSystem, Content: "Be brief."}
	u1 := chat.Message{Role: chat.RoleUser, Content: "Hi"}
	a1 := chat.Message{Role: chat.RoleAssistant, Content: "Hello."}
	u2 := chat.Message{Role: chat.RoleUser, Content: "Apples?"}
	key := func(msgs ...chat.Message) string { return PrefixKey(chat.Request{Messages: msgs}) }
	first := key(sys, u1)
	for _, c := range []struct {
		name string
		got  string
		same bool
	}{
		{"the next turn", key(sys, u1, a1, u2), true},
		{"the turn after", key(sys, u1, a1, u2, a1, u1), true},
		{"another first message", key(sys, u2), false},
		{"another system prompt", key(chat.Message{Role: chat.RoleSystem, Content: "Be long."}, u1), false},
		{"no system prompt", key(u1), false},
		{"content moved between messages", key(chat.Message{Role: chat.RoleSystem, Content: "Be brief.Hi"}, chat.Message{Role: chat.RoleUser}), false},
		{"another model", PrefixKey(chat.Request{Model: "other", Messages: []chat.Message{sys, u1}}), false},
	} {
		if (c.got == first) != c.same {
			t.Errorf("%s: key %s, first turn's %s; want same = %v", c.name, c.got, first, c.same)
		}
	}
	if PrefixKey(chat.Request{}) != "" {
		t.Error("a request without messages has a key")
	}
	if _, err := New(Config{Inference: discovery.NewStatic(), Routing: "random"}); err == nil {
		t.Error("New accepted an unknown routing policy")
	}
	if _, err := New(Config{Routing: RoutingPrefix}); err == nil {
		t.Error("New accepted a configuration without a resolver for inference instances")
	}
}

// TestRouting: with prefix routing every turn of a conversation reaches the
// same inference instance, and conversations spread over both; with
// least-busy, one request at a time alternates between them.
func TestRouting(t *testing.T) {
	t.Parallel()
	for _, routing := range []string{RoutingPrefix, RoutingLeastBusy} {
		t.Run(routing, func(t *testing.T) {
			t.Parallel()
			a := &meshtest.Inference{Model: "tiny"}
			b := &meshtest.Inference{Model: "tiny"}
			s := newCaller(t, Config{Routing: routing}, a.Serve(t), b.Serve(t))
			c := client(t, meshtest.Serve(t, s))
			// Routing is over the instances described: until both are,
			// every call goes to the one that is.
			waitDescribed(t, s, 2)
			// The instances' ids are random ports, so the keys' spread is
			// random too: all 24 conversations land on one instance once in
			// 2^23 runs (with 8, once in 128 — a flaky test).
			const convs, turns = 24, 4
			sticky := 0
			for i := range convs {
				msgs := []chat.Message{
					{Role: chat.RoleSystem, Content: "You are a storyteller."},
					{Role: chat.RoleUser, Content: fmt.Sprintf("Tell me story %d.", i)},
				}
				var on []int
				for range turns {
					beforeA := a.Calls()
					if _, err := c.GetResponse(ctx(t), chat.Request{Messages: msgs}, nil); err != nil {
						t.Fatal(err)
					}
					if a.Calls() > beforeA {
						on = append(on, 0)
					} else {
						on = append(on, 1)
					}
					msgs = append(msgs, chat.Message{Role: chat.RoleAssistant, Content: "Once upon a time."}, chat.Message{Role: chat.RoleUser, Content: "Go on."})
				}
				same := true
				for _, x := range on {
					same = same && x == on[0]
				}
				if same {
					sticky++
				}
				if routing == RoutingPrefix && !same {
					t.Errorf("conversation %d went to instances %v, want one", i, on)
				}
			}
			switch routing {
			case RoutingPrefix:
				if a.Calls() == 0 || b.Calls() == 0 {
					t.Errorf("calls a=%d b=%d: every conversation on one instance", a.Calls(), b.Calls())
				}
			case RoutingLeastBusy:
				if sticky != 0 {
					t.Errorf("%d conversations stayed on one instance; least-busy alternates", sticky)
				}
			}
		})
	}
}

// TestInferencePoolLearnsSlots: the caller's pool asks each inference
// instance for its slots (inference::info), prefix routing's measure of
// room; an instance that cannot answer yet (loading its model) has none
// until it does.
func TestInferencePoolLearnsSlots(t *testing.T) {
	t.Parallel()
	ready := &meshtest.Inference{Model: "tiny"}
	loading := &meshtest.Inference{Model: "tiny", InfoErr: chat.Errorf(chat.CodeUnavailable, "loading the model")}
	readyAddr := ready.Serve(t)
	p := newCaller(t, Config{}, readyAddr, loading.Serve(t)).pool
	capacities := func() map[string]int {
		out := map[string]int{}
		for _, in := range p.Instances() {
			if in.Connected {
				out[in.Addr] = in.Capacity
			}
		}
		return out
	}
	meshtest.Eventually(t, "the ready instance's slots known", func() bool {
		c := capacities()
		return len(c) == 2 && c[readyAddr] == 1
	})
	if c := capacities(); c[readyAddr] != 1 || len(c) != 2 {
		t.Errorf("capacities %v: want 1 for %s (meshtest.Inference's slots) and 0 for the loading one", c, readyAddr)
	}
	for addr, n := range capacities() {
		if addr != readyAddr && n != 0 {
			t.Errorf("the loading instance has capacity %d", n)
		}
	}
}

// candidates are instances for prefixPicker, with the calls in flight and
// capacities given (capacities may be nil: not known).
func candidates(ids []string, inFlight, capacity []int) []rpc.Candidate {
	out := make([]rpc.Candidate, len(ids))
	for i, id := range ids {
		out[i] = rpc.Candidate{ID: id, Addr: id, InFlight: inFlight[i]}
		if capacity != nil {
			out[i].Capacity = capacity[i]
		}
	}
	return out
}

// pickID is the id of the candidate prefixPicker p gives key (none: no key).
func pickID(p *prefixPicker, key string, cs []rpc.Candidate) string {
	return cs[p.Pick(withPrefixKey(context.Background(), key), cs)].ID
}

// TestPrefixPicker: one key's calls go to one instance, whatever order the
// pool offers the candidates in (every caller chooses alike); keys spread
// over every instance; when an instance leaves, only its keys move.
func TestPrefixPicker(t *testing.T) {
	t.Parallel()
	ids := []string{"10.0.0.1:7003", "10.0.0.2:7003", "10.0.0.3:7003"}
	idle := []int{0, 0, 0}
	p := &prefixPicker{}
	const keys = 60
	got := map[string]string{}
	perInstance := map[string]int{}
	for i := range keys {
		key := fmt.Sprintf("conversation-%d", i)
		a := pickID(p, key, candidates(ids, idle, nil))
		if b := pickID(p, key, candidates([]string{ids[2], ids[0], ids[1]}, idle, nil)); a != b {
			t.Fatalf("key %q went to %s, then, offered in another order, to %s", key, a, b)
		}
		got[key] = a
		perInstance[a]++
	}
	for _, id := range ids {
		if perInstance[id] < keys/3/2 {
			t.Errorf("keys per instance %v: %s got fewer than half its share", perInstance, id)
		}
	}
	if routed, spilled := p.routed.Load(), p.spilled.Load(); routed != 2*keys || spilled != 0 {
		t.Errorf("%d routed, %d spilled; want %d, 0 (idle instances never reach the bound)", routed, spilled, 2*keys)
	}
	moved := 0
	for key, was := range got {
		now := pickID(p, key, candidates(ids[:2], idle[:2], nil))
		switch {
		case was != ids[2] && now != was:
			t.Errorf("key %q moved from %s to %s though its instance stayed", key, was, now)
		case was == ids[2]:
			moved++
		}
	}
	if moved == 0 {
		t.Error("no key was on the removed instance; the test proved nothing")
	}
	if i := p.Pick(context.Background(), candidates(ids, []int{2, 1, 1}, nil)); i != 1 {
		t.Errorf("a call without a key went to candidate %d, want the least busy, 1", i)
	}
}

// TestPrefixPickerBounds: without capacities, a key's instance takes calls
// up to the load bound (1.25 × the mean in flight + 1), then the key's
// second choice does; with capacities, room comes first, and the bound
// decides only when every instance is full.
func TestPrefixPickerBounds(t *testing.T) {
	t.Parallel()
	const key = "hot"
	ids := []string{"a:1", "b:1", "c:1"}
	p := &prefixPicker{}
	order := func(ids []string) (first, second, third int) {
		// The key's order among ids, found as the picker finds it: the
		// first choice of the whole set, then of the rest.
		rest := slices.Clone(ids)
		var out []int
		for range ids {
			id := pickID(&prefixPicker{}, key, candidates(rest, make([]int, len(rest)), nil))
			out = append(out, slices.Index(ids, id))
			rest = slices.DeleteFunc(rest, func(s string) bool { return s == id })
		}
		return out[0], out[1], out[2]
	}
	first, second, _ := order(ids)
	with := func(n map[int]int, capacity []int) string {
		in := make([]int, len(ids))
		for i, v := range n {
			in[i] = v
		}
		return pickID(p, key, candidates(ids, in, capacity))
	}
	// In flight → bound: 1 → 1.42, 2 → 1.83.
	if got := with(map[int]int{first: 1}, nil); got != ids[first] {
		t.Errorf("1 call on the key's instance: the next went to %s, want it there too", got)
	}
	if got := with(map[int]int{first: 2}, nil); got != ids[second] {
		t.Errorf("2 calls on the key's instance: the next went to %s, want the key's second choice %s", got, ids[second])
	}
	if spilled := p.spilled.Load(); spilled != 1 {
		t.Errorf("%d calls spilled, want 1", spilled)
	}
	// Capacities of 3: the key's instance full, the second with room,
	// though the bound (1.25 × 5/3 + 1 = 3.08) would keep the call on the
	// first choice.
	three := []int{3, 3, 3}
	if got := with(map[int]int{first: 3, second: 2}, three); got != ids[second] {
		t.Errorf("the key's instance full: the call went to %s, want the second choice with room %s", got, ids[second])
	}
	// Every instance full: the bound (1.25 × 9/3 + 1 = 4.75) chooses.
	if got := with(map[int]int{0: 3, 1: 3, 2: 3}, three); got != ids[first] {
		t.Errorf("every instance full: the call went to %s, want the key's instance %s under the bound", got, ids[first])
	}
	// A capacity not known yet: the bound alone.
	if got := with(map[int]int{first: 1}, []int{0, 3, 3}); got != ids[first] {
		t.Errorf("a capacity unknown: the call went to %s, want the key's instance %s under the bound", got, ids[first])
	}
}

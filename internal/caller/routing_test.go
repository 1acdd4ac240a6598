package caller

import (
	"fmt"
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
	if err := CheckRouting("random"); err == nil {
		t.Error("CheckRouting accepted an unknown policy")
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
			c := client(t, startCaller(t, Config{Routing: routing}, a.Serve(t), b.Serve(t)))
			// Routing is over the connected instances: until both are,
			// every call goes to the one that is.
			meshtest.Eventually(t, "both inference instances connected", func() bool {
				st, err := c.Status(ctx(t))
				return err == nil && len(st.Models()) > 0 && len(st.Inference) == 2 && st.Inference[0].Error == "" && st.Inference[1].Error == ""
			})
			const convs, turns = 8, 4
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
	loading := &meshtest.Inference{Model: "tiny", InfoErr: rpc.Errorf(rpc.CodeUnavailable, "loading the model")}
	readyAddr := ready.Serve(t)
	p := meshtest.Pool(t, discovery.ServiceInference, InferencePool(rpc.ClientConfig{}, nil), readyAddr, loading.Serve(t))
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

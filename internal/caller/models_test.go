package caller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// stoppable serves f on loopback like meshtest.Inference.Serve, and
// returns a stop that takes it down mid-test.
func stoppable(t *testing.T, f *meshtest.Inference) (addr string, stop func()) {
	t.Helper()
	srv := rpc.NewServer(rpc.ServerConfig{})
	mesh.RegisterInference(srv, f)
	mux := http.NewServeMux()
	mux.Handle(rpc.PathRPC, srv)
	ts := httptest.NewServer(mux)
	stop = func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = srv.Shutdown(ctx) // closes the hijacked connections
		ts.Close()
	}
	t.Cleanup(stop)
	return ts.Listener.Addr().String(), stop
}

// waitModels waits until the caller at c reports the models want (sorted)
// served, and every instance answering.
func waitModels(t *testing.T, c *mesh.CallerClient, want ...string) mesh.CallerStatus {
	t.Helper()
	var st mesh.CallerStatus
	meshtest.Eventually(t, fmt.Sprintf("models %v served", want), func() bool {
		var err error
		st, err = c.Status(ctx(t))
		return err == nil && slices.Equal(slices.Sorted(slices.Values(st.Models())), want) && !slices.ContainsFunc(st.Inference, func(s mesh.InferenceStatus) bool { return s.Error != "" })
	})
	return st
}

// TestModelRouting: with instances of two models behind one caller, each
// request reaches an instance of the model it names, and with prefix
// routing a conversation stays on one instance of its model; a request
// without a model is refused while two are served and no default is set;
// an unknown model is not_found, naming the model.
func TestModelRouting(t *testing.T) {
	t.Parallel()
	for _, routing := range []string{RoutingPrefix, RoutingLeastBusy} {
		t.Run(routing, func(t *testing.T) {
			t.Parallel()
			a1 := &meshtest.Inference{Model: "alpha"}
			a2 := &meshtest.Inference{Model: "alpha"}
			b := &meshtest.Inference{Model: "beta"}
			c := client(t, startCaller(t, Config{Routing: routing}, a1.Serve(t), b.Serve(t), a2.Serve(t)))
			st := waitModels(t, c, "alpha", "beta")
			if !slices.Equal(st.Known, []string{"alpha", "beta"}) || st.Default != "" {
				t.Errorf("status known %v default %q, want [alpha beta] and none", st.Known, st.Default)
			}

			const convs = 12
			for i := range convs {
				msgs := []chat.Message{{Role: chat.RoleUser, Content: fmt.Sprintf("Tell me story %d.", i)}}
				for _, model := range []string{"alpha", "beta"} {
					var on []*meshtest.Inference
					for range 3 {
						before := []int{a1.Calls(), a2.Calls(), b.Calls()}
						res, err := c.GetResponse(ctx(t), chat.Request{Model: model, Messages: msgs}, nil)
						if err != nil {
							t.Fatal(err)
						}
						if res.Model != model {
							t.Errorf("asked %s, answered by %s", model, res.Model)
						}
						for j, f := range []*meshtest.Inference{a1, a2, b} {
							if f.Calls() > before[j] {
								on = append(on, f)
							}
						}
					}
					if len(on) != 3 {
						t.Fatalf("3 requests reached %d instances", len(on))
					}
					if routing == RoutingPrefix && (on[0] != on[1] || on[1] != on[2]) {
						t.Errorf("conversation %d on %s moved between instances", i, model)
					}
				}
			}
			for _, r := range b.Requests() {
				if r.Model != "beta" {
					t.Errorf("beta's instance got a request for %q", r.Model)
				}
			}
			for _, f := range []*meshtest.Inference{a1, a2} {
				if f.Calls() == 0 {
					t.Errorf("an alpha instance got no call: the model's requests did not spread")
				}
				for _, r := range f.Requests() {
					if r.Model != "alpha" {
						t.Errorf("an alpha instance got a request for %q", r.Model)
					}
				}
			}

			_, err := c.GetResponse(ctx(t), chat.Request{Messages: hi()}, nil)
			var e *chat.Error
			if !errors.As(err, &e) || e.Code != chat.CodeInvalidArgument || e.Param != "model" || !strings.Contains(e.Message, "alpha, beta") {
				t.Errorf("no model with two served and no default: %v, want invalid_argument naming them", err)
			}
			_, err = c.GetResponse(ctx(t), chat.Request{Model: "gamma", Messages: hi()}, nil)
			if !errors.As(err, &e) || e.Code != chat.CodeNotFound || e.Param != "" || !strings.Contains(e.Message, "gamma") {
				t.Errorf("unknown model: %v, want not_found naming gamma, without a param (as OpenAI)", err)
			}
		})
	}
}

// TestDefaultModel: a request without a model goes to Config.DefaultModel,
// or, unset, to the only model served; the status names it.
func TestDefaultModel(t *testing.T) {
	t.Parallel()
	a := &meshtest.Inference{Model: "alpha"}
	b := &meshtest.Inference{Model: "beta"}
	c := client(t, startCaller(t, Config{DefaultModel: "beta"}, a.Serve(t), b.Serve(t)))
	if st := waitModels(t, c, "alpha", "beta"); st.Default != "beta" {
		t.Errorf("status default %q, want beta", st.Default)
	}
	for range 4 {
		if res, err := c.GetResponse(ctx(t), chat.Request{Messages: hi()}, nil); err != nil || res.Model != "beta" {
			t.Fatalf("no model with default beta: %s (%v)", res.Model, err)
		}
	}
	if a.Calls() != 0 || b.Calls() != 4 {
		t.Errorf("calls alpha %d beta %d, want 0 and 4", a.Calls(), b.Calls())
	}

	only := &meshtest.Inference{Model: "alpha"}
	c = client(t, startCaller(t, Config{}, only.Serve(t)))
	if st := waitModels(t, c, "alpha"); st.Default != "alpha" {
		t.Errorf("one model: status default %q, want alpha", st.Default)
	}
	res, err := c.GetResponse(ctx(t), chat.Request{Messages: hi()}, nil)
	if err != nil || res.Model != "alpha" || only.Requests()[0].Model != "alpha" {
		t.Errorf("no model with one served: %s (%v), want alpha named to the instance", res.Model, err)
	}
}

// TestModelUnavailable: a model the caller has served but whose only
// instance is down is unavailable, naming the model, while the other
// model is still served; it stays known in the status.
func TestModelUnavailable(t *testing.T) {
	t.Parallel()
	a := &meshtest.Inference{Model: "alpha"}
	b := &meshtest.Inference{Model: "beta"}
	bAddr, stopB := stoppable(t, b)
	c := client(t, startCaller(t, Config{}, a.Serve(t), bAddr))
	waitModels(t, c, "alpha", "beta")
	stopB()
	meshtest.Eventually(t, "beta's instance gone", func() bool {
		st, err := c.Status(ctx(t))
		return err == nil && slices.Equal(st.Models(), []string{"alpha"})
	})
	_, err := c.GetResponse(ctx(t), chat.Request{Model: "beta", Messages: hi()}, nil)
	var e *chat.Error
	if !errors.As(err, &e) || e.Code != chat.CodeUnavailable || e.Param != "model" || !strings.Contains(e.Message, "beta") {
		t.Errorf("beta with its instance down: %v, want unavailable naming beta", err)
	}
	if res, err := c.GetResponse(ctx(t), chat.Request{Model: "alpha", Messages: hi()}, nil); err != nil || res.Model != "alpha" {
		t.Errorf("alpha while beta is down: %s (%v)", res.Model, err)
	}
	if st, err := c.Status(ctx(t)); err != nil || !slices.Equal(st.Known, []string{"alpha", "beta"}) {
		t.Errorf("status known %v (%v), want beta still known", st.Known, err)
	}
}

// TestModelPicker: only candidates of the call's model are offered to the
// routing policy's picker, and none of it is -1.
func TestModelPicker(t *testing.T) {
	t.Parallel()
	cs := []rpc.Candidate{{ID: "a", Model: "alpha", InFlight: 0}, {ID: "b", Model: "beta", InFlight: 3}, {ID: "c", Model: "beta", InFlight: 1}}
	p := modelPicker{rpc.LeastBusy{}}
	for _, tc := range []struct {
		model string
		want  int
	}{{"", 0}, {"alpha", 0}, {"beta", 2}, {"gamma", -1}} {
		if got := p.Pick(withModel(context.Background(), tc.model), cs); got != tc.want {
			t.Errorf("model %q: picked %d, want %d", tc.model, got, tc.want)
		}
	}
}

// TestModelOfLoadingInstance: a request for a model whose only instance
// is connected but still loading waits for it rather than getting
// not_found because the instances that have described themselves serve
// other models.
func TestModelOfLoadingInstance(t *testing.T) {
	t.Parallel()
	loaded := make(chan struct{})
	a := &meshtest.Inference{Model: "alpha"}
	b := &meshtest.Inference{Model: "beta", Loaded: loaded}
	c := client(t, startCaller(t, Config{}, a.Serve(t), b.Serve(t)))
	meshtest.Eventually(t, "alpha served and beta's instance connected, loading", func() bool {
		st, err := c.Status(ctx(t))
		return err == nil && slices.Equal(st.Models(), []string{"alpha"}) &&
			slices.ContainsFunc(st.Inference, func(s mesh.InferenceStatus) bool { return strings.Contains(s.Error, "loading") })
	})
	time.AfterFunc(100*time.Millisecond, func() { close(loaded) })
	res, err := c.GetResponse(ctx(t), chat.Request{Model: "beta", Messages: hi()}, nil)
	if err != nil || res.Model != "beta" || b.Calls() != 1 {
		t.Fatalf("beta while its instance loads: %q, %v (beta's calls: %d)", res.Model, err, b.Calls())
	}
}

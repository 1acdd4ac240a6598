package caller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// The caller against in-process fake inference instances: a real caller
// server, real RPC pools and servers on loopback, a fake only where the
// inference tier would be (the real tiers together are tested in e2e).

// startCaller serves a caller over the given inference addresses, wired as
// the caller's main wires it (one retry), and returns its address.
func startCaller(t *testing.T, cfg Config, inference ...string) string {
	t.Helper()
	return meshtest.Serve(t, newCaller(t, cfg, inference...))
}

// newCaller is a caller over the inference instances at addrs (static
// discovery), shut down when the test ends.
func newCaller(t testing.TB, cfg Config, inference ...string) *Server {
	t.Helper()
	res := discovery.NewStatic()
	res.Set(discovery.ServiceInference, inference...)
	cfg.Inference = res
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

// waitDescribed waits until the caller's pool is connected to n
// instances that have each said which model they serve: until then a call
// for a model goes only to those that have.
func waitDescribed(t testing.TB, s *Server, n int) {
	t.Helper()
	meshtest.Eventually(t, fmt.Sprintf("%d inference instances described", n), func() bool {
		described := 0
		for _, in := range s.pool.Instances() {
			if in.Connected && in.Model != "" {
				described++
			}
		}
		return described == n
	})
}

// client is what a gateway holds: a pool over callers, without retries.
func client(t testing.TB, callers ...string) *mesh.CallerClient {
	t.Helper()
	return mesh.NewCallerClient(meshtest.Pool(t, discovery.ServiceCaller, rpc.PoolConfig{}, callers...))
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func hi() []chat.Message { return []chat.Message{{Role: chat.RoleUser, Content: "hi"}} }

// TestGetResponse proves the caller relays text and result, and passes the
// request on as it came: in particular it sets no max_tokens of its own,
// so that the engine can fit the completion to the context.
func TestGetResponse(t *testing.T) {
	t.Parallel()
	inf := &meshtest.Inference{Model: "tiny", Generate: meshtest.Reply("tiny", "Once", " upon", " a time")}
	c := client(t, startCaller(t, Config{}, inf.Serve(t)))

	temp := float32(0.3)
	req := chat.Request{Messages: hi(), Temperature: &temp, Stop: []string{"END"}}
	var text strings.Builder
	res, err := c.GetResponse(ctx(t), req, func(d chat.Delta) error {
		text.WriteString(d.Content)
		return nil
	})
	if err != nil || text.String() != "Once upon a time" || res.CompletionTokens != 3 || res.Model != "tiny" {
		t.Fatalf("%q %+v %v", text.String(), res, err)
	}
	got := inf.Requests()
	if len(got) != 1 || got[0].MaxTokens != 0 || got[0].Temperature == nil || *got[0].Temperature != temp || !slices.Equal(got[0].Stop, req.Stop) {
		t.Errorf("inference got %+v, want the request unchanged (max_tokens still 0)", got)
	}
}

// TestRefused proves the caller refuses what chat.Request.Validate and its
// own limit refuse, naming the field, before any inference call.
func TestRefused(t *testing.T) {
	t.Parallel()
	inf := &meshtest.Inference{Model: "tiny"}
	c := client(t, startCaller(t, Config{MaxTokensLimit: 100}, inf.Serve(t)))
	hot := float32(3)
	tests := []struct {
		name  string
		req   chat.Request
		param string
		msg   string
	}{
		{"no messages", chat.Request{}, "messages", "non-empty"},
		{"unknown role", chat.Request{Messages: []chat.Message{{Role: "function", Content: "x"}}}, "messages[0].role", `"function"`},
		{"tool result without a call", chat.Request{Messages: []chat.Message{{Role: "tool", Content: "x", ToolCallID: "c"}}}, "messages[0].tool_call_id", "answers no tool call"},
		{"five stops", chat.Request{Messages: hi(), Stop: []string{"a", "b", "c", "d", "e"}}, "stop", "at most 4"},
		{"temperature", chat.Request{Messages: hi(), Temperature: &hot}, "temperature", "[0, 2]"},
		{"negative max_tokens", chat.Request{Messages: hi(), MaxTokens: -1}, "max_tokens", "negative"},
		{"max_tokens over the limit", chat.Request{Messages: hi(), MaxTokens: 101}, "max_tokens", "'max_tokens': 101 is above this deployment's limit of 100"},
		{"max_completion_tokens over the limit", chat.Request{Messages: hi(), MaxTokens: 101, MaxTokensParam: "max_completion_tokens"},
			"max_completion_tokens", "'max_completion_tokens': 101 is above"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := c.GetResponse(ctx(t), tt.req, nil)
			var re *chat.Error
			if !errors.As(err, &re) || re.Code != chat.CodeInvalidArgument || re.Param != tt.param || !strings.Contains(re.Message, tt.msg) {
				t.Errorf("got %#v, want invalid_argument, param %q, a message with %q", err, tt.param, tt.msg)
			}
		})
	}
	t.Run("at the limit", func(t *testing.T) {
		t.Parallel()
		if _, err := c.GetResponse(ctx(t), chat.Request{Messages: hi(), MaxTokens: 100}, nil); err != nil {
			t.Error(err)
		}
	})
}

// TestRetriesInOneTier proves an overloaded mesh makes at most the attempts
// its one layer of retries allows: a gateway (no retries) in front of two
// callers (one retry each) in front of three full inference instances
// makes two inference attempts per request. With retries at both layers it
// made up to four.
func TestRetriesInOneTier(t *testing.T) {
	t.Parallel()
	var fakes []*meshtest.Inference
	var addrs []string
	for range 3 {
		f := &meshtest.Inference{Model: "tiny", Generate: meshtest.Fail(&chat.Error{Code: chat.CodeOverloaded, Message: "full", RetryAfter: 3 * time.Second})}
		fakes = append(fakes, f)
		addrs = append(addrs, f.Serve(t))
	}
	callers := []string{startCaller(t, Config{}, addrs...), startCaller(t, Config{}, addrs...)}
	c := client(t, callers...)
	// Every instance connected to both callers, so that retries have
	// somewhere to go.
	for _, addr := range callers {
		one := client(t, addr)
		meshtest.Eventually(t, "a caller to reach the three instances", func() bool {
			st, err := one.Status(ctx(t))
			return err == nil && len(st.Inference) == 3 &&
				!slices.ContainsFunc(st.Inference, func(s mesh.InferenceStatus) bool { return s.Error != "" })
		})
	}
	const requests = 6
	for range requests {
		_, err := c.GetResponse(ctx(t), chat.Request{Messages: hi()}, nil)
		var re *chat.Error
		if !errors.As(err, &re) || re.Code != chat.CodeOverloaded || re.RetryAfter != 3*time.Second {
			t.Fatalf("got %#v, want overloaded with the instance's RetryAfter", err)
		}
	}
	attempts := 0
	for _, f := range fakes {
		attempts += f.Calls()
	}
	if attempts != 2*requests {
		t.Errorf("%d inference attempts for %d requests, want 2 each", attempts, requests)
	}
}

// TestStatus proves caller::status and /health list every inference
// instance: those serving with their model, one still loading with its
// error, and one the caller cannot reach as not connected.
func TestStatus(t *testing.T) {
	t.Parallel()
	a := &meshtest.Inference{Model: "tiny"}
	b := &meshtest.Inference{Model: "tiny"}
	loading := &meshtest.Inference{InfoErr: chat.Errorf(chat.CodeUnavailable, "the model is still loading")}
	down := freeAddr(t)
	addr := startCaller(t, Config{}, a.Serve(t), b.Serve(t), loading.Serve(t), down)
	c := client(t, addr)

	var st mesh.CallerStatus
	meshtest.Eventually(t, "three instances to answer", func() bool {
		var err error
		st, err = c.Status(ctx(t))
		return err == nil && len(st.Inference) == 4 && !slices.ContainsFunc(st.Inference, func(s mesh.InferenceStatus) bool {
			return s.Model == "" && s.Error == "not connected" && s.Addr != down
		})
	})
	errs := map[string]string{}
	for _, in := range st.Inference {
		errs[in.Addr] = in.Error
	}
	if errs[down] != "not connected" || !slices.Equal(st.Models(), []string{"tiny"}) {
		t.Errorf("status %+v", st)
	}
	if n := slices.IndexFunc(st.Inference, func(s mesh.InferenceStatus) bool { return strings.Contains(s.Error, "loading") }); n < 0 {
		t.Errorf("the loading instance is not reported: %+v", st)
	}

	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status    string                 `json:"status"`
		Inference []mesh.InferenceStatus `json:"inference"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.Status != "ok" || len(body.Inference) != 4 {
		t.Errorf("/health: %d %+v %v", resp.StatusCode, body, err)
	}
}

// TestHealthWithoutInference proves /health is 503 while no inference
// instance serves a model.
func TestHealthWithoutInference(t *testing.T) {
	t.Parallel()
	loading := &meshtest.Inference{InfoErr: chat.Errorf(chat.CodeUnavailable, "the model is still loading")}
	addr := startCaller(t, Config{}, loading.Serve(t), freeAddr(t))
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/health %d, want 503", resp.StatusCode)
	}
}

// freeAddr is a loopback address where nothing listens.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

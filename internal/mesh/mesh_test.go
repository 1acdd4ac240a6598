package mesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestPeerSendsGarbage proves a chunk or result that is not what the
// contract says is the peer's fault (internal), never the client's, and
// a request that does not decode is refused as invalid_argument.
func TestPeerSendsGarbage(t *testing.T) {
	t.Parallel()
	addr := meshtest.ServeRPC(t, func(srv *rpc.Server) {
		srv.Handle(mesh.MethodRunInference, func(_ context.Context, _ json.RawMessage, send func(any) error) (any, error) {
			return nil, send([]int{1})
		})
		srv.Handle(mesh.MethodInfo, func(context.Context, json.RawMessage, func(any) error) (any, error) {
			return "not an object", nil
		})
	})
	conn, err := rpc.Dial(testCtx(t), addr, rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := mesh.NewInferenceClient(conn)
	if _, err := c.RunInference(testCtx(t), chat.Request{}, nil); chat.Code(err) != chat.CodeInternal {
		t.Errorf("bad chunk: %v, want internal", err)
	}
	if _, err := c.Info(testCtx(t)); chat.Code(err) != chat.CodeInternal {
		t.Errorf("bad result: %v, want internal", err)
	}

	fake := &meshtest.Inference{Model: "tiny"}
	conn2, err := rpc.Dial(testCtx(t), fake.Serve(t), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn2.Close() })
	if _, err := conn2.Call(testCtx(t), mesh.MethodRunInference, []string{"not", "a", "request"}, nil); chat.Code(err) != chat.CodeInvalidArgument {
		t.Errorf("bad request: %v, want invalid_argument", err)
	}
	// Through one connection, Infos is that instance.
	if st := mesh.NewInferenceClient(conn2).Infos(testCtx(t)); len(st) != 1 || st[0].Model != "tiny" || st[0].Error != "" {
		t.Errorf("Infos over a connection: %+v", st)
	}
}

// TestHealth: one shape for every service's /health — ok and 200 when a
// model is served, else unavailable and 503 naming the hop and why; an
// inference instance's model and load stand at the top of the body.
func TestHealth(t *testing.T) {
	t.Parallel()
	write := func(h mesh.Health) (int, map[string]any) {
		rec := httptest.NewRecorder()
		h.Write(rec)
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%q: %v", rec.Body, err)
		}
		return rec.Code, body
	}
	live := mesh.CallerStatus{Inference: []mesh.InferenceStatus{{Addr: "a", Model: "tiny"}, {Addr: "b", Error: "not connected"}}}
	if code, body := write(mesh.MeshHealth(live)); code != http.StatusOK || body["status"] != "ok" || body["failing"] != nil ||
		fmt.Sprint(body["models"]) != "[tiny]" || len(body["inference"].([]any)) != 2 {
		t.Errorf("a live mesh: %d %v", code, body)
	}
	down := mesh.MeshHealth(mesh.CallerStatus{Inference: live.Inference[1:]})
	if code, body := write(down); code != http.StatusServiceUnavailable || body["status"] != "unavailable" || body["failing"] != "inference" || body["error"] == "" {
		t.Errorf("no inference instance ready: %d %v", code, body)
	}
	h := mesh.Health{Status: mesh.HealthOK, Models: []string{"tiny"}, InferenceInfo: &mesh.InferenceInfo{Model: "tiny", Slots: 8, Busy: 2}}
	if code, body := write(h); code != http.StatusOK || body["model"] != "tiny" || body["slots"] != 8.0 || body["busy"] != 2.0 || body["queued"] != 0.0 {
		t.Errorf("an inference instance: %d %v", code, body)
	}
}

// TestService: the scaffolding the caller and inference share serves
// /health and /metrics, and counts each generation call by its outcome.
func TestService(t *testing.T) {
	t.Parallel()
	s := mesh.NewService("test", rpc.ServerConfig{}, nil, func(*http.Request) mesh.Health {
		return mesh.Health{Status: mesh.HealthUnavailable, Failing: mesh.FailingModel}
	})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/health %d, want 503", resp.StatusCode)
	}
	_, _ = s.Generation(testCtx(t), func() (chat.Result, error) { return chat.Result{}, nil })
	_, err = s.Generation(testCtx(t), func() (chat.Result, error) { return chat.Result{}, chat.Errorf(chat.CodeOverloaded, "full") })
	if chat.Code(err) != chat.CodeOverloaded {
		t.Errorf("Generation returned %v, want f's error", err)
	}
	resp, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range []string{`slm_test_requests_total{code="ok"} 1`, `slm_test_requests_total{code="overloaded"} 1`, `slm_test_request_duration_seconds_count 2`} {
		if !strings.Contains(string(b), line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

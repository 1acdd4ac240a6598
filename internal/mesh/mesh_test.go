package mesh_test

import (
	"context"
	"encoding/json"
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
	if _, err := c.RunInference(testCtx(t), chat.Request{}, nil); rpc.CodeOf(err) != rpc.CodeInternal {
		t.Errorf("bad chunk: %v, want internal", err)
	}
	if _, err := c.Info(testCtx(t)); rpc.CodeOf(err) != rpc.CodeInternal {
		t.Errorf("bad result: %v, want internal", err)
	}

	fake := &meshtest.Inference{Model: "tiny"}
	conn2, err := rpc.Dial(testCtx(t), fake.Serve(t), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn2.Close() })
	if _, err := conn2.Call(testCtx(t), mesh.MethodRunInference, []string{"not", "a", "request"}, nil); rpc.CodeOf(err) != rpc.CodeInvalidArgument {
		t.Errorf("bad request: %v, want invalid_argument", err)
	}
	// Through one connection, Infos is that instance.
	if st := mesh.NewInferenceClient(conn2).Infos(testCtx(t)); len(st) != 1 || st[0].Model != "tiny" || st[0].Error != "" {
		t.Errorf("Infos over a connection: %+v", st)
	}
}

func TestInvalidArgument(t *testing.T) {
	t.Parallel()
	err := mesh.InvalidArgument((&chat.Request{}).Validate())
	if e, ok := err.(*rpc.Error); !ok || e.Code != rpc.CodeInvalidArgument || e.Param != "messages" {
		t.Errorf("got %#v", err)
	}
	other := rpc.Errorf(rpc.CodeOverloaded, "full")
	if mesh.InvalidArgument(other) != other {
		t.Error("another error was changed")
	}
}

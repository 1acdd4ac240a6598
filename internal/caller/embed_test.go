package caller

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// embedFunc is a fake inference tier's inference::run_embeddings.
type embedFunc func(context.Context, chat.EmbedRequest) (chat.EmbedResult, error)

func (f embedFunc) Embed(ctx context.Context, req chat.EmbedRequest) (chat.EmbedResult, error) {
	return f(ctx, req)
}

// TestEmbed proves the caller relays embeddings requests and results,
// refuses a bad request itself, and passes on an old instance's refusal
// of the method it does not know.
func TestEmbed(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	fake := &meshtest.Inference{Model: "emb"}
	inf := meshtest.ServeRPC(t, func(srv *rpc.Server) {
		mesh.RegisterInference(srv, fake)
		mesh.RegisterInferenceEmbeddings(srv, embedFunc(func(_ context.Context, req chat.EmbedRequest) (chat.EmbedResult, error) {
			calls.Add(1)
			out := make([][]float32, len(req.Inputs))
			for i := range out {
				out[i] = []float32{float32(i), 1}
			}
			return chat.EmbedResult{Model: "emb", Embeddings: out, PromptTokens: 3 * len(req.Inputs)}, nil
		}))
	})
	c := client(t, startCaller(t, Config{}, inf))

	res, err := c.Embed(ctx(t), chat.EmbedRequest{Inputs: []chat.EmbedInput{{Text: "a"}, {Tokens: []int{1, 2}}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "emb" || res.PromptTokens != 6 || len(res.Embeddings) != 2 || res.Embeddings[1][0] != 1 {
		t.Fatalf("result %+v", res)
	}
	_, err = c.Embed(ctx(t), chat.EmbedRequest{})
	var ce *chat.Error
	if !errors.As(err, &ce) || ce.Code != chat.CodeInvalidArgument || ce.Param != "input" {
		t.Fatalf("empty request: %v", err)
	}
	if calls.Load() != 1 {
		t.Errorf("%d calls reached the inference tier, want 1", calls.Load())
	}

	// An instance that predates embeddings knows no such method.
	old := (&meshtest.Inference{Model: "chat"}).Serve(t)
	_, err = client(t, startCaller(t, Config{}, old)).Embed(ctx(t), chat.EmbedRequest{Inputs: []chat.EmbedInput{{Text: "a"}}})
	if chat.Code(err) != chat.CodeNotFound {
		t.Fatalf("old instance: %v, want not_found", err)
	}
}

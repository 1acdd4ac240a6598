package mesh

import (
	"context"
	"encoding/json"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Embedding methods. Peers that predate them answer with a not_found
// error, as for any unknown method.
const (
	// MethodGetEmbeddings is served by the caller tier; the gateway calls
	// it. Request chat.EmbedRequest, no chunks, result chat.EmbedResult.
	MethodGetEmbeddings = "inference::get_embeddings"
	// MethodRunEmbeddings is served by the inference tier; the caller
	// calls it. Request and result as MethodGetEmbeddings.
	MethodRunEmbeddings = "inference::run_embeddings"
)

// Embedder computes embeddings: the caller's and the inference server's
// Embed, and the clients' (CallerClient, InferenceClient), which call one
// over the mesh.
type Embedder interface {
	Embed(ctx context.Context, req chat.EmbedRequest) (chat.EmbedResult, error)
}

var (
	_ Embedder = (*CallerClient)(nil)
	_ Embedder = (*InferenceClient)(nil)
)

// RegisterCallerEmbeddings serves inference::get_embeddings on srv.
func RegisterCallerEmbeddings(srv *rpc.Server, svc Embedder) {
	srv.Handle(MethodGetEmbeddings, embedHandler(svc))
}

// RegisterInferenceEmbeddings serves inference::run_embeddings on srv.
func RegisterInferenceEmbeddings(srv *rpc.Server, svc Embedder) {
	srv.Handle(MethodRunEmbeddings, embedHandler(svc))
}

func embedHandler(svc Embedder) rpc.Handler {
	return func(ctx context.Context, payload json.RawMessage, _ func(any) error) (any, error) {
		var req chat.EmbedRequest
		if err := json.Unmarshal(payload, &req); err != nil {
			return nil, chat.Errorf(chat.CodeInvalidArgument, "decode request: %v", err)
		}
		return result(svc.Embed(ctx, req))
	}
}

// Embed calls inference::get_embeddings.
func (c *CallerClient) Embed(ctx context.Context, req chat.EmbedRequest) (chat.EmbedResult, error) {
	return embed(ctx, c.t, MethodGetEmbeddings, req)
}

// Embed calls inference::run_embeddings.
func (c *InferenceClient) Embed(ctx context.Context, req chat.EmbedRequest) (chat.EmbedResult, error) {
	return embed(ctx, c.t, MethodRunEmbeddings, req)
}

func embed(ctx context.Context, t Transport, method string, req chat.EmbedRequest) (chat.EmbedResult, error) {
	raw, err := t.Call(ctx, method, req, nil)
	var res chat.EmbedResult
	if err == nil {
		err = decodeResult(raw, &res, method)
	}
	return res, err
}

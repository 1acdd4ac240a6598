package mesh

import (
	"context"
	"encoding/json"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// RegisterCaller serves svc's methods (inference::get_response,
// caller::status) on srv.
func RegisterCaller(srv *rpc.Server, svc CallerService) {
	srv.Handle(MethodGetResponse, generateHandler(svc.GetResponse))
	srv.Handle(MethodStatus, func(ctx context.Context, _ json.RawMessage, _ func(any) error) (any, error) {
		return result(svc.Status(ctx))
	})
}

// RegisterInference serves svc's methods (inference::run_inference,
// inference::info) on srv.
func RegisterInference(srv *rpc.Server, svc InferenceService) {
	srv.Handle(MethodRunInference, generateHandler(svc.RunInference))
	srv.Handle(MethodInfo, func(ctx context.Context, _ json.RawMessage, _ func(any) error) (any, error) {
		return result(svc.Info(ctx))
	})
}

// generateHandler serves a generation method: it decodes the chat.Request
// and sends each chat.Delta as a chunk.
func generateHandler(f func(context.Context, chat.Request, func(chat.Delta) error) (chat.Result, error)) rpc.Handler {
	return func(ctx context.Context, payload json.RawMessage, send func(any) error) (any, error) {
		var req chat.Request
		if err := json.Unmarshal(payload, &req); err != nil {
			return nil, chat.Errorf(chat.CodeInvalidArgument, "decode request: %v", err)
		}
		return result(f(ctx, req, func(d chat.Delta) error { return send(d) }))
	}
}

// result is a handler's outcome: the value, or the error alone, so that a
// failed call sends no half-filled result.
func result[T any](v T, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return v, nil
}

package caller

import (
	"context"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
)

var _ mesh.Embedder = (*Server)(nil)

// Embed serves inference::get_embeddings: it checks the request
// (chat.EmbedRequest.Validate) and sends it to an instance of the model
// it names (or the default), as a chat request is routed, through the
// pool, which retries on another instance when the first fails before
// answering. Embeddings carry no conversation, so prefix routing has no
// key for them and the least busy instance of the model takes them.
func (s *Server) Embed(ctx context.Context, req chat.EmbedRequest) (chat.EmbedResult, error) {
	var res chat.EmbedResult
	_, err := s.svc.Generation(ctx, func() (chat.Result, error) {
		if err := req.Validate(); err != nil {
			return chat.Result{}, err
		}
		model, err := s.model(chat.Request{Model: req.Model})
		if err != nil {
			return chat.Result{}, err
		}
		req.Model = model
		if model != "" {
			ctx = withModel(ctx, model)
		}
		res, err = s.inference.Embed(ctx, req)
		if model != "" && chat.Code(err) == chat.CodeUnavailable && !s.ready(model) {
			err = unavailable(model, err)
		}
		return chat.Result{}, err
	})
	return res, err
}

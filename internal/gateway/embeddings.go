package gateway

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/slm-mesh/slm-mesh/internal/openai"
)

// Embeddings serves POST /v1/embeddings: one embedding per input, as
// floats or base64, from the caller's inference::get_embeddings.
func (s *Server) Embeddings(c *gin.Context) {
	req, ok := decodeBody(s, c, openai.DecodeEmbeddingRequest)
	if !ok {
		return
	}
	ctx, done := s.begin(c)
	defer done()

	res, err := s.caller.Embed(ctx, req.EmbedRequest)
	if err != nil {
		s.fail(c, s.errorFor(ctx, c, err))
		return
	}
	s.m.prompt.Add(float64(res.PromptTokens))
	c.JSON(http.StatusOK, openai.NewEmbeddingList(res, req.EncodingFormat, req.Model))
}

package gateway

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/openai"
)

// ChatCompletions serves POST /v1/chat/completions, streamed or not.
//
// A streamed response commits to 200 and server-sent events only when the
// first text (or the result) arrives, so that a request refused upstream —
// overloaded, no instance, bad parameters — still gets its proper HTTP
// status. An error after that is sent as an error event.
func (s *Server) ChatCompletions(c *gin.Context) {
	body, apiErr := s.readBody(c)
	if apiErr != nil {
		s.fail(c, apiErr)
		return
	}
	req, apiErr := openai.DecodeChatRequest(body, s.cfg.Limits)
	if apiErr != nil {
		s.fail(c, apiErr)
		return
	}
	if req.Model != "" {
		if st, err := s.callerStatus(c.Request.Context()); err == nil && len(st.Models()) > 0 && !slices.Contains(st.Models(), req.Model) {
			s.fail(c, openai.ModelNotFound(req.Model))
			return
		}
	}

	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.RequestTimeout)
	defer cancel()
	s.m.inFlight.Inc()
	defer s.m.inFlight.Dec()

	start := time.Now()
	firstText := func() { s.m.ttft.Observe(time.Since(start).Seconds()) }
	if req.Stream {
		s.stream(ctx, c, req, firstText)
	} else {
		s.complete(ctx, c, req, firstText)
	}
}

// complete answers with one chat.completion object.
func (s *Server) complete(ctx context.Context, c *gin.Context, req *openai.ChatCompletionRequest, firstText func()) {
	var text strings.Builder
	var logprobs []chat.TokenLogprob
	if req.Logprobs {
		logprobs = []chat.TokenLogprob{} // [] rather than null when there are none
	}
	res, err := s.caller.GetResponse(ctx, req.ToChat(), func(d chat.Delta) error {
		if text.Len() == 0 && d.Content != "" {
			firstText()
		}
		text.WriteString(d.Content)
		if req.Logprobs {
			logprobs = append(logprobs, d.Logprobs...)
		}
		return nil
	})
	if err != nil {
		s.fail(c, s.errorFor(ctx, c, req, err))
		return
	}
	res.Text, res.Logprobs = text.String(), logprobs
	s.countTokens(res)
	c.JSON(http.StatusOK, openai.NewChatCompletion(openai.NewCompletionMeta(res.Model), res))
}

// stream answers with server-sent events.
func (s *Server) stream(ctx context.Context, c *gin.Context, req *openai.ChatCompletionRequest, firstText func()) {
	var sw *openai.StreamWriter
	begin := func(model string) {
		openai.SetStreamHeaders(c.Writer.Header())
		c.Status(http.StatusOK)
		sw = openai.NewStreamWriter(c.Writer, c.Writer.Flush, openai.NewCompletionMeta(model), req.IncludeUsage)
	}
	res, err := s.caller.GetResponse(ctx, req.ToChat(), func(d chat.Delta) error {
		if sw == nil {
			firstText()
			begin(s.modelName(ctx, req.Model))
		}
		// A failed write means the client is gone: returning the error
		// cancels the call, down to the inference sequence.
		return sw.Send(d)
	})
	switch {
	case err != nil && sw == nil:
		s.fail(c, s.errorFor(ctx, c, req, err))
	case err != nil:
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			_ = sw.Error(s.errorFor(ctx, c, req, err))
		}
	default:
		if sw == nil {
			begin(res.Model)
		}
		s.countTokens(res)
		if sw.Finish(res) == nil {
			_ = sw.Done()
		}
	}
}

// modelName is the model a stream reports before the result names it: the
// one asked for, else the one the mesh serves.
func (s *Server) modelName(ctx context.Context, asked string) string {
	if asked != "" {
		return asked
	}
	if st, err := s.callerStatus(ctx); err == nil && len(st.Models()) > 0 {
		return st.Models()[0]
	}
	return ""
}

// errorFor is clientError for a chat request: the gateway's own timeout is
// told apart from an upstream deadline, and the fields are named as the
// client named them (max_completion_tokens rather than max_tokens).
func (s *Server) errorFor(ctx context.Context, c *gin.Context, req *openai.ChatCompletionRequest, err error) *openai.Error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && c.Request.Context().Err() == nil {
		return openai.Timeout("the request took longer than the gateway allows (" + s.cfg.RequestTimeout.String() + ")")
	}
	return req.InClientTerms(s.clientError(c, err))
}

func (s *Server) countTokens(res chat.Result) {
	s.m.prompt.Add(float64(res.PromptTokens))
	s.m.completion.Add(float64(res.CompletionTokens))
}

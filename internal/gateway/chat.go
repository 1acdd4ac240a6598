package gateway

import (
	"context"
	"errors"
	"net/http"
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
	req, ok := decodeBody(s, c, openai.DecodeChatRequest)
	if !ok {
		return
	}
	ctx, done := s.begin(c)
	defer done()

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
	var calls []chat.ToolCall
	if req.Logprobs {
		logprobs = []chat.TokenLogprob{} // [] rather than null when there are none
	}
	res, err := s.caller.GetResponse(ctx, req.Request, func(d chat.Delta) error {
		if text.Len() == 0 && len(calls) == 0 && (d.Content != "" || len(d.ToolCalls) > 0) {
			firstText()
		}
		text.WriteString(d.Content)
		calls = append(calls, d.ToolCalls...)
		if req.Logprobs {
			logprobs = append(logprobs, d.Logprobs...)
		}
		return nil
	})
	if err != nil {
		s.fail(c, s.errorFor(ctx, c, err))
		return
	}
	res.Text, res.Logprobs, res.ToolCalls = text.String(), logprobs, calls
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
	res, err := s.caller.GetResponse(ctx, req.Request, func(d chat.Delta) error {
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
		s.fail(c, s.errorFor(ctx, c, err))
	case err != nil:
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			_ = sw.Error(s.errorFor(ctx, c, err))
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
// one asked for, else the caller's default, else the one the mesh serves.
func (s *Server) modelName(ctx context.Context, asked string) string {
	if asked != "" {
		return asked
	}
	st, err := s.callerStatus(ctx)
	switch {
	case err != nil:
		return ""
	case st.Default != "":
		return st.Default
	case len(st.Models()) > 0:
		return st.Models()[0]
	}
	return ""
}

// errorFor is clientError for a chat request: the gateway's own timeout is
// told apart from an upstream deadline.
func (s *Server) errorFor(ctx context.Context, c *gin.Context, err error) *openai.Error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && c.Request.Context().Err() == nil {
		return openai.Timeout("the request took longer than the gateway allows (" + s.cfg.RequestTimeout.String() + ")")
	}
	return s.clientError(c, err)
}

func (s *Server) countTokens(res chat.Result) {
	s.m.prompt.Add(float64(res.PromptTokens))
	s.m.completion.Add(float64(res.CompletionTokens))
}

package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/openai"
)

// Completions serves POST /v1/completions, OpenAI's legacy text
// completions, streamed or not: each prompt is a raw-prompt generation
// (no chat template) through the caller, run side by side, and becomes
// the choice of its index. As for chat, a stream commits to 200 only
// when the first text arrives.
func (s *Server) Completions(c *gin.Context) {
	req, ok := decodeBody(s, c, openai.DecodeCompletionRequest)
	if !ok {
		return
	}
	ctx, done := s.begin(c)
	defer done()

	meta := openai.CompletionMeta{ID: openai.NewTextCompletionID(), Created: time.Now().Unix(), Model: req.Model}
	if req.Stream {
		s.streamText(ctx, c, req, meta)
	} else {
		s.completeText(ctx, c, req, meta)
	}
}

// eachPrompt runs every prompt of req at once, calling onDelta (which
// must be safe for concurrent use) with each prompt's index and pieces,
// and returns the results in order, or the first error; an error cancels
// the other prompts.
func (s *Server) eachPrompt(ctx context.Context, req *openai.CompletionRequest, onDelta func(int, chat.Delta) error) ([]chat.Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]chat.Result, len(req.Prompts))
	errs := make([]error, len(req.Prompts))
	var wg sync.WaitGroup
	for i, p := range req.Prompts {
		wg.Go(func() {
			results[i], errs[i] = s.caller.GetResponse(ctx, p, func(d chat.Delta) error { return onDelta(i, d) })
			if errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	// The first failure is the cause; the others may be its cancellation.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	return results, errors.Join(errs...)
}

// completeText answers with one text_completion object.
func (s *Server) completeText(ctx context.Context, c *gin.Context, req *openai.CompletionRequest, meta openai.CompletionMeta) {
	texts := make([]strings.Builder, len(req.Prompts))
	logprobs := make([][]chat.TokenLogprob, len(req.Prompts))
	var mu sync.Mutex
	results, err := s.eachPrompt(ctx, req, func(i int, d chat.Delta) error {
		mu.Lock()
		defer mu.Unlock()
		texts[i].WriteString(d.Content)
		logprobs[i] = append(logprobs[i], d.Logprobs...)
		return nil
	})
	if err != nil {
		s.fail(c, s.errorFor(ctx, c, err))
		return
	}
	choices := make([]openai.CompletionChoice, len(results))
	for i, res := range results {
		text := texts[i].String()
		if req.Echo {
			text = *req.Prompts[i].RawPrompt + text
		}
		choices[i] = openai.CompletionChoice{Text: text, Result: res}
		if req.Logprobs != nil {
			choices[i].Logprobs = openai.NewTextLogprobs(append([]chat.TokenLogprob{}, logprobs[i]...), 0)
		}
		s.countTokens(res)
	}
	c.JSON(http.StatusOK, openai.NewTextCompletion(meta, choices))
}

// streamText answers with server-sent events.
func (s *Server) streamText(ctx context.Context, c *gin.Context, req *openai.CompletionRequest, meta openai.CompletionMeta) {
	var (
		mu     sync.Mutex
		ts     *openai.TextStream
		offset = make([]int, len(req.Prompts)) // bytes of each choice sent
		echoed = make([]bool, len(req.Prompts))
	)
	if meta.Model == "" {
		meta.Model = s.modelName(ctx, "")
	}
	begin := func() {
		openai.SetStreamHeaders(c.Writer.Header())
		c.Status(http.StatusOK)
		ts = openai.NewTextStream(c.Writer, c.Writer.Flush, meta, req.IncludeUsage)
	}
	// echo sends prompt i before its first text. Called with mu held.
	echo := func(i int) error {
		if !req.Echo || echoed[i] {
			return nil
		}
		echoed[i] = true
		p := *req.Prompts[i].RawPrompt
		offset[i] += len(p)
		return ts.Send(i, p, nil)
	}
	results, err := s.eachPrompt(ctx, req, func(i int, d chat.Delta) error {
		mu.Lock()
		defer mu.Unlock()
		if ts == nil {
			begin()
		}
		if err := echo(i); err != nil {
			return err
		}
		var lps *openai.TextLogprobs
		if req.Logprobs != nil {
			lps = openai.NewTextLogprobs(append([]chat.TokenLogprob{}, d.Logprobs...), offset[i])
		}
		offset[i] += len(d.Content)
		// A failed write means the client is gone: returning the error
		// cancels the call, down to the inference sequence.
		return ts.Send(i, d.Content, lps)
	})
	mu.Lock()
	defer mu.Unlock()
	switch {
	case err != nil && ts == nil:
		s.fail(c, s.errorFor(ctx, c, err))
	case err != nil:
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			_ = ts.Error(s.errorFor(ctx, c, err))
		}
	default:
		if ts == nil {
			begin()
		}
		for i, res := range results {
			if echo(i) != nil || ts.Finish(i, res) != nil {
				return
			}
			s.countTokens(res)
		}
		if ts.Usage(results) == nil {
			_ = ts.Done()
		}
	}
}

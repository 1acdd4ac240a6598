package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/bench"
	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/openai"
)

// Outcome is what became of one request.
type Outcome int

// The outcomes, in the order the report lists them.
const (
	// OK is a 200 whose body is well-formed, whose usage agrees with its
	// text, and whose text is its golden.
	OK Outcome = iota
	// RateLimited is a 429 with a Retry-After: the mesh is full and says
	// when to come back, which is a correct answer under overload.
	RateLimited
	// NoRetryAfter is a 429 without a usable Retry-After.
	NoRetryAfter
	// Unavailable is a 503: no instance could take the request.
	Unavailable
	// Other is any other status, an error event in a stream, or no
	// response at all (connection refused or reset).
	Other
	// Malformed is a response that is not what the OpenAI API sends: bad
	// JSON or SSE, a stream without "data: [DONE]", a body cut short, an
	// error without the error envelope, usage that contradicts the text.
	Malformed
	// Hung is a request without a complete response within the timeout.
	Hung
	// WrongOutput is a well-formed response whose text is not the one the
	// same request got alone: with greedy decoding it must be.
	WrongOutput

	numOutcomes = iota
)

var outcomeNames = [numOutcomes]string{"ok", "429", "429 without Retry-After", "503", "other", "malformed", "hung", "wrong output"}

// String names the outcome as the report's table does.
func (o Outcome) String() string { return outcomeNames[o] }

// Failure reports whether one response with this outcome fails the run.
// 429 with Retry-After and 503 are the mesh saying no properly; every other
// outcome but OK is a bug.
func (o Outcome) Failure() bool {
	return o != OK && o != RateLimited && o != Unavailable
}

// Request is one chat completion of the workload, always greedy
// (temperature 0), so that its text is known in advance.
type Request struct {
	Prompt    string
	MaxTokens int
	Stream    bool
}

// Result is one request's checked response.
type Result struct {
	Request Request
	Outcome Outcome
	// Detail says what was wrong (or which status came) for any outcome
	// but OK.
	Detail string
	// Status is the HTTP status, 0 without a response.
	Status int
	// Text is the completion: the message, or a stream's deltas joined.
	Text             string
	PromptTokens     int
	CompletionTokens int
	FinishReason     string
	// Latency runs from sending the request to the end of the response.
	Latency time.Duration
	// FirstToken runs from sending to the first text of a stream; 0 for a
	// response without stream or without text.
	FirstToken time.Duration
	// RetryAfter is what a 429 or 503 asked the client to wait; 0 if it
	// said nothing usable.
	RetryAfter time.Duration
}

// Client sends greedy chat completions to a gateway and checks every
// response against the OpenAI wire format.
type Client struct {
	// BaseURL is the gateway's root, e.g. http://127.0.0.1:3111.
	BaseURL string
	// APIKey, when set, is sent as a bearer token.
	APIKey string
	// Timeout bounds one request, body included; a request that takes
	// longer is Hung. Default 1 minute.
	Timeout time.Duration
	// HTTP is the client used; default http.DefaultClient.
	HTTP *http.Client
}

// maxBodyBytes bounds a non-streamed body; a completion is a few kB.
const maxBodyBytes = 4 << 20

// Do sends req and checks the response. It does not know the golden text:
// the caller compares Text once the outcome is OK. When ctx ends before the
// response, the outcome is Other with ctx's error in Detail.
func (c *Client) Do(ctx context.Context, req Request) Result {
	timeout := c.timeout()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := Result{Request: req}
	start := time.Now()
	err := c.do(rctx, req, &r, start)
	r.Latency = time.Since(start)
	switch {
	case err == nil:
	case ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded):
		r.Outcome, r.Detail = Hung, fmt.Sprintf("no complete response within %v (%v)", timeout, err)
	default:
		var fe failure
		if errors.As(err, &fe) {
			r.Outcome, r.Detail = fe.outcome, fe.msg
		} else {
			r.Outcome, r.Detail = Other, err.Error()
		}
	}
	return r
}

func (c *Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return time.Minute
	}
	return c.Timeout
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// closeIdle closes the client's idle keep-alive connections, which would
// otherwise count among the gateway's descriptors and goroutines.
func (c *Client) closeIdle() { c.http().CloseIdleConnections() }

// failure is a checked response that is not OK.
type failure struct {
	outcome Outcome
	msg     string
}

func (f failure) Error() string { return f.msg }

func fail(o Outcome, format string, args ...any) failure {
	return failure{outcome: o, msg: fmt.Sprintf(format, args...)}
}

func (c *Client) do(ctx context.Context, req Request, r *Result, start time.Time) error {
	body := map[string]any{
		"messages":    []map[string]string{{"role": "user", "content": req.Prompt}},
		"max_tokens":  req.MaxTokens,
		"temperature": 0,
	}
	if req.Stream {
		body["stream"] = true
		body["stream_options"] = map[string]bool{"include_usage": true}
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.BaseURL, "/")+"/v1/chat/completions", bytes.NewReader(payload))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	if c.APIKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	resp, err := c.http().Do(hreq)
	if err != nil {
		return fmt.Errorf("no response: %w", err)
	}
	defer resp.Body.Close()
	r.Status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		return checkError(resp, r)
	}
	if req.Stream {
		return checkStream(resp, req, r, start)
	}
	return checkCompletion(resp, req, r)
}

// completion is a chat.completion as the checks read it: openai's type,
// but its usage and each message's content are pointers here (hiding the
// embedded fields), so that a missing usage or a null content is told
// apart from zero counts and empty text.
type completion struct {
	openai.ChatCompletion
	Choices []struct {
		openai.Choice
		Message struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
	Usage *openai.Usage `json:"usage"`
}

func checkCompletion(resp *http.Response, req Request, r *Result) error {
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fail(Malformed, "200 with Content-Type %q", ct)
	}
	b, err := readBody(resp.Body)
	if err != nil {
		return err
	}
	var cc completion
	if err := json.Unmarshal(b, &cc); err != nil {
		return fail(Malformed, "body is not a chat.completion: %v: %.200q", err, b)
	}
	switch {
	case cc.Object != openai.ObjectChatCompletion || cc.ID == "":
		return fail(Malformed, "object %q, id %q", cc.Object, cc.ID)
	case len(cc.Choices) != 1:
		return fail(Malformed, "%d choices", len(cc.Choices))
	case cc.Choices[0].Message.Role != chat.RoleAssistant || cc.Choices[0].Message.Content == nil:
		return fail(Malformed, "message without assistant role or content: %.200q", b)
	case cc.Usage == nil:
		return fail(Malformed, "no usage")
	}
	r.Text, r.FinishReason = *cc.Choices[0].Message.Content, cc.Choices[0].FinishReason
	r.PromptTokens, r.CompletionTokens = cc.Usage.PromptTokens, cc.Usage.CompletionTokens
	return checkUsage(r.Text, *cc.Usage, r.FinishReason, req.MaxTokens)
}

func checkStream(resp *http.Response, req Request, r *Result, start time.Time) error {
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fail(Malformed, "200 stream with Content-Type %q", ct)
	}
	var (
		text     strings.Builder
		id       string
		finishes int
		u        *openai.Usage
	)
	done, err := bench.ReadEvents(resp.Body, func(data []byte) error {
		ch, err := openai.DecodeChunk(data)
		var apiErr *openai.Error
		if errors.As(err, &apiErr) {
			return fail(Other, "error event in stream: %s: %s", apiErr.Type, apiErr.Message)
		}
		if err != nil {
			return fail(Malformed, "event is not JSON: %v: %.200q", err, data)
		}
		if ch.Object != openai.ObjectChatCompletionChunk || ch.ID == "" || (id != "" && ch.ID != id) {
			return fail(Malformed, "chunk with object %q, id %q (first id %q)", ch.Object, ch.ID, id)
		}
		id = ch.ID
		if len(ch.Choices) > 1 || (u != nil && len(ch.Choices) > 0) {
			return fail(Malformed, "%d choices in a chunk (after usage: %v)", len(ch.Choices), u != nil)
		}
		for _, c := range ch.Choices {
			if c.Delta.Content != nil && *c.Delta.Content != "" {
				if finishes > 0 {
					return fail(Malformed, "text after the finish reason")
				}
				if text.Len() == 0 {
					r.FirstToken = time.Since(start)
				}
				text.WriteString(*c.Delta.Content)
			}
			if c.FinishReason != nil {
				finishes++
				r.FinishReason = *c.FinishReason
			}
		}
		if ch.Usage != nil {
			u = ch.Usage
		}
		return nil
	})
	if err != nil {
		var fe failure
		if errors.As(err, &fe) {
			return fe
		}
		return bodyError(err)
	}
	r.Text = text.String()
	switch {
	case !done:
		return fail(Malformed, "stream ended without data: [DONE]")
	case finishes != 1:
		return fail(Malformed, "%d finish reasons in the stream", finishes)
	case u == nil:
		return fail(Malformed, "no usage chunk, though stream_options.include_usage asked for one")
	}
	r.PromptTokens, r.CompletionTokens = u.PromptTokens, u.CompletionTokens
	return checkUsage(r.Text, *u, r.FinishReason, req.MaxTokens)
}

// checkUsage checks that the token counts agree with the text: a prompt was
// counted, completion tokens come with text and only with text, and a
// generation cut at the limit ("length") is exactly max_tokens long. (The
// engine also says "length" when the context is full; the workload keeps
// prompt plus max_tokens well inside it.)
func checkUsage(text string, u openai.Usage, finish string, maxTokens int) error {
	switch {
	case u.PromptTokens <= 0:
		return fail(Malformed, "prompt_tokens %d", u.PromptTokens)
	case u.TotalTokens != u.PromptTokens+u.CompletionTokens:
		return fail(Malformed, "total_tokens %d is not prompt_tokens %d + completion_tokens %d", u.TotalTokens, u.PromptTokens, u.CompletionTokens)
	case (u.CompletionTokens > 0) != (text != ""):
		return fail(Malformed, "completion_tokens %d with %d bytes of text", u.CompletionTokens, len(text))
	case u.CompletionTokens > maxTokens:
		return fail(Malformed, "completion_tokens %d above max_tokens %d", u.CompletionTokens, maxTokens)
	case finish == "length" && u.CompletionTokens != maxTokens:
		return fail(Malformed, `finish_reason "length" with completion_tokens %d, max_tokens %d`, u.CompletionTokens, maxTokens)
	case finish != "stop" && finish != "length":
		return fail(Malformed, "finish_reason %q", finish)
	}
	return nil
}

// checkError classifies a status other than 200, whose body must be the
// OpenAI error envelope.
func checkError(resp *http.Response, r *Result) error {
	b, err := readBody(resp.Body)
	if err != nil {
		return err
	}
	// A body without the envelope leaves the message and type empty.
	var e openai.Error
	if err := json.Unmarshal(b, &e); err != nil || e.Message == "" || e.Type == "" {
		return fail(Malformed, "%d without an OpenAI error body: %.200q", resp.StatusCode, b)
	}
	r.RetryAfter = retryAfter(resp.Header)
	switch {
	case resp.StatusCode == http.StatusTooManyRequests && r.RetryAfter > 0:
		return fail(RateLimited, "429 %s", e.Message)
	case resp.StatusCode == http.StatusTooManyRequests:
		return fail(NoRetryAfter, "429 with Retry-After %q: %s", resp.Header.Get("Retry-After"), e.Message)
	case resp.StatusCode == http.StatusServiceUnavailable:
		return fail(Unavailable, "503 %s", e.Message)
	}
	return fail(Other, "%d %s: %s", resp.StatusCode, e.Type, e.Message)
}

// retryAfter reads a Retry-After in seconds, the form the gateway sends; 0
// when it is absent or not a positive number.
func retryAfter(h http.Header) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After")))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

func readBody(body io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(body, maxBodyBytes+1))
	if err != nil {
		return nil, bodyError(err)
	}
	if len(b) > maxBodyBytes {
		return nil, fail(Malformed, "body over %d bytes", maxBodyBytes)
	}
	return b, nil
}

// bodyError is an error while reading a body: a timeout stays itself (Do
// tells Hung from it), anything else means the body was cut short.
func bodyError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	return fail(Malformed, "body cut short: %v", err)
}

package openai

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// ObjectTextCompletion is the "object" of a legacy completion and of
// each of its stream's chunks.
const ObjectTextCompletion = "text_completion"

// DefaultCompletionMaxTokens is max_tokens of a legacy completion that
// sets none, as in the OpenAI API.
const DefaultCompletionMaxTokens = 16

// MaxCompletionLogprobs is the most alternatives logprobs may ask for in
// a legacy completion, as in the OpenAI API.
const MaxCompletionLogprobs = 5

// NewTextCompletionID returns a fresh id of the form "cmpl-<random>".
func NewTextCompletionID() string { return "cmpl-" + rand.Text() }

// CompletionRequest is a decoded and validated /v1/completions request:
// one domain request per prompt (each with RawPrompt set), which the
// gateway runs as the choices of one response.
type CompletionRequest struct {
	// Prompts are the requests, one per prompt, in order: choice i
	// answers Prompts[i].
	Prompts []chat.Request
	Model   string
	// Echo puts each prompt before its completion's text.
	Echo bool
	// Logprobs is the logprobs the client asked for: nil for none, else
	// how many alternatives per position (0 to MaxCompletionLogprobs).
	Logprobs     *int
	Stream       bool
	IncludeUsage bool
	User         string
}

// wireCompletionRequest is the JSON body as sent.
type wireCompletionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Suffix        json.RawMessage `json:"suffix"`
	MaxTokens     *int            `json:"max_tokens"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	N             *int            `json:"n"`
	BestOf        *int            `json:"best_of"`
	Stream        *bool           `json:"stream"`
	StreamOptions *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	Logprobs         *int            `json:"logprobs"`
	Echo             *bool           `json:"echo"`
	Stop             json.RawMessage `json:"stop"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	LogitBias        json.RawMessage `json:"logit_bias"`
	Seed             *int64          `json:"seed"`
	User             string          `json:"user"`
}

var knownCompletionFields = jsonFields[wireCompletionRequest]()

// DecodeCompletionRequest decodes and validates a legacy completions
// body: prompt a string or an array of strings (several give several
// choices; token-id prompts are refused), the sampling fields as in chat,
// max_tokens 16 when absent, n and best_of 1, logprobs 0 to 5 (not with
// echo), suffix and logit_bias refused. It returns the request or an
// *Error (400, or 413 past lim.MaxBodyBytes) naming the field.
func DecodeCompletionRequest(body []byte, lim Limits) (*CompletionRequest, *Error) {
	if lim.MaxBodyBytes > 0 && int64(len(body)) > lim.MaxBodyBytes {
		return nil, BodyTooLarge(lim.MaxBodyBytes)
	}
	if !utf8.Valid(body) {
		return nil, InvalidRequest("", "The request body is not valid UTF-8. Send JSON encoded as UTF-8.")
	}
	if e := checkFields(body, knownCompletionFields); e != nil {
		return nil, e
	}
	var w wireCompletionRequest
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, decodeError("", err)
	}
	switch {
	case !isNull(w.Suffix) && string(bytes.TrimSpace(w.Suffix)) != `""`:
		return nil, Unsupported("suffix")
	case !isEmpty(w.LogitBias):
		return nil, Unsupported("logit_bias")
	case w.N != nil && *w.N != 1:
		return nil, InvalidRequest("n", fmt.Sprintf("Invalid 'n': only 1 choice per prompt is supported, got %d.", *w.N))
	case w.BestOf != nil && *w.BestOf != 1:
		return nil, InvalidRequest("best_of", fmt.Sprintf("Invalid 'best_of': only 1 is supported, got %d.", *w.BestOf))
	case w.Logprobs != nil && (*w.Logprobs < 0 || *w.Logprobs > MaxCompletionLogprobs):
		return nil, InvalidRequest("logprobs", fmt.Sprintf("Invalid 'logprobs': must be between 0 and %d, got %d.", MaxCompletionLogprobs, *w.Logprobs))
	case w.Logprobs != nil && w.Echo != nil && *w.Echo:
		// The prompt's logprobs would need a pass the engine does not make.
		return nil, InvalidRequest("echo", "Invalid 'echo': 'echo' with 'logprobs' is not supported by this server.")
	}
	prompts, e := decodePrompt(w.Prompt)
	if e != nil {
		return nil, e
	}
	if lim.MaxChars > 0 {
		chars := 0
		for _, p := range prompts {
			chars += utf8.RuneCountInString(p)
		}
		if chars > lim.MaxChars {
			return nil, InvalidRequest("prompt", fmt.Sprintf("The prompt is too long: %d characters, the limit is %d.", chars, lim.MaxChars))
		}
	}
	// The sampling fields decode as chat's do.
	var base chat.Request
	if e := decodeSampling(&base, &wireRequest{MaxTokens: w.MaxTokens, Temperature: w.Temperature, TopP: w.TopP,
		PresencePenalty: w.PresencePenalty, FrequencyPenalty: w.FrequencyPenalty, Seed: w.Seed}); e != nil {
		return nil, e
	}
	if base.MaxTokens == 0 {
		base.MaxTokens, base.MaxTokensParam = DefaultCompletionMaxTokens, "max_tokens"
	}
	stop, e := decodeStop(w.Stop)
	if e != nil {
		return nil, e
	}
	base.Stop, base.Model = stop, w.Model
	if w.Logprobs != nil {
		base.Logprobs, base.TopLogprobs = true, *w.Logprobs
	}
	r := &CompletionRequest{Model: w.Model, Echo: w.Echo != nil && *w.Echo, Logprobs: w.Logprobs, User: w.User,
		Stream: w.Stream != nil && *w.Stream}
	if w.StreamOptions != nil {
		if !r.Stream {
			return nil, InvalidRequest("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		r.IncludeUsage = w.StreamOptions.IncludeUsage != nil && *w.StreamOptions.IncludeUsage
	}
	for _, p := range prompts {
		req := base
		req.RawPrompt = &p
		if err := req.Validate(); err != nil {
			return nil, FromError(err)
		}
		r.Prompts = append(r.Prompts, req)
	}
	return r, nil
}

// decodePrompt reads prompt: a string or a non-empty array of strings.
func decodePrompt(raw json.RawMessage) ([]string, *Error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return nil, InvalidRequest("prompt", "Missing required parameter: 'prompt'.")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, decodeError("prompt", err)
		}
		return []string{s}, nil
	case '[':
	default:
		return nil, InvalidRequest("prompt", fmt.Sprintf(
			"Invalid type for 'prompt': expected a string or an array of strings, but got %s.", jsonKind(raw)))
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, decodeError("prompt", err)
	}
	if len(items) == 0 {
		return nil, InvalidRequest("prompt", "Invalid 'prompt': must be a string or a non-empty array of strings.")
	}
	out := make([]string, len(items))
	for i, item := range items {
		item = bytes.TrimSpace(item)
		if len(item) == 0 || item[0] != '"' {
			// Token ids: the gateway holds no tokenizer to read them.
			return nil, InvalidRequest(fmt.Sprintf("prompt[%d]", i), fmt.Sprintf(
				"Invalid 'prompt[%d]': expected a string, but got %s; prompts of token ids are not supported by this server.", i, jsonKind(item)))
		}
		if err := json.Unmarshal(item, &out[i]); err != nil {
			return nil, decodeError(fmt.Sprintf("prompt[%d]", i), err)
		}
	}
	return out, nil
}

// TextCompletion is the response to a legacy completion without stream,
// and, with Choices holding pieces, each chunk of its stream.
type TextCompletion struct {
	ID      string           `json:"id"`
	Object  string           `json:"object"`
	Created int64            `json:"created"`
	Model   string           `json:"model"`
	Choices []TextChoice     `json:"choices"`
	Usage   *CompletionUsage `json:"usage,omitempty"`
}

// CompletionUsage counts a legacy completion's tokens.
type CompletionUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// TextChoice is the completion of one prompt (Index), or a piece of it in
// a stream, where FinishReason is null until its last chunk.
type TextChoice struct {
	Text         string        `json:"text"`
	Index        int           `json:"index"`
	Logprobs     *TextLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

// TextLogprobs are a legacy completion's logprobs: per token its text,
// log probability, the most likely alternatives and its byte offset in
// the choice's text.
type TextLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// NewTextLogprobs is lps in the legacy shape, the first token at offset
// bytes into the choice's text; nil for nil.
func NewTextLogprobs(lps []chat.TokenLogprob, offset int) *TextLogprobs {
	if lps == nil {
		return nil
	}
	out := &TextLogprobs{Tokens: []string{}, TokenLogprobs: []float64{}, TopLogprobs: []map[string]float64{}, TextOffset: []int{}}
	for _, lp := range lps {
		top := map[string]float64{}
		for _, t := range lp.Top {
			top[string(t.Bytes)] = t.Logprob
		}
		out.Tokens = append(out.Tokens, string(lp.Bytes))
		out.TokenLogprobs = append(out.TokenLogprobs, lp.Logprob)
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, offset)
		offset += len(lp.Bytes)
	}
	return out
}

// CompletionChoice is one finished choice for NewTextCompletion.
type CompletionChoice struct {
	// Text is the choice's whole text, the prompt first with echo.
	Text string
	// Logprobs, in the legacy shape, or nil.
	Logprobs *TextLogprobs
	Result   chat.Result
}

// NewTextCompletion is the response with choices, in order, and their
// tokens counted together.
func NewTextCompletion(meta CompletionMeta, choices []CompletionChoice) TextCompletion {
	out := TextCompletion{ID: meta.ID, Object: ObjectTextCompletion, Created: meta.Created, Model: meta.Model,
		Choices: make([]TextChoice, len(choices)), Usage: &CompletionUsage{}}
	for i, c := range choices {
		reason := finishReason(c.Result)
		out.Choices[i] = TextChoice{Text: c.Text, Index: i, Logprobs: c.Logprobs, FinishReason: &reason}
		out.Usage.PromptTokens += c.Result.PromptTokens
		out.Usage.CompletionTokens += c.Result.CompletionTokens
		if out.Model == "" {
			out.Model = c.Result.Model
		}
	}
	out.Usage.TotalTokens = out.Usage.PromptTokens + out.Usage.CompletionTokens
	return out
}

// TextChunk is a stream's chunk carrying text (and its logprobs) of
// choice index.
func TextChunk(meta CompletionMeta, index int, text string, logprobs *TextLogprobs) TextCompletion {
	return TextCompletion{ID: meta.ID, Object: ObjectTextCompletion, Created: meta.Created, Model: meta.Model,
		Choices: []TextChoice{{Text: text, Index: index, Logprobs: logprobs}}}
}

// TextFinishChunk is the last chunk of choice index: no text, its finish
// reason.
func TextFinishChunk(meta CompletionMeta, index int, res chat.Result) TextCompletion {
	c := TextChunk(meta, index, "", nil)
	reason := finishReason(res)
	c.Choices[0].FinishReason = &reason
	return c
}

// TextUsageChunk is the chunk stream_options.include_usage asks for: no
// choices, the usage of all of them.
func TextUsageChunk(meta CompletionMeta, results []chat.Result) TextCompletion {
	c := NewTextCompletion(meta, make([]CompletionChoice, 0))
	for _, r := range results {
		c.Usage.PromptTokens += r.PromptTokens
		c.Usage.CompletionTokens += r.CompletionTokens
	}
	c.Usage.TotalTokens = c.Usage.PromptTokens + c.Usage.CompletionTokens
	c.Choices = []TextChoice{}
	return c
}

// TextStream writes a legacy completion's stream: text_completion chunks,
// then "data: [DONE]". Not safe for concurrent use.
type TextStream struct {
	w            *StreamWriter
	meta         CompletionMeta
	includeUsage bool
}

// NewTextStream returns a writer of meta's stream to w, flushed by flush
// after each event; includeUsage adds the usage chunk and a null usage to
// every other chunk, as OpenAI's streams have.
func NewTextStream(w io.Writer, flush func(), meta CompletionMeta, includeUsage bool) *TextStream {
	return &TextStream{w: NewStreamWriter(w, flush, meta, false), meta: meta, includeUsage: includeUsage}
}

// textChunkWithUsage is a chunk whose usage is written even when null.
type textChunkWithUsage struct {
	TextCompletion
	Usage *CompletionUsage `json:"usage"`
}

func (s *TextStream) chunk(c TextCompletion) error {
	if s.w.err != nil || s.w.ended {
		return s.w.err
	}
	if s.includeUsage {
		return s.w.event(textChunkWithUsage{c, c.Usage})
	}
	return s.w.event(c)
}

// Send writes text of choice index with its tokens' logprobs; empty
// text without logprobs writes nothing.
func (s *TextStream) Send(index int, text string, logprobs *TextLogprobs) error {
	if text == "" && logprobs == nil {
		return nil
	}
	return s.chunk(TextChunk(s.meta, index, text, logprobs))
}

// Finish writes choice index's finish reason.
func (s *TextStream) Finish(index int, res chat.Result) error {
	return s.chunk(TextFinishChunk(s.meta, index, res))
}

// Usage writes the usage chunk of every choice's result, if the client
// asked for it.
func (s *TextStream) Usage(results []chat.Result) error {
	if !s.includeUsage {
		return nil
	}
	return s.chunk(TextUsageChunk(s.meta, results))
}

// Error ends the stream with e as an error event (StreamWriter.Error).
func (s *TextStream) Error(e *Error) error { return s.w.Error(e) }

// Done ends the stream with "data: [DONE]".
func (s *TextStream) Done() error { return s.w.Done() }

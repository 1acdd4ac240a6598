// Package chat holds the domain types of slm-mesh: a chat request as the
// services pass it to each other, the pieces of text a generation streams,
// and its final result. The OpenAI wire format (internal/openai) is turned
// into these at the gateway; the inference engine consumes them.
package chat

import (
	"cmp"
	"encoding/json"
)

// Roles a message may have once normalised. The OpenAI "developer" role is
// mapped to RoleSystem at the edge.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Finish reasons, as the OpenAI API names them.
const (
	FinishStop   = "stop"   // end-of-generation token or a stop string
	FinishLength = "length" // max_tokens reached
)

// Message is one turn of a conversation; Content is plain text.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// ToolCalls are the calls an assistant message made (see tools.go).
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID is the call a RoleTool message answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
}

// Request is a chat generation request. Optional sampling fields are
// pointers so that "absent" (use the default) differs from zero.
type Request struct {
	// Model names the model the client asked for; empty means the served one.
	Model    string    `json:"model,omitempty"`
	Messages []Message `json:"messages"`
	// RawPrompt, for a completion (OpenAI's legacy /v1/completions), is
	// the text the model continues, used as it is: no chat template, and
	// no control tokens however the text spells them. Messages and Tools
	// are then empty. Peers that predate it see a request without
	// messages and refuse it.
	RawPrompt *string `json:"raw_prompt,omitempty"`
	// Tools are the functions the model may call; none for plain chat.
	Tools []Tool `json:"tools,omitempty"`
	// ToolChoice says whether and which tools the model must call; nil
	// is ToolChoiceAuto (see ToolMode).
	ToolChoice *ToolChoice `json:"tool_choice,omitempty"`
	// ParallelToolCalls false allows at most one call per reply; nil is
	// true, as in the OpenAI API.
	ParallelToolCalls *bool `json:"parallel_tool_calls,omitempty"`

	// MaxTokens bounds the completion. 0 leaves it to the inference
	// engine: its default, shortened to the room the prompt leaves in the
	// context. The caller refuses values above its deployment's limit.
	MaxTokens int `json:"max_tokens,omitempty"`
	// MaxTokensParam is the name the client gave MaxTokens: "max_tokens"
	// (or empty), or OpenAI's newer "max_completion_tokens". An error about
	// the field names it as the client did (MaxTokensName).
	MaxTokensParam string `json:"max_tokens_param,omitempty"`

	Temperature      *float32 `json:"temperature,omitempty"`
	TopP             *float32 `json:"top_p,omitempty"`
	TopK             *int     `json:"top_k,omitempty"`
	MinP             *float32 `json:"min_p,omitempty"`
	Seed             *int64   `json:"seed,omitempty"`
	PresencePenalty  *float32 `json:"presence_penalty,omitempty"`
	FrequencyPenalty *float32 `json:"frequency_penalty,omitempty"`
	RepeatPenalty    *float32 `json:"repeat_penalty,omitempty"`

	// Stop holds up to four strings; generation ends before any of them and
	// the string itself is not part of the output.
	Stop []string `json:"stop,omitempty"`

	// ResponseFormat constrains the output to JSON; nil or type "text"
	// leaves it free.
	ResponseFormat *ResponseFormat `json:"response_format,omitempty"`
	// Logprobs asks for the log probability of each generated token, and
	// TopLogprobs (0 to MaxTopLogprobs) for that many of the most likely
	// alternatives at each position.
	Logprobs    bool `json:"logprobs,omitempty"`
	TopLogprobs int  `json:"top_logprobs,omitempty"`
}

// MaxTokensName is the name of MaxTokens as the client gave it, for
// errors: MaxTokensParam, or max_tokens when it is empty.
func (r *Request) MaxTokensName() string { return cmp.Or(r.MaxTokensParam, "max_tokens") }

// Response format types, as the OpenAI API names them.
const (
	FormatText       = "text"        // free text, the default
	FormatJSONObject = "json_object" // any JSON object
	FormatJSONSchema = "json_schema" // JSON valid against Schema
)

// ResponseFormat is what a completion must look like.
type ResponseFormat struct {
	// Type is FormatText, FormatJSONObject or FormatJSONSchema.
	Type string `json:"type"`
	// Name and Schema are the json_schema's, for FormatJSONSchema. Schema
	// is a JSON Schema object, kept as the client sent it: the inference
	// engine turns it into a grammar, and refuses what it cannot express.
	Name   string          `json:"name,omitempty"`
	Schema json.RawMessage `json:"schema,omitempty"`
	// Strict is the client's "strict"; output always follows the schema
	// here, strict or not.
	Strict bool `json:"strict,omitempty"`
}

// MaxTopLogprobs is the most alternatives top_logprobs may ask for, as in
// the OpenAI API.
const MaxTopLogprobs = 20

// Delta is one streamed piece of generated text. It never splits a UTF-8
// character.
type Delta struct {
	Content string `json:"content"`
	// Logprobs are those of the tokens whose text this delta completes,
	// when the request asked for them: an entry never reaches the client
	// before its token's text (a stop string or a split UTF-8 character
	// holds both back). The tokens of a stop string have none; a token
	// whose text ends the content and begins the stop string keeps its
	// entry.
	Logprobs []TokenLogprob `json:"logprobs,omitempty"`
	// ToolCalls are the calls the model completed since the last delta,
	// each whole, in order. Peers that predate them never send any, and
	// ignore them.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// Empty reports whether d carries nothing: no text, logprobs or calls.
func (d Delta) Empty() bool {
	return d.Content == "" && len(d.Logprobs) == 0 && len(d.ToolCalls) == 0
}

// TokenLogprob is one generated token with its log probability and, if
// asked for, the most likely tokens at its position.
type TokenLogprob struct {
	// Bytes are the token's text; a token may hold part of a UTF-8
	// character.
	Bytes   []byte  `json:"bytes"`
	Logprob float64 `json:"logprob"`
	// Top holds the most likely tokens at this position, most likely
	// first; the generated token is among them only if it is that likely.
	Top []TopLogprob `json:"top,omitempty"`
}

// TopLogprob is one alternative at a token's position.
type TopLogprob struct {
	Bytes   []byte  `json:"bytes"`
	Logprob float64 `json:"logprob"`
}

// Result is the outcome of a finished generation.
type Result struct {
	// Text is the whole completion; streaming calls may leave it empty, since
	// the client already has every delta.
	Text             string `json:"text,omitempty"`
	FinishReason     string `json:"finish_reason"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	// CachedTokens is how many of the PromptTokens the engine found already
	// in its KV cache (a conversation's earlier turns) and did not process
	// again; OpenAI's usage.prompt_tokens_details.cached_tokens.
	CachedTokens int `json:"cached_tokens,omitempty"`
	// Model is the name of the model that produced the text.
	Model string `json:"model,omitempty"`
	// Logprobs, like Text, may be left to the deltas; nil when the
	// request did not ask for them.
	Logprobs []TokenLogprob `json:"logprobs,omitempty"`
	// ToolCalls, like Text, may be left to the deltas: the calls the
	// model made, in order; FinishReason is then FinishToolCalls.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// MaxStop is the most stop strings a request may carry, as in the OpenAI API.
const MaxStop = 4

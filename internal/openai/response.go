package openai

import (
	"cmp"
	"crypto/rand"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Object names, as the OpenAI API sends them in "object".
const (
	ObjectChatCompletion      = "chat.completion"
	ObjectChatCompletionChunk = "chat.completion.chunk"
	ObjectList                = "list"
	ObjectModel               = "model"
)

// NewCompletionID returns a fresh id of the form "chatcmpl-<random>".
func NewCompletionID() string {
	// rand.Text gives 26 base32 characters, about 128 bits: unique enough to
	// find one request in the logs of many gateways.
	return "chatcmpl-" + rand.Text()
}

// CompletionMeta identifies one completion. A response and every chunk of a
// stream carry the same values, so they are chosen once per request.
type CompletionMeta struct {
	ID      string
	Created int64 // Unix seconds
	Model   string
}

// NewCompletionMeta returns the meta of a completion that starts now, with a
// fresh id. model is the name reported to the client, usually the served
// model's.
func NewCompletionMeta(model string) CompletionMeta {
	return CompletionMeta{ID: NewCompletionID(), Created: time.Now().Unix(), Model: model}
}

// Usage counts the tokens of a completion.
type Usage struct {
	PromptTokens        int                 `json:"prompt_tokens"`
	CompletionTokens    int                 `json:"completion_tokens"`
	TotalTokens         int                 `json:"total_tokens"`
	PromptTokensDetails PromptTokensDetails `json:"prompt_tokens_details"`
}

// PromptTokensDetails breaks PromptTokens down; OpenAI always sends it.
type PromptTokensDetails struct {
	// CachedTokens are the prompt tokens the server found in its cache (a
	// conversation's earlier turns) and did not process again.
	CachedTokens int `json:"cached_tokens"`
}

func usageOf(res chat.Result) Usage {
	return Usage{
		PromptTokens:        res.PromptTokens,
		CompletionTokens:    res.CompletionTokens,
		TotalTokens:         res.PromptTokens + res.CompletionTokens,
		PromptTokensDetails: PromptTokensDetails{CachedTokens: res.CachedTokens},
	}
}

// ChatCompletion is the response to a request without stream.
type ChatCompletion struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []Choice `json:"choices"`
	Usage   Usage    `json:"usage"`
}

// Choice is one alternative of a ChatCompletion; we always send one.
type Choice struct {
	Index        int             `json:"index"`
	Message      ResponseMessage `json:"message"`
	FinishReason string          `json:"finish_reason"`
	// Logprobs is null unless the request asked for them.
	Logprobs *Logprobs `json:"logprobs"`
}

// Logprobs are the log probabilities of a choice's tokens.
type Logprobs struct {
	// Content is never null: a completion without tokens has [].
	Content []TokenLogprob `json:"content"`
	// Refusal is always null: the server never refuses in a message.
	Refusal []TokenLogprob `json:"refusal"`
}

// TokenLogprob is one token of the completion.
type TokenLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	// Bytes are the token's UTF-8 bytes; Token may show a part of a
	// character as U+FFFD, Bytes never do.
	Bytes []int `json:"bytes"`
	// TopLogprobs are the most likely tokens at this position, as many as
	// top_logprobs asked for; [] when it asked for none.
	TopLogprobs []TopLogprob `json:"top_logprobs"`
}

// TopLogprob is one of the most likely tokens at a position.
type TopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// NewLogprobs turns the mesh's logprobs into OpenAI's; a nil lps gives
// nil (no logprobs asked for, "logprobs": null).
func NewLogprobs(lps []chat.TokenLogprob) *Logprobs {
	if lps == nil {
		return nil
	}
	out := &Logprobs{Content: make([]TokenLogprob, len(lps))}
	for i, lp := range lps {
		top := make([]TopLogprob, len(lp.Top))
		for j, t := range lp.Top {
			top[j] = TopLogprob{Token: string(t.Bytes), Logprob: t.Logprob, Bytes: byteInts(t.Bytes)}
		}
		out.Content[i] = TokenLogprob{Token: string(lp.Bytes), Logprob: lp.Logprob, Bytes: byteInts(lp.Bytes), TopLogprobs: top}
	}
	return out
}

// byteInts spells b as OpenAI does, an array of numbers (a []byte would
// become base64).
func byteInts(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

// ResponseMessage is the assistant's message in a Choice.
type ResponseMessage struct {
	Role string `json:"role"`
	// Content is null when the model only called tools.
	Content *string `json:"content"`
	// ToolCalls are the calls the model made, left out when none: each
	// {"id":"call_…","type":"function","function":{"name":…,"arguments":"{…}"}}.
	ToolCalls []chat.ToolCall `json:"tool_calls,omitempty"`
}

// newResponseMessage is the assistant's message for a result: its text,
// or null when it made calls and wrote nothing.
func newResponseMessage(res chat.Result) ResponseMessage {
	m := ResponseMessage{Role: chat.RoleAssistant, ToolCalls: res.ToolCalls}
	if res.Text != "" || len(res.ToolCalls) == 0 {
		text := res.Text
		m.Content = &text
	}
	return m
}

// NewChatCompletion builds the response for a finished generation. The model
// is meta.Model, or res.Model when meta has none.
func NewChatCompletion(meta CompletionMeta, res chat.Result) ChatCompletion {
	return ChatCompletion{
		ID:      meta.ID,
		Object:  ObjectChatCompletion,
		Created: meta.Created,
		Model:   modelOf(meta, res),
		Choices: []Choice{{
			Message:      newResponseMessage(res),
			FinishReason: finishReason(res),
			Logprobs:     NewLogprobs(res.Logprobs),
		}},
		Usage: usageOf(res),
	}
}

// ChatCompletionChunk is one event of a streamed completion.
type ChatCompletionChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	// Choices is empty, not null, in the usage chunk.
	Choices []ChunkChoice `json:"choices"`
	// Usage is set only in the last chunk, and only if the client asked
	// with stream_options.include_usage; the StreamWriter then writes it
	// as null in the chunks before.
	Usage *Usage `json:"usage,omitempty"`
}

// ChunkChoice is the change a chunk brings to the one choice.
type ChunkChoice struct {
	Index int        `json:"index"`
	Delta ChunkDelta `json:"delta"`
	// FinishReason is null until the final chunk.
	FinishReason *string `json:"finish_reason"`
	// Logprobs are those of the chunk's tokens when the request asked for
	// them; otherwise null.
	Logprobs *Logprobs `json:"logprobs"`
}

// ChunkDelta is the text a chunk adds. The first chunk carries the role and
// an empty content; the final one is empty.
type ChunkDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
	// ToolCalls carries a piece of one call, as OpenAI streams them: the
	// first piece of a call has its index, id, type and name, with empty
	// arguments; the pieces after it add to the arguments.
	ToolCalls []ChunkToolCall `json:"tool_calls,omitempty"`
}

// ChunkToolCall is a piece of a streamed tool call.
type ChunkToolCall struct {
	// Index is the call's place among the reply's calls, from 0; the
	// pieces of one call share it.
	Index    int               `json:"index"`
	ID       string            `json:"id,omitempty"`
	Type     string            `json:"type,omitempty"`
	Function ChunkToolFunction `json:"function"`
}

// ChunkToolFunction is the function of a ChunkToolCall: its name in the
// first piece, a fragment of the arguments in each.
type ChunkToolFunction struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// chunk starts a chunk for meta with the given choices.
func chunk(meta CompletionMeta, choices ...ChunkChoice) ChatCompletionChunk {
	if choices == nil {
		choices = []ChunkChoice{}
	}
	return ChatCompletionChunk{
		ID:      meta.ID,
		Object:  ObjectChatCompletionChunk,
		Created: meta.Created,
		Model:   meta.Model,
		Choices: choices,
	}
}

// RoleChunk is the first chunk of a stream: the assistant role, no text yet.
func RoleChunk(meta CompletionMeta) ChatCompletionChunk {
	empty := ""
	return chunk(meta, ChunkChoice{Delta: ChunkDelta{Role: chat.RoleAssistant, Content: &empty}})
}

// DeltaChunk carries a piece of generated text and, when asked for, the
// logprobs of the tokens generated since the last chunk.
func DeltaChunk(meta CompletionMeta, d chat.Delta) ChatCompletionChunk {
	return chunk(meta, ChunkChoice{Delta: ChunkDelta{Content: &d.Content}, Logprobs: NewLogprobs(d.Logprobs)})
}

// ToolCallChunks are the chunks of call, the index-th of the reply: its
// id, type and name, then its arguments.
//
// The engine passes a call on once it is complete (its arguments are
// then valid JSON), so the arguments come in one fragment; a client that
// joins fragments, as OpenAI's clients do, reads the same.
func ToolCallChunks(meta CompletionMeta, index int, call chat.ToolCall) []ChatCompletionChunk {
	head := ChunkToolCall{Index: index, ID: call.ID, Type: cmp.Or(call.Type, chat.ToolTypeFunction),
		Function: ChunkToolFunction{Name: call.Function.Name}}
	args := ChunkToolCall{Index: index, Function: ChunkToolFunction{Arguments: call.Function.Arguments}}
	return []ChatCompletionChunk{
		chunk(meta, ChunkChoice{Delta: ChunkDelta{ToolCalls: []ChunkToolCall{head}}}),
		chunk(meta, ChunkChoice{Delta: ChunkDelta{ToolCalls: []ChunkToolCall{args}}}),
	}
}

// FinishChunk is the last chunk of the choice: an empty delta and the finish
// reason.
func FinishChunk(meta CompletionMeta, res chat.Result) ChatCompletionChunk {
	reason := finishReason(res)
	return chunk(meta, ChunkChoice{FinishReason: &reason})
}

// UsageChunk carries the token counts, with no choices, after FinishChunk.
func UsageChunk(meta CompletionMeta, res chat.Result) ChatCompletionChunk {
	c := chunk(meta)
	u := usageOf(res)
	c.Usage = &u
	return c
}

// finishReason defaults to "stop": a generation that ended without saying
// why ended on its own.
func finishReason(res chat.Result) string {
	if res.FinishReason == "" {
		return chat.FinishStop
	}
	return res.FinishReason
}

func modelOf(meta CompletionMeta, res chat.Result) string {
	if meta.Model != "" {
		return meta.Model
	}
	return res.Model
}

// ModelList is the response of GET /v1/models.
type ModelList struct {
	Object string  `json:"object"`
	Data   []Model `json:"data"`
}

// Model is one entry of a ModelList.
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"` // Unix seconds
	OwnedBy string `json:"owned_by"`
}

// NewModel describes a served model; created is in Unix seconds.
func NewModel(id string, created int64, ownedBy string) Model {
	return Model{ID: id, Object: ObjectModel, Created: created, OwnedBy: ownedBy}
}

// NewModelList lists models; with none, Data is [] rather than null, which
// clients iterating over it expect.
func NewModelList(models ...Model) ModelList {
	if models == nil {
		models = []Model{}
	}
	return ModelList{Object: ObjectList, Data: models}
}

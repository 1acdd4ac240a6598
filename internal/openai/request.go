// Package openai is the OpenAI chat-completions wire format: decoding and
// validating requests into chat domain types, building responses and stream
// chunks, the SSE writer and the error envelope. It knows nothing of gin or
// of the services, so the gateway's handlers stay thin.
package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Limits bound what DecodeChatRequest accepts. A zero field means no limit.
type Limits struct {
	// MaxBodyBytes is the largest body accepted; a larger one gets a 413.
	// The gateway should also stop reading at this size, so that a huge body
	// is never held in memory; this check is what turns it into a 413.
	MaxBodyBytes int64
	// MaxMessages is the most messages a request may hold.
	MaxMessages int
	// MaxChars is the most characters (Unicode code points) all message
	// contents may hold together.
	MaxChars int
}

// ChatCompletionRequest is a decoded and validated /v1/chat/completions
// request: the domain request the services consume, and beside it what
// only the HTTP exchange needs.
//
// In the domain request, Messages are non-empty, "developer" has become
// chat.RoleSystem and array content has been joined into plain text.
// MaxTokens is max_completion_tokens if given, else max_tokens, and then
// at least 1; 0 when the client gave neither (the server's default), with
// MaxTokensParam the name the client used, or empty. The other optional
// fields are nil when the client left them out.
type ChatCompletionRequest struct {
	chat.Request
	// Stream asks for server-sent events instead of one JSON response.
	Stream bool
	// IncludeUsage asks for a final usage chunk in a stream.
	IncludeUsage bool
	// User is the client's end-user id, for logs.
	User string
}

// wireRequest is the JSON body as sent. Fields whose JSON type varies
// (messages' content, stop) or whose presence alone matters (tools, …) are
// kept raw and decoded by hand, so that errors can name the exact field.
type wireRequest struct {
	Model               string            `json:"model"`
	Messages            []json.RawMessage `json:"messages"`
	MaxTokens           *int              `json:"max_tokens"`
	MaxCompletionTokens *int              `json:"max_completion_tokens"`
	Temperature         *float64          `json:"temperature"`
	TopP                *float64          `json:"top_p"`
	Seed                *int64            `json:"seed"`
	Stop                json.RawMessage   `json:"stop"`
	PresencePenalty     *float64          `json:"presence_penalty"`
	FrequencyPenalty    *float64          `json:"frequency_penalty"`
	Stream              *bool             `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	N    *int   `json:"n"`
	User string `json:"user"`

	// Function calling (decodeTools, decodeToolChoice).
	Tools             json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`

	// Accepted and ignored: they identify the client or tune caching or
	// billing, and change nothing in the generated text.
	Metadata             map[string]string `json:"metadata"`
	Prediction           json.RawMessage   `json:"prediction"`
	PromptCacheKey       *string           `json:"prompt_cache_key"`
	PromptCacheRetention *string           `json:"prompt_cache_retention"`
	PromptCacheOptions   json.RawMessage   `json:"prompt_cache_options"`
	SafetyIdentifier     *string           `json:"safety_identifier"`

	ResponseFormat *wireResponseFormat `json:"response_format"`
	Logprobs       *bool               `json:"logprobs"`
	TopLogprobs    *int                `json:"top_logprobs"`

	// Decoded only to be refused; see checkUnsupported. Store and
	// ServiceTier pass with the values that ask for what we do anyway.
	Functions        json.RawMessage `json:"functions"`
	FunctionCall     json.RawMessage `json:"function_call"`
	LogitBias        json.RawMessage `json:"logit_bias"`
	Store            *bool           `json:"store"`
	ServiceTier      *string         `json:"service_tier"`
	Modalities       []string        `json:"modalities"`
	Audio            json.RawMessage `json:"audio"`
	ReasoningEffort  json.RawMessage `json:"reasoning_effort"`
	Verbosity        json.RawMessage `json:"verbosity"`
	Moderation       json.RawMessage `json:"moderation"`
	WebSearchOptions json.RawMessage `json:"web_search_options"`
}

// wireResponseFormat is response_format: {"type":"text"},
// {"type":"json_object"} or {"type":"json_schema","json_schema":{...}}.
type wireResponseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict"`
	} `json:"json_schema"`
}

// knownFields are the top-level fields of wireRequest: every field of the
// OpenAI chat-completions request. Any other name is refused, as OpenAI
// refuses it, rather than silently ignored: a misspelt "max_token" would
// otherwise change nothing without the client knowing.
var knownFields = jsonFields[wireRequest]()

// jsonFields are the JSON names of the fields of struct T.
func jsonFields[T any]() map[string]bool {
	known := map[string]bool{}
	t := reflect.TypeFor[T]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		known[name] = true
	}
	return known
}

// wireMessage is one element of messages.
type wireMessage struct {
	Role         string          `json:"role"`
	Content      json.RawMessage `json:"content"`
	ToolCalls    json.RawMessage `json:"tool_calls"`
	ToolCallID   *string         `json:"tool_call_id"`
	FunctionCall json.RawMessage `json:"function_call"`
}

// wireToolCall is one element of an assistant message's tool_calls.
type wireToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function *struct {
		Name      string  `json:"name"`
		Arguments *string `json:"arguments"`
	} `json:"function"`
}

// wireTool is one element of tools.
type wireTool struct {
	Type     string `json:"type"`
	Function *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
	} `json:"function"`
}

// wirePart is one element of an array content.
type wirePart struct {
	Type string  `json:"type"`
	Text *string `json:"text"`
}

// DecodeChatRequest decodes and validates a chat-completions request body.
// It returns either the request or an *Error with status 400 (or 413 for a
// body over lim.MaxBodyBytes) whose Param names the offending field.
// A top-level field the OpenAI API does not define is refused, as OpenAI
// refuses it; fields this server cannot honour are refused too (see
// checkUnsupported).
//
// The body must be UTF-8, as JSON text must be (RFC 8259): encoding/json
// would quietly turn invalid bytes into U+FFFD, changing what the client
// wrote. Escaped characters are text like any other, so a content may hold
// "\u0000": it reaches the model as a NUL character.
func DecodeChatRequest(body []byte, lim Limits) (*ChatCompletionRequest, *Error) {
	if lim.MaxBodyBytes > 0 && int64(len(body)) > lim.MaxBodyBytes {
		return nil, BodyTooLarge(lim.MaxBodyBytes)
	}
	if !utf8.Valid(body) {
		return nil, InvalidRequest("", "The request body is not valid UTF-8. Send JSON encoded as UTF-8.")
	}
	if e := checkFieldNames(body); e != nil {
		return nil, e
	}
	var w wireRequest
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, decodeError("", err)
	}
	if e := checkUnsupported(&w); e != nil {
		return nil, e
	}

	r := &ChatCompletionRequest{Request: chat.Request{Model: w.Model}, User: w.User}
	if e := decodeMessages(&r.Request, w.Messages, lim); e != nil {
		return nil, e
	}
	if e := decodeSampling(&r.Request, &w); e != nil {
		return nil, e
	}
	stop, e := decodeStop(w.Stop)
	if e != nil {
		return nil, e
	}
	r.Stop = stop

	if e := decodeTools(&r.Request, &w); e != nil {
		return nil, e
	}
	if w.N != nil && *w.N != 1 {
		return nil, InvalidRequest("n", fmt.Sprintf("Invalid 'n': only 1 choice is supported, got %d.", *w.N))
	}
	if e := decodeResponseFormat(&r.Request, w.ResponseFormat); e != nil {
		return nil, e
	}
	r.Logprobs = w.Logprobs != nil && *w.Logprobs
	if w.TopLogprobs != nil {
		r.TopLogprobs = *w.TopLogprobs // its range is chat.Request.Validate's
	}
	r.Stream = w.Stream != nil && *w.Stream
	if w.StreamOptions != nil {
		if !r.Stream {
			return nil, InvalidRequest("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		r.IncludeUsage = w.StreamOptions.IncludeUsage != nil && *w.StreamOptions.IncludeUsage
	}
	// The rules every tier shares: ranges, stop strings. Those on the
	// messages were checked as they were decoded.
	if err := r.ValidateOptions(); err != nil {
		return nil, FromError(err)
	}
	return r, nil
}

// checkFieldNames refuses a body with a top-level field that is not in
// knownFields, with OpenAI's wording. The names are matched exactly:
// encoding/json alone would take "Messages" for "messages".
func checkFieldNames(body []byte) *Error { return checkFields(body, knownFields) }

// checkFields refuses a body with a top-level field not in known.
func checkFields(body []byte, known map[string]bool) *Error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return decodeError("", err)
	}
	// Report the first unknown name in sorted order, so that the same body
	// always gets the same error.
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if !known[name] {
			return InvalidRequest(name, "Unrecognized request argument supplied: "+name)
		}
	}
	return nil
}

// checkUnsupported refuses the parameters a client sends only when it wants
// a feature we lack. Empty or neutral values ("functions": [], "store":
// false, "modalities": ["text"]) ask for nothing and pass. It also
// refuses, as OpenAI does, the parameters that only mean something next
// to another one: tool_choice without tools, top_logprobs without
// logprobs.
func checkUnsupported(w *wireRequest) *Error {
	switch {
	case !isEmpty(w.Functions):
		return Unsupported("functions")
	case !isNull(w.ToolChoice) && isEmpty(w.Tools):
		return InvalidRequest("tool_choice", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
	case !isNull(w.FunctionCall) && string(bytes.TrimSpace(w.FunctionCall)) != `"none"`:
		return Unsupported("function_call")
	case w.TopLogprobs != nil && (w.Logprobs == nil || !*w.Logprobs):
		return InvalidRequest("top_logprobs", "Invalid value for 'top_logprobs': 'top_logprobs' is only allowed when 'logprobs' is true.")
	case !isEmpty(w.LogitBias):
		return Unsupported("logit_bias")
	case w.Store != nil && *w.Store:
		// Nothing is stored: a client relying on it would look for the
		// completion later in vain.
		return Unsupported("store")
	case w.ServiceTier != nil && *w.ServiceTier != "auto" && *w.ServiceTier != "default":
		return Unsupported("service_tier")
	case len(w.Modalities) > 0 && !slices.Equal(w.Modalities, []string{"text"}):
		return Unsupported("modalities")
	case !isNull(w.Audio):
		return Unsupported("audio")
	case !isNull(w.ReasoningEffort):
		return Unsupported("reasoning_effort")
	case !isNull(w.Verbosity):
		return Unsupported("verbosity")
	case !isNull(w.Moderation):
		return Unsupported("moderation")
	case !isNull(w.WebSearchOptions):
		return Unsupported("web_search_options")
	}
	return nil
}

// decodeMessages decodes the messages into r and checks them with the
// rules every tier shares (chat.Request.ValidateMessages), then against
// lim.
func decodeMessages(r *chat.Request, raw []json.RawMessage, lim Limits) *Error {
	// Checked before decoding so that a huge request costs little.
	if lim.MaxMessages > 0 && len(raw) > lim.MaxMessages {
		return InvalidRequest("messages", fmt.Sprintf(
			"Too many messages: %d, the limit is %d.", len(raw), lim.MaxMessages))
	}
	r.Messages = make([]chat.Message, 0, len(raw))
	chars := 0
	for i, m := range raw {
		msg, e := decodeMessage(fmt.Sprintf("messages[%d]", i), m)
		if e != nil {
			return e
		}
		chars += utf8.RuneCountInString(msg.Content)
		r.Messages = append(r.Messages, msg)
	}
	// An empty array reaches this with nothing decoded and no limit
	// broken, so that its fault is still the first one reported.
	if err := r.ValidateMessages(); err != nil {
		return FromError(err)
	}
	if lim.MaxChars > 0 && chars > lim.MaxChars {
		return InvalidRequest("messages", fmt.Sprintf(
			"The messages are too long: %d characters, the limit is %d.", chars, lim.MaxChars))
	}
	return nil
}

// decodeMessage decodes one message; path is its place, e.g. "messages[2]".
func decodeMessage(path string, raw json.RawMessage) (chat.Message, *Error) {
	var w wireMessage
	if isNull(raw) {
		return chat.Message{}, InvalidRequest(path, fmt.Sprintf("Invalid '%s': expected an object, but got null.", path))
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return chat.Message{}, decodeError(path, err)
	}
	// chat.IsRole says which roles there are; the wire adds another name
	// for one of them, and roles we do not support.
	role := w.Role
	switch w.Role {
	case "developer":
		role = chat.RoleSystem // OpenAI's newer name for it
	case "function":
		return chat.Message{}, Unsupported(path + ".role")
	case "":
		return chat.Message{}, InvalidRequest(path+".role", fmt.Sprintf("Missing required parameter: '%s.role'.", path))
	}
	if !chat.IsRole(role) {
		// Worded for the client, who may also send "developer".
		return chat.Message{}, InvalidRequest(path+".role", fmt.Sprintf(
			"Invalid value for '%s.role': %q; supported values are system, developer, user, assistant and tool.", path, w.Role))
	}
	msg := chat.Message{Role: role}
	switch role {
	case chat.RoleAssistant:
		if !isNull(w.FunctionCall) {
			return chat.Message{}, Unsupported(path + ".function_call")
		}
		calls, e := decodeToolCalls(path+".tool_calls", w.ToolCalls)
		if e != nil {
			return chat.Message{}, e
		}
		msg.ToolCalls = calls
	case chat.RoleTool:
		if w.ToolCallID == nil {
			return chat.Message{}, InvalidRequest(path+".tool_call_id", fmt.Sprintf("Missing required parameter: '%s.tool_call_id'.", path))
		}
		msg.ToolCallID = *w.ToolCallID
	}
	if role != chat.RoleAssistant && !isNull(w.ToolCalls) {
		return chat.Message{}, InvalidRequest(path+".tool_calls", fmt.Sprintf(
			"Invalid parameter: '%s.tool_calls' is only allowed in messages with role 'assistant'.", path))
	}

	content, e := decodeContent(path+".content", w.Content, role == chat.RoleAssistant)
	if e != nil {
		return chat.Message{}, e
	}
	msg.Content = content
	return msg, nil
}

// decodeToolCalls reads an assistant message's tool_calls at path; their
// rules (ids, arguments) are chat.Request.ValidateMessages'.
func decodeToolCalls(path string, raw json.RawMessage) ([]chat.ToolCall, *Error) {
	if isNull(raw) {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, decodeError(path, err)
	}
	var calls []chat.ToolCall
	for i, item := range items {
		p := fmt.Sprintf("%s[%d]", path, i)
		var w wireToolCall
		if isNull(item) {
			return nil, InvalidRequest(p, fmt.Sprintf("Invalid '%s': expected an object, but got null.", p))
		}
		if err := json.Unmarshal(item, &w); err != nil {
			return nil, decodeError(p, err)
		}
		if w.Function == nil {
			return nil, InvalidRequest(p+".function", fmt.Sprintf("Missing required parameter: '%s.function'.", p))
		}
		if w.Function.Arguments == nil {
			return nil, InvalidRequest(p+".function.arguments", fmt.Sprintf("Missing required parameter: '%s.function.arguments'.", p))
		}
		calls = append(calls, chat.ToolCall{ID: w.ID, Type: w.Type,
			Function: chat.ToolCallFunction{Name: w.Function.Name, Arguments: *w.Function.Arguments}})
	}
	return calls, nil
}

// decodeContent reads a message's content: a string, or an array of text
// parts joined by newlines, as other OpenAI-compatible servers join them. A
// null or absent content is allowed only for the assistant, whose turn may
// have been empty.
func decodeContent(path string, raw json.RawMessage, nullable bool) (string, *Error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		if nullable {
			return "", nil
		}
		return "", InvalidRequest(path, fmt.Sprintf("Missing required parameter: '%s'.", path))
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", decodeError(path, err)
		}
		return s, nil
	case '[':
		var parts []json.RawMessage
		if err := json.Unmarshal(raw, &parts); err != nil {
			return "", decodeError(path, err)
		}
		if len(parts) == 0 {
			return "", InvalidRequest(path, fmt.Sprintf("Invalid '%s': an array content must not be empty.", path))
		}
		texts := make([]string, 0, len(parts))
		for i, p := range parts {
			text, e := decodePart(fmt.Sprintf("%s[%d]", path, i), p)
			if e != nil {
				return "", e
			}
			texts = append(texts, text)
		}
		return strings.Join(texts, "\n"), nil
	default:
		return "", InvalidRequest(path, fmt.Sprintf(
			"Invalid type for '%s': expected a string or an array of content parts, but got %s.", path, jsonKind(raw)))
	}
}

// decodePart reads one content part; only text parts are supported.
func decodePart(path string, raw json.RawMessage) (string, *Error) {
	var p wirePart
	if isNull(raw) {
		return "", InvalidRequest(path, fmt.Sprintf("Invalid '%s': expected an object, but got null.", path))
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", decodeError(path, err)
	}
	switch p.Type {
	case "text":
	case "":
		return "", InvalidRequest(path+".type", fmt.Sprintf("Missing required parameter: '%s.type'.", path))
	default:
		return "", InvalidRequest(path+".type", fmt.Sprintf(
			"Invalid value for '%s.type': %q is not supported; only \"text\" parts are.", path, p.Type))
	}
	if p.Text == nil {
		return "", InvalidRequest(path+".text", fmt.Sprintf("Missing required parameter: '%s.text'.", path))
	}
	return *p.Text, nil
}

// decodeTools reads tools, tool_choice and parallel_tool_calls into r and
// checks them with the rules every tier shares
// (chat.Request.ValidateTools). Whether the model can call tools is the
// inference engine's to say.
func decodeTools(r *chat.Request, w *wireRequest) *Error {
	r.ParallelToolCalls = w.ParallelToolCalls
	if !isNull(w.Tools) {
		var items []json.RawMessage
		if err := json.Unmarshal(w.Tools, &items); err != nil {
			return decodeError("tools", err)
		}
		for i, item := range items {
			path := fmt.Sprintf("tools[%d]", i)
			var t wireTool
			if isNull(item) {
				return InvalidRequest(path, fmt.Sprintf("Invalid '%s': expected an object, but got null.", path))
			}
			if err := json.Unmarshal(item, &t); err != nil {
				return decodeError(path, err)
			}
			if t.Type == "" {
				return InvalidRequest(path+".type", fmt.Sprintf("Missing required parameter: '%s.type'.", path))
			}
			if t.Function == nil {
				return InvalidRequest(path+".function", fmt.Sprintf("Missing required parameter: '%s.function'.", path))
			}
			params := t.Function.Parameters
			if isNull(params) {
				params = nil
			}
			r.Tools = append(r.Tools, chat.Tool{Type: t.Type, Function: chat.ToolFunction{
				Name: t.Function.Name, Description: t.Function.Description, Parameters: params, Strict: t.Function.Strict,
			}})
		}
	}
	choice, e := decodeToolChoice(w.ToolChoice)
	if e != nil {
		return e
	}
	r.ToolChoice = choice
	if err := r.ValidateTools(); err != nil {
		return FromError(err)
	}
	return nil
}

// decodeToolChoice reads tool_choice: "none", "auto", "required", or
// {"type":"function","function":{"name":"…"}}.
func decodeToolChoice(raw json.RawMessage) (*chat.ToolChoice, *Error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		var mode string
		if err := json.Unmarshal(raw, &mode); err != nil {
			return nil, decodeError("tool_choice", err)
		}
		if mode == chat.ToolChoiceFunction {
			// Only the object form names a function.
			mode = "'function'"
		}
		return &chat.ToolChoice{Mode: mode}, nil
	case '{':
		var w struct {
			Type     string `json:"type"`
			Function *struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if err := json.Unmarshal(raw, &w); err != nil {
			return nil, decodeError("tool_choice", err)
		}
		if w.Type != chat.ToolTypeFunction {
			return nil, InvalidRequest("tool_choice.type", fmt.Sprintf(
				"Invalid value for 'tool_choice.type': %q; supported values are 'function'.", w.Type))
		}
		if w.Function == nil || w.Function.Name == "" {
			return nil, InvalidRequest("tool_choice.function.name", "Missing required parameter: 'tool_choice.function.name'.")
		}
		return &chat.ToolChoice{Mode: chat.ToolChoiceFunction, Name: w.Function.Name}, nil
	default:
		return nil, InvalidRequest("tool_choice", fmt.Sprintf(
			"Invalid type for 'tool_choice': expected a string or an object, but got %s.", jsonKind(raw)))
	}
}

// decodeSampling checks that a max_tokens given is at least 1 (0 would
// be the server's default in r) and copies the numeric sampling parameters
// into r; their ranges are chat.Request.Validate's.
func decodeSampling(r *chat.Request, w *wireRequest) *Error {
	for _, t := range []struct {
		param string
		v     *int
	}{{"max_tokens", w.MaxTokens}, {"max_completion_tokens", w.MaxCompletionTokens}} {
		if t.v != nil && *t.v < 1 {
			return InvalidRequest(t.param, fmt.Sprintf("Invalid '%s': must be at least 1, got %d.", t.param, *t.v))
		}
	}
	switch {
	case w.MaxCompletionTokens != nil:
		// The newer name wins, as in the OpenAI API.
		r.MaxTokens, r.MaxTokensParam = *w.MaxCompletionTokens, "max_completion_tokens"
	case w.MaxTokens != nil:
		r.MaxTokens, r.MaxTokensParam = *w.MaxTokens, "max_tokens"
	}
	for _, f := range []struct {
		v   *float64
		dst **float32
	}{
		{w.Temperature, &r.Temperature},
		{w.TopP, &r.TopP},
		{w.PresencePenalty, &r.PresencePenalty},
		{w.FrequencyPenalty, &r.FrequencyPenalty},
	} {
		if f.v != nil {
			// The services work in float32 and check the value after the
			// conversion: a tiny top_p becomes 0 and is refused.
			v32 := float32(*f.v)
			*f.dst = &v32
		}
	}
	r.Seed = w.Seed
	return nil
}

// decodeResponseFormat reads response_format. Its type is checked by
// chat.Request.Validate; json_schema must come with its object, whose
// schema the inference engine turns into a grammar (and refuses, naming
// response_format, when it cannot).
func decodeResponseFormat(r *chat.Request, w *wireResponseFormat) *Error {
	if w == nil {
		return nil
	}
	f := &chat.ResponseFormat{Type: w.Type}
	switch js := w.JSONSchema; {
	case w.Type == chat.FormatJSONSchema && js == nil:
		return InvalidRequest("response_format", "Missing required parameter: 'response_format.json_schema'.")
	case w.Type == chat.FormatJSONSchema:
		f.Name, f.Schema = js.Name, js.Schema
		f.Strict = js.Strict != nil && *js.Strict
		if isNull(f.Schema) {
			// OpenAI allows a json_schema without a schema: any JSON
			// object then.
			f.Type, f.Schema = chat.FormatJSONObject, nil
		}
	case js != nil:
		return InvalidRequest("response_format", fmt.Sprintf(
			"Invalid 'response_format': 'json_schema' is only allowed with type 'json_schema', got type %q.", w.Type))
	}
	r.ResponseFormat = f
	return nil
}

// decodeStop reads stop: a string or an array of strings. How many and
// which are allowed is chat.Request.Validate's to say.
func decodeStop(raw json.RawMessage) ([]string, *Error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, decodeError("stop", err)
		}
		return []string{s}, nil
	case '[':
		var stop []string
		if err := json.Unmarshal(raw, &stop); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return nil, InvalidRequest("stop", fmt.Sprintf(
					"Invalid type for 'stop': expected an array of strings, but it holds %s.", article(te.Value)))
			}
			return nil, decodeError("stop", err)
		}
		if len(stop) == 0 {
			return nil, nil
		}
		return stop, nil
	default:
		return nil, InvalidRequest("stop", fmt.Sprintf(
			"Invalid type for 'stop': expected a string or an array of strings, but got %s.", jsonKind(raw)))
	}
}

// decodeError turns an encoding/json error met while decoding the value at
// path ("" for the body) into a 400 naming the field.
func decodeError(path string, err error) *Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		param := joinPath(path, te.Field)
		if param == "" {
			return InvalidRequest("", fmt.Sprintf(
				"The request body must be a JSON object, but got %s.", article(te.Value)))
		}
		return InvalidRequest(param, fmt.Sprintf(
			"Invalid type for '%s': expected %s, but got %s.", param, typeName(te.Type), article(te.Value)))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) { // also how an empty body is reported
		return InvalidRequest("", fmt.Sprintf(
			"The request body is not valid JSON (%s). Make sure it is a JSON object.", err))
	}
	// encoding/json returns no other errors for valid arguments; this is a
	// safety net that still names the field.
	if path == "" {
		return InvalidRequest("", fmt.Sprintf("The request body could not be decoded: %s.", err))
	}
	return InvalidRequest(path, fmt.Sprintf("Invalid '%s': %s.", path, err))
}

// joinPath appends a field path from encoding/json ("a.b") to a path of ours.
func joinPath(path, field string) string {
	switch {
	case path == "":
		return field
	case field == "":
		return path
	default:
		return path + "." + field
	}
}

// typeName describes a Go type by the JSON value it is decoded from.
func typeName(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return typeName(t.Elem())
	default:
		return t.String()
	}
}

// article words an UnmarshalTypeError's Value ("string", "number 1.5")
// for a sentence.
func article(value string) string {
	switch {
	case value == "array" || value == "object":
		return "an " + value
	case value == "":
		return "another type"
	case strings.HasPrefix(value, "number "):
		return "the " + value
	default:
		return "a " + value
	}
}

// jsonKind names the kind of a raw JSON value by its first byte.
func jsonKind(raw json.RawMessage) string {
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// isNull reports whether a raw value is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// isEmpty reports whether a raw value is absent, null, [] or {}; such values
// ask for nothing.
func isEmpty(raw json.RawMessage) bool {
	if isNull(raw) {
		return true
	}
	compact := strings.Join(strings.Fields(string(raw)), "")
	return compact == "[]" || compact == "{}"
}

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
// request. Optional fields are pointers: nil means the client left them out
// and the server's default applies.
type ChatCompletionRequest struct {
	// Model is the model the client asked for; it may be empty.
	Model string
	// Messages are non-empty; "developer" has become chat.RoleSystem and
	// array content has been joined into plain text.
	Messages []chat.Message
	// MaxTokens is max_completion_tokens if given, else max_tokens; ≥ 1.
	MaxTokens *int
	// MaxTokensParam is the name the client gave MaxTokens, max_tokens or
	// max_completion_tokens; InClientTerms names it so in errors.
	MaxTokensParam string
	// The ranges are chat.Request.Validate's.
	Temperature      *float32
	TopP             *float32
	Seed             *int64
	Stop             []string
	PresencePenalty  *float32
	FrequencyPenalty *float32
	// Stream asks for server-sent events instead of one JSON response.
	Stream bool
	// IncludeUsage asks for a final usage chunk in a stream.
	IncludeUsage bool
	// User is the client's end-user id, for logs.
	User string
	// ResponseFormat constrains the output to JSON; nil leaves it free.
	ResponseFormat *chat.ResponseFormat
	// Logprobs asks for each token's log probability, TopLogprobs
	// (0–20) for that many alternatives at each position.
	Logprobs    bool
	TopLogprobs int
}

// ToChat returns the domain request the services consume.
func (r *ChatCompletionRequest) ToChat() chat.Request {
	req := chat.Request{
		Model:            r.Model,
		Messages:         slices.Clone(r.Messages),
		Temperature:      r.Temperature,
		TopP:             r.TopP,
		Seed:             r.Seed,
		PresencePenalty:  r.PresencePenalty,
		FrequencyPenalty: r.FrequencyPenalty,
		Stop:             slices.Clone(r.Stop),
		ResponseFormat:   r.ResponseFormat,
		Logprobs:         r.Logprobs,
		TopLogprobs:      r.TopLogprobs,
	}
	if r.MaxTokens != nil {
		req.MaxTokens = *r.MaxTokens
	}
	return req
}

// InClientTerms returns e with the request's fields named as the client
// named them. The services speak of max_tokens; a client that sent
// max_completion_tokens reads that name in error.param and in the message.
func (r *ChatCompletionRequest) InClientTerms(e *Error) *Error {
	if e == nil || r.MaxTokensParam != "max_completion_tokens" || e.Type != TypeInvalidRequest {
		return e
	}
	out := *e
	if out.Param == "max_tokens" {
		out.Param = r.MaxTokensParam
	}
	// "max_completion_tokens" does not hold "max_tokens", so this renames
	// nothing twice.
	out.Message = strings.ReplaceAll(out.Message, "max_tokens", r.MaxTokensParam)
	return &out
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

	// Accepted and ignored: they identify the client or tune caching,
	// billing or tool use, and change nothing in the generated text.
	Metadata             map[string]string `json:"metadata"`
	ParallelToolCalls    *bool             `json:"parallel_tool_calls"`
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
	Tools            json.RawMessage `json:"tools"`
	ToolChoice       json.RawMessage `json:"tool_choice"`
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
var knownFields = func() map[string]bool {
	known := map[string]bool{}
	t := reflect.TypeFor[wireRequest]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		known[name] = true
	}
	return known
}()

// wireMessage is one element of messages.
type wireMessage struct {
	Role         string          `json:"role"`
	Content      json.RawMessage `json:"content"`
	ToolCalls    json.RawMessage `json:"tool_calls"`
	FunctionCall json.RawMessage `json:"function_call"`
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

	r := &ChatCompletionRequest{Model: w.Model, User: w.User}
	if e := decodeMessages(r, w.Messages, lim); e != nil {
		return nil, e
	}
	if e := decodeSampling(r, &w); e != nil {
		return nil, e
	}
	stop, e := decodeStop(w.Stop)
	if e != nil {
		return nil, e
	}
	r.Stop = stop

	if w.N != nil && *w.N != 1 {
		return nil, InvalidRequest("n", fmt.Sprintf("Invalid 'n': only 1 choice is supported, got %d.", *w.N))
	}
	if e := decodeResponseFormat(r, w.ResponseFormat); e != nil {
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
	// The rules every tier shares: roles, ranges, stop strings.
	creq := r.ToChat()
	if err := creq.Validate(); err != nil {
		var fe *chat.FieldError
		if errors.As(err, &fe) {
			return nil, r.InClientTerms(InvalidRequest(fe.Param, fe.Message))
		}
		return nil, InvalidRequest("", err.Error())
	}
	return r, nil
}

// checkFieldNames refuses a body with a top-level field that is not in
// knownFields, with OpenAI's wording. The names are matched exactly:
// encoding/json alone would take "Messages" for "messages".
func checkFieldNames(body []byte) *Error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return decodeError("", err)
	}
	// Report the first unknown name in sorted order, so that the same body
	// always gets the same error.
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if !knownFields[name] {
			return InvalidRequest(name, "Unrecognized request argument supplied: "+name)
		}
	}
	return nil
}

// checkUnsupported refuses the parameters a client sends only when it wants
// a feature we lack. Empty or neutral values ("tools": [], "store":
// false, "modalities": ["text"]) ask for nothing and pass. It also
// refuses, as OpenAI does, the parameters that only mean something next
// to another one: tool_choice without tools, top_logprobs without
// logprobs.
func checkUnsupported(w *wireRequest) *Error {
	switch {
	case !isEmpty(w.Tools):
		return Unsupported("tools")
	case !isEmpty(w.Functions):
		return Unsupported("functions")
	case !isNull(w.ToolChoice):
		// Tools are refused above, so a tool_choice is always alone.
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

func decodeMessages(r *ChatCompletionRequest, raw []json.RawMessage, lim Limits) *Error {
	if len(raw) == 0 {
		return InvalidRequest("messages", "'messages' must be a non-empty array.")
	}
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
	var role string
	switch w.Role {
	case chat.RoleSystem, "developer":
		role = chat.RoleSystem
	case chat.RoleUser:
		role = chat.RoleUser
	case chat.RoleAssistant:
		role = chat.RoleAssistant
		if !isEmpty(w.ToolCalls) {
			return chat.Message{}, Unsupported(path + ".tool_calls")
		}
		if !isNull(w.FunctionCall) {
			return chat.Message{}, Unsupported(path + ".function_call")
		}
	case "tool", "function":
		return chat.Message{}, Unsupported(path + ".role")
	case "":
		return chat.Message{}, InvalidRequest(path+".role", fmt.Sprintf("Missing required parameter: '%s.role'.", path))
	default:
		return chat.Message{}, InvalidRequest(path+".role", fmt.Sprintf(
			"Invalid value for '%s.role': %q; supported values are system, developer, user and assistant.", path, w.Role))
	}

	content, e := decodeContent(path+".content", w.Content, role == chat.RoleAssistant)
	if e != nil {
		return chat.Message{}, e
	}
	return chat.Message{Role: role, Content: content}, nil
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

// decodeSampling copies the numeric sampling parameters into r; their
// ranges are chat.Request.Validate's.
func decodeSampling(r *ChatCompletionRequest, w *wireRequest) *Error {
	for _, t := range []struct {
		param string
		v     *int
	}{{"max_tokens", w.MaxTokens}, {"max_completion_tokens", w.MaxCompletionTokens}} {
		if t.v != nil && *t.v < 1 {
			return InvalidRequest(t.param, fmt.Sprintf("Invalid '%s': must be at least 1, got %d.", t.param, *t.v))
		}
	}
	r.MaxTokens, r.MaxTokensParam = w.MaxTokens, "max_tokens"
	if w.MaxCompletionTokens != nil {
		// The newer name wins, as in the OpenAI API.
		r.MaxTokens, r.MaxTokensParam = w.MaxCompletionTokens, "max_completion_tokens"
	}
	if r.MaxTokens == nil {
		r.MaxTokensParam = ""
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
func decodeResponseFormat(r *ChatCompletionRequest, w *wireResponseFormat) *Error {
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

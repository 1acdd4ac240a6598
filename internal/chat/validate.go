package chat

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// Validate checks what every tier requires of a request, so that the
// gateway, the caller and the engine apply one set of rules: at least one
// message, each with a known role; max_tokens not negative (0 leaves the
// length to the engine); the sampling fields in their ranges; at most
// MaxStop stop strings, none empty. It returns the first fault found, in
// the order the OpenAI API reports them, as an invalid_argument *Error
// whose Param names the field; or nil.
//
// Limits that belong to one deployment (message count, characters, the
// largest max_tokens, the context size) are checked where they are known,
// not here.
func (r *Request) Validate() error {
	if r.RawPrompt != nil {
		// A completion: its prompt replaces the messages.
		switch {
		case len(r.Messages) > 0:
			return Invalidf("messages", "A completion's prompt replaces 'messages'; send one or the other.")
		case r.UsesTools():
			return Invalidf("tools", "A completion may not use tools.")
		}
		return r.ValidateOptions()
	}
	if err := r.ValidateMessages(); err != nil {
		return err
	}
	if err := r.ValidateTools(); err != nil {
		return err
	}
	return r.ValidateOptions()
}

// ValidateMessages is Validate's check of the messages: at least one, each
// with a role IsRole knows; an assistant's tool calls well formed (an id,
// type function, a name, arguments a JSON object), ids unique; a tool
// message answering, by its ToolCallID, a call of an earlier assistant
// message. The OpenAI decoder runs it as soon as the messages are
// decoded, so that their faults come before the options'.
func (r *Request) ValidateMessages() error {
	if len(r.Messages) == 0 {
		return Invalidf("messages", "'messages' must be a non-empty array.")
	}
	calls := map[string]bool{} // ids of the calls made so far
	for i, m := range r.Messages {
		if !IsRole(m.Role) {
			param := fmt.Sprintf("messages[%d].role", i)
			return Invalidf(param, "Invalid value for '%s': %q; supported values are system, user, assistant and tool.", param, m.Role)
		}
		if len(m.ToolCalls) > 0 && m.Role != RoleAssistant {
			param := fmt.Sprintf("messages[%d].tool_calls", i)
			return Invalidf(param, "Invalid '%s': only assistant messages may have tool calls.", param)
		}
		for k, c := range m.ToolCalls {
			if err := c.validate(fmt.Sprintf("messages[%d].tool_calls[%d]", i, k)); err != nil {
				return err
			}
			if calls[c.ID] {
				param := fmt.Sprintf("messages[%d].tool_calls[%d].id", i, k)
				return Invalidf(param, "Invalid '%s': the id %q is used by an earlier tool call.", param, c.ID)
			}
			calls[c.ID] = true
		}
		if m.Role == RoleTool {
			param := fmt.Sprintf("messages[%d].tool_call_id", i)
			if m.ToolCallID == "" {
				return Invalidf(param, "Missing required parameter: '%s'.", param)
			}
			if !calls[m.ToolCallID] {
				return Invalidf(param, "Invalid '%s': %q answers no tool call of an earlier assistant message.", param, m.ToolCallID)
			}
		}
	}
	return nil
}

// IsRole reports whether a message may have role: RoleSystem, RoleUser,
// RoleAssistant or RoleTool. Other names a wire format accepts (OpenAI's
// "developer") are mapped to these at the edge.
func IsRole(role string) bool {
	switch role {
	case RoleSystem, RoleUser, RoleAssistant, RoleTool:
		return true
	}
	return false
}

// MaxToolNameLen is the longest function name, as in the OpenAI API.
const MaxToolNameLen = 64

// ValidToolName reports whether name is a function name the OpenAI API
// accepts: 1 to 64 letters, digits, '_' or '-'.
func ValidToolName(name string) bool {
	if name == "" || len(name) > MaxToolNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidateTools checks the tools and the tool choice: each tool of type
// function with a valid name (ValidToolName), unique, and parameters, if
// any, a JSON object; a tool choice of a known mode, other than none only
// with tools, and a named function among the tools.
func (r *Request) ValidateTools() error {
	names := map[string]bool{}
	for i, t := range r.Tools {
		if t.Type != ToolTypeFunction {
			param := fmt.Sprintf("tools[%d].type", i)
			return Invalidf(param, "Invalid value for '%s': %q; supported values are 'function'.", param, t.Type)
		}
		param := fmt.Sprintf("tools[%d].function.name", i)
		if !ValidToolName(t.Function.Name) {
			return Invalidf(param, "Invalid '%s': %q does not match '^[a-zA-Z0-9_-]{1,64}$'.", param, t.Function.Name)
		}
		if names[t.Function.Name] {
			return Invalidf(param, "Invalid '%s': the function %q is declared twice.", param, t.Function.Name)
		}
		names[t.Function.Name] = true
		if p := t.Function.Parameters; len(p) > 0 && !isObject(p) {
			param := fmt.Sprintf("tools[%d].function.parameters", i)
			return Invalidf(param, "Invalid '%s': expected a JSON Schema object.", param)
		}
	}
	c := r.ToolChoice
	if c == nil {
		return nil
	}
	switch c.Mode {
	case ToolChoiceNone, ToolChoiceAuto, ToolChoiceRequired:
		if c.Name != "" {
			return Invalidf("tool_choice", "Invalid 'tool_choice': a function name is only allowed with type 'function'.")
		}
	case ToolChoiceFunction:
		if !names[c.Name] {
			return Invalidf("tool_choice", "Invalid 'tool_choice': function %q is not among the tools.", c.Name)
		}
	default:
		return Invalidf("tool_choice", "Invalid value for 'tool_choice': %q; supported values are 'none', 'auto', 'required' and a function.", c.Mode)
	}
	if len(r.Tools) == 0 && c.Mode != ToolChoiceNone {
		return Invalidf("tool_choice", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
	}
	return nil
}

// validate checks one tool call of an assistant message at param.
func (c ToolCall) validate(param string) error {
	switch {
	case c.ID == "":
		return Invalidf(param+".id", "Missing required parameter: '%s.id'.", param)
	case c.Type != ToolTypeFunction:
		return Invalidf(param+".type", "Invalid value for '%s.type': %q; supported values are 'function'.", param, c.Type)
	case c.Function.Name == "":
		return Invalidf(param+".function.name", "Missing required parameter: '%s.function.name'.", param)
	case strings.TrimSpace(c.Function.Arguments) != "" && !isObject(json.RawMessage(c.Function.Arguments)):
		return Invalidf(param+".function.arguments", "Invalid '%s.function.arguments': expected a JSON object in a string.", param)
	}
	return nil
}

// isObject reports whether raw is one JSON object.
func isObject(raw json.RawMessage) bool {
	var obj map[string]json.RawMessage
	return json.Unmarshal(raw, &obj) == nil && obj != nil
}

// ValidateOptions is Validate without the messages: for a request whose
// prompt comes from elsewhere (the engine's raw prompts in tests and
// benchmarks).
func (r *Request) ValidateOptions() error {
	switch r.MaxTokensParam {
	case "", "max_tokens", "max_completion_tokens":
	default:
		return Invalidf("max_tokens_param", "Invalid 'max_tokens_param': %q; supported values are max_tokens and max_completion_tokens.", r.MaxTokensParam)
	}
	if r.MaxTokens < 0 {
		return Invalidf(r.MaxTokensName(), "Invalid '%s': must not be negative, got %d.", r.MaxTokensName(), r.MaxTokens)
	}
	for _, f := range []struct {
		param    string
		v        *float32
		min, max float32
		minOpen  bool // whether min itself is excluded
	}{
		{"temperature", r.Temperature, 0, 2, false},
		{"top_p", r.TopP, 0, 1, true},
		{"min_p", r.MinP, 0, 1, false},
		{"presence_penalty", r.PresencePenalty, -2, 2, false},
		{"frequency_penalty", r.FrequencyPenalty, -2, 2, false},
		// 0 would divide a recent token's logit by zero.
		{"repeat_penalty", r.RepeatPenalty, 0, 10, true},
	} {
		if f.v == nil {
			continue
		}
		v := *f.v
		if math.IsNaN(float64(v)) || v < f.min || v > f.max || (f.minOpen && v == f.min) {
			lo := "["
			if f.minOpen {
				lo = "("
			}
			return Invalidf(f.param, "Invalid '%s': must be in %s%g, %g], got %g.", f.param, lo, f.min, f.max, v)
		}
	}
	if r.TopK != nil && *r.TopK < 0 {
		return Invalidf("top_k", "Invalid 'top_k': must not be negative, got %d.", *r.TopK)
	}
	if len(r.Stop) > MaxStop {
		return Invalidf("stop", "Invalid 'stop': at most %d stop strings are allowed, got %d.", MaxStop, len(r.Stop))
	}
	for i, s := range r.Stop {
		if s == "" {
			// An empty stop string would end every generation at once.
			return Invalidf(fmt.Sprintf("stop[%d]", i), "Invalid 'stop': stop strings must not be empty.")
		}
	}
	if r.TopLogprobs < 0 || r.TopLogprobs > MaxTopLogprobs {
		return Invalidf("top_logprobs", "Invalid 'top_logprobs': must be in [0, %d], got %d.", MaxTopLogprobs, r.TopLogprobs)
	}
	if r.TopLogprobs > 0 && !r.Logprobs {
		return Invalidf("top_logprobs", "Invalid value for 'top_logprobs': 'top_logprobs' is only allowed when 'logprobs' is true.")
	}
	return r.ResponseFormat.validate()
}

// validate checks a response format's shape; whether its schema can be
// turned into a grammar is the inference engine's to say.
func (f *ResponseFormat) validate() error {
	if f == nil {
		return nil
	}
	switch f.Type {
	case FormatText, FormatJSONObject:
		if len(f.Schema) > 0 {
			return Invalidf("response_format", "Invalid 'response_format': a schema is only allowed with type 'json_schema'.")
		}
	case FormatJSONSchema:
		var obj map[string]json.RawMessage
		if len(f.Schema) == 0 || json.Unmarshal(f.Schema, &obj) != nil || obj == nil {
			return Invalidf("response_format", "Invalid 'response_format.json_schema.schema': expected a JSON Schema object.")
		}
	case "":
		return Invalidf("response_format", "Missing required parameter: 'response_format.type'.")
	default:
		return Invalidf("response_format", "Invalid value for 'response_format.type': %q; supported values are 'text', 'json_object' and 'json_schema'.", f.Type)
	}
	return nil
}

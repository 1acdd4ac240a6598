package chat

import (
	"encoding/json"
	"fmt"
	"math"
)

// FieldError is a request field with a value no tier accepts. Param names
// the field as the OpenAI API does ("temperature", "messages[2].role",
// "stop"); Message is meant for the client.
type FieldError struct {
	Param   string
	Message string
}

// Error implements error with the message alone: it already names the field.
func (e *FieldError) Error() string { return e.Message }

func fieldErrorf(param, format string, args ...any) *FieldError {
	return &FieldError{Param: param, Message: fmt.Sprintf(format, args...)}
}

// Validate checks what every tier requires of a request, so that the
// gateway, the caller and the engine apply one set of rules: at least one
// message, each with a known role; max_tokens not negative (0 leaves the
// length to the engine); the sampling fields in their ranges; at most
// MaxStop stop strings, none empty. It returns the first fault found as a
// *FieldError, in the order the OpenAI API reports them, or nil.
//
// Limits that belong to one deployment (message count, characters, the
// largest max_tokens, the context size) are checked where they are known,
// not here.
func (r *Request) Validate() error {
	if len(r.Messages) == 0 {
		return fieldErrorf("messages", "'messages' must be a non-empty array.")
	}
	for i, m := range r.Messages {
		switch m.Role {
		case RoleSystem, RoleUser, RoleAssistant:
		default:
			param := fmt.Sprintf("messages[%d].role", i)
			return fieldErrorf(param, "Invalid value for '%s': %q; supported values are system, user and assistant.", param, m.Role)
		}
	}
	return r.ValidateOptions()
}

// ValidateOptions is Validate without the messages: for a request whose
// prompt comes from elsewhere (the engine's raw prompts in tests and
// benchmarks).
func (r *Request) ValidateOptions() error {
	if r.MaxTokens < 0 {
		return fieldErrorf("max_tokens", "Invalid 'max_tokens': must not be negative, got %d.", r.MaxTokens)
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
			return fieldErrorf(f.param, "Invalid '%s': must be in %s%g, %g], got %g.", f.param, lo, f.min, f.max, v)
		}
	}
	if r.TopK != nil && *r.TopK < 0 {
		return fieldErrorf("top_k", "Invalid 'top_k': must not be negative, got %d.", *r.TopK)
	}
	if len(r.Stop) > MaxStop {
		return fieldErrorf("stop", "Invalid 'stop': at most %d stop strings are allowed, got %d.", MaxStop, len(r.Stop))
	}
	for i, s := range r.Stop {
		if s == "" {
			// An empty stop string would end every generation at once.
			return fieldErrorf(fmt.Sprintf("stop[%d]", i), "Invalid 'stop': stop strings must not be empty.")
		}
	}
	if r.TopLogprobs < 0 || r.TopLogprobs > MaxTopLogprobs {
		return fieldErrorf("top_logprobs", "Invalid 'top_logprobs': must be in [0, %d], got %d.", MaxTopLogprobs, r.TopLogprobs)
	}
	if r.TopLogprobs > 0 && !r.Logprobs {
		return fieldErrorf("top_logprobs", "Invalid value for 'top_logprobs': 'top_logprobs' is only allowed when 'logprobs' is true.")
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
			return fieldErrorf("response_format", "Invalid 'response_format': a schema is only allowed with type 'json_schema'.")
		}
	case FormatJSONSchema:
		var obj map[string]json.RawMessage
		if len(f.Schema) == 0 || json.Unmarshal(f.Schema, &obj) != nil || obj == nil {
			return fieldErrorf("response_format", "Invalid 'response_format.json_schema.schema': expected a JSON Schema object.")
		}
	case "":
		return fieldErrorf("response_format", "Missing required parameter: 'response_format.type'.")
	default:
		return fieldErrorf("response_format", "Invalid value for 'response_format.type': %q; supported values are 'text', 'json_object' and 'json_schema'.", f.Type)
	}
	return nil
}

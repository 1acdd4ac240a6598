package chat

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	f32 := func(v float32) *float32 { return &v }
	i := func(v int) *int { return &v }
	user := []Message{{Role: RoleUser, Content: "hi"}}
	tests := []struct {
		name  string
		req   Request
		param string // "" for a valid request
		msg   string // a part of the message
	}{
		{"minimal", Request{Messages: user}, "", ""},
		{"everything at its bounds", Request{Messages: []Message{{Role: RoleSystem}, {Role: RoleUser}, {Role: RoleAssistant}},
			MaxTokens: 0, Temperature: f32(2), TopP: f32(1), MinP: f32(0), TopK: i(0), PresencePenalty: f32(-2),
			FrequencyPenalty: f32(2), RepeatPenalty: f32(10), Stop: []string{"a", "b", "c", "d"}}, "", ""},
		{"no messages", Request{}, "messages", "non-empty"},
		{"developer role not normalised", Request{Messages: []Message{{Role: RoleUser}, {Role: "developer"}}}, "messages[1].role", `"developer"`},
		{"empty role", Request{Messages: []Message{{Content: "x"}}}, "messages[0].role", "supported values"},
		{"max_tokens negative", Request{Messages: user, MaxTokens: -1}, "max_tokens", "'max_tokens': must not be negative, got -1"},
		{"max_completion_tokens negative", Request{Messages: user, MaxTokens: -1, MaxTokensParam: "max_completion_tokens"},
			"max_completion_tokens", "'max_completion_tokens': must not be negative"},
		{"max_tokens named otherwise", Request{Messages: user, MaxTokensParam: "length"}, "max_tokens_param", `"length"`},
		{"temperature high", Request{Messages: user, Temperature: f32(2.01)}, "temperature", "[0, 2]"},
		{"temperature negative", Request{Messages: user, Temperature: f32(-0.1)}, "temperature", ""},
		{"temperature NaN", Request{Messages: user, Temperature: f32(float32(math.NaN()))}, "temperature", ""},
		{"top_p 0", Request{Messages: user, TopP: f32(0)}, "top_p", "(0, 1]"},
		{"top_p high", Request{Messages: user, TopP: f32(1.5)}, "top_p", ""},
		{"min_p high", Request{Messages: user, MinP: f32(1.1)}, "min_p", ""},
		{"top_k negative", Request{Messages: user, TopK: i(-1)}, "top_k", ""},
		{"presence_penalty low", Request{Messages: user, PresencePenalty: f32(-2.5)}, "presence_penalty", ""},
		{"frequency_penalty high", Request{Messages: user, FrequencyPenalty: f32(3)}, "frequency_penalty", ""},
		{"repeat_penalty 0", Request{Messages: user, RepeatPenalty: f32(0)}, "repeat_penalty", "(0, 10]"},
		{"repeat_penalty infinite", Request{Messages: user, RepeatPenalty: f32(float32(math.Inf(1)))}, "repeat_penalty", ""},
		{"five stops", Request{Messages: user, Stop: []string{"a", "b", "c", "d", "e"}}, "stop", "at most 4"},
		{"empty stop", Request{Messages: user, Stop: []string{"a", ""}}, "stop[1]", "must not be empty"},
		{"logprobs with 20 alternatives", Request{Messages: user, Logprobs: true, TopLogprobs: 20}, "", ""},
		{"top_logprobs high", Request{Messages: user, Logprobs: true, TopLogprobs: 21}, "top_logprobs", "[0, 20]"},
		{"top_logprobs negative", Request{Messages: user, Logprobs: true, TopLogprobs: -1}, "top_logprobs", "[0, 20]"},
		{"top_logprobs without logprobs", Request{Messages: user, TopLogprobs: 2}, "top_logprobs", "only allowed when 'logprobs'"},
		{"response_format text", Request{Messages: user, ResponseFormat: &ResponseFormat{Type: FormatText}}, "", ""},
		{"response_format json_object", Request{Messages: user, ResponseFormat: &ResponseFormat{Type: FormatJSONObject}}, "", ""},
		{"response_format json_schema", Request{Messages: user, ResponseFormat: &ResponseFormat{Type: FormatJSONSchema, Schema: []byte(`{"type":"object"}`)}}, "", ""},
		{"response_format without type", Request{Messages: user, ResponseFormat: &ResponseFormat{}}, "response_format", "'response_format.type'"},
		{"response_format unknown type", Request{Messages: user, ResponseFormat: &ResponseFormat{Type: "xml"}}, "response_format", `"xml"`},
		{"json_schema without schema", Request{Messages: user, ResponseFormat: &ResponseFormat{Type: FormatJSONSchema}}, "response_format", "JSON Schema object"},
		{"json_schema not an object", Request{Messages: user, ResponseFormat: &ResponseFormat{Type: FormatJSONSchema, Schema: []byte(`[1]`)}}, "response_format", "JSON Schema object"},
		{"json_object with a schema", Request{Messages: user, ResponseFormat: &ResponseFormat{Type: FormatJSONObject, Schema: []byte(`{}`)}}, "response_format", "only allowed with type 'json_schema'"},
		{"first fault wins", Request{Messages: user, MaxTokens: -1, Temperature: f32(9)}, "max_tokens", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.req.Validate()
			if tt.param == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var fe *Error
			if !errors.As(err, &fe) || fe.Code != CodeInvalidArgument || fe.Param != tt.param || !strings.Contains(fe.Message, tt.msg) {
				t.Fatalf("Validate = %v (%#v), want param %q and a message with %q", err, fe, tt.param, tt.msg)
			}
		})
	}
}

// TestValidateOptions checks that a request without messages (a raw
// prompt) still gets its options checked.
func TestValidateOptions(t *testing.T) {
	t.Parallel()
	if err := (&Request{}).ValidateOptions(); err != nil {
		t.Errorf("no options: %v", err)
	}
	var fe *Error
	if err := (&Request{Stop: make([]string, 5)}).ValidateOptions(); !errors.As(err, &fe) || fe.Param != "stop" {
		t.Errorf("five stops: %v", err)
	}
}

// TestValidateMessages checks the messages' rules alone, which the OpenAI
// decoder runs before the options are decoded.
func TestValidateMessages(t *testing.T) {
	t.Parallel()
	if err := (&Request{Messages: []Message{{Role: RoleUser}}, MaxTokens: -1}).ValidateMessages(); err != nil {
		t.Errorf("bad options, good messages: %v", err)
	}
	var fe *Error
	if err := (&Request{}).ValidateMessages(); !errors.As(err, &fe) || fe.Param != "messages" {
		t.Errorf("no messages: %v", err)
	}
	for _, role := range []string{RoleSystem, RoleUser, RoleAssistant, RoleTool} {
		if !IsRole(role) {
			t.Errorf("IsRole(%q) = false", role)
		}
	}
	for _, role := range []string{"", "developer", "function", "User"} {
		if IsRole(role) {
			t.Errorf("IsRole(%q) = true", role)
		}
	}
}

// TestValidateTools checks the tools, the tool choice and the messages
// that carry calls and their results.
func TestValidateTools(t *testing.T) {
	t.Parallel()
	user := Message{Role: RoleUser, Content: "hi"}
	fn := func(name, params string) Tool {
		return Tool{Type: ToolTypeFunction, Function: ToolFunction{Name: name, Parameters: json.RawMessage(params)}}
	}
	call := func(id, name, args string) ToolCall {
		return ToolCall{ID: id, Type: ToolTypeFunction, Function: ToolCallFunction{Name: name, Arguments: args}}
	}
	tools := []Tool{fn("get_weather", `{"type":"object"}`), fn("f-2", "")}
	for _, tt := range []struct {
		name  string
		req   Request
		param string
	}{
		{"tools", Request{Messages: []Message{user}, Tools: tools}, ""},
		{"named", Request{Messages: []Message{user}, Tools: tools, ToolChoice: &ToolChoice{Mode: ToolChoiceFunction, Name: "f-2"}}, ""},
		{"required", Request{Messages: []Message{user}, Tools: tools, ToolChoice: &ToolChoice{Mode: ToolChoiceRequired}}, ""},
		{"none without tools", Request{Messages: []Message{user}, ToolChoice: &ToolChoice{Mode: ToolChoiceNone}}, ""},
		{"round trip", Request{Messages: []Message{user,
			{Role: RoleAssistant, ToolCalls: []ToolCall{call("c1", "get_weather", `{"city":"Paris"}`), call("c2", "f-2", "")}},
			{Role: RoleTool, ToolCallID: "c2", Content: "x"}, {Role: RoleTool, ToolCallID: "c1", Content: "15"}}, Tools: tools}, ""},

		{"bad name", Request{Messages: []Message{user}, Tools: []Tool{fn("get weather", "")}}, "tools[0].function.name"},
		{"long name", Request{Messages: []Message{user}, Tools: []Tool{fn(strings.Repeat("a", 65), "")}}, "tools[0].function.name"},
		{"no name", Request{Messages: []Message{user}, Tools: []Tool{tools[0], fn("", "")}}, "tools[1].function.name"},
		{"twice", Request{Messages: []Message{user}, Tools: []Tool{tools[0], tools[0]}}, "tools[1].function.name"},
		{"type", Request{Messages: []Message{user}, Tools: []Tool{{Type: "retrieval"}}}, "tools[0].type"},
		{"parameters not object", Request{Messages: []Message{user}, Tools: []Tool{fn("f", `[1]`)}}, "tools[0].function.parameters"},
		{"unknown function", Request{Messages: []Message{user}, Tools: tools, ToolChoice: &ToolChoice{Mode: ToolChoiceFunction, Name: "g"}}, "tool_choice"},
		{"unknown mode", Request{Messages: []Message{user}, Tools: tools, ToolChoice: &ToolChoice{Mode: "any"}}, "tool_choice"},
		{"required without tools", Request{Messages: []Message{user}, ToolChoice: &ToolChoice{Mode: ToolChoiceRequired}}, "tool_choice"},
		{"answers nothing", Request{Messages: []Message{user, {Role: RoleTool, ToolCallID: "c1", Content: "x"}}}, "messages[1].tool_call_id"},
		{"answers a later call", Request{Messages: []Message{user, {Role: RoleTool, ToolCallID: "c1", Content: "x"},
			{Role: RoleAssistant, ToolCalls: []ToolCall{call("c1", "f", "")}}}}, "messages[1].tool_call_id"},
		{"no tool_call_id", Request{Messages: []Message{user, {Role: RoleAssistant, ToolCalls: []ToolCall{call("c1", "f", "")}},
			{Role: RoleTool, Content: "x"}}}, "messages[2].tool_call_id"},
		{"call without id", Request{Messages: []Message{user, {Role: RoleAssistant, ToolCalls: []ToolCall{call("", "f", "")}}}}, "messages[1].tool_calls[0].id"},
		{"call arguments", Request{Messages: []Message{user, {Role: RoleAssistant, ToolCalls: []ToolCall{call("c", "f", "[")}}}}, "messages[1].tool_calls[0].function.arguments"},
		{"duplicate call id", Request{Messages: []Message{user, {Role: RoleAssistant, ToolCalls: []ToolCall{call("c", "f", ""), call("c", "f", "")}}}}, "messages[1].tool_calls[1].id"},
		{"user with calls", Request{Messages: []Message{{Role: RoleUser, ToolCalls: []ToolCall{call("c", "f", "")}}}}, "messages[0].tool_calls"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.req.Validate()
			var fe *Error
			switch {
			case tt.param == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.param != "" && (!errors.As(err, &fe) || fe.Code != CodeInvalidArgument || fe.Param != tt.param):
				t.Fatalf("Validate = %v, want invalid_argument naming %q", err, tt.param)
			}
		})
	}
}

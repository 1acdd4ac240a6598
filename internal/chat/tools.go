package chat

import "encoding/json"

// RoleTool is the role of a message that carries a tool's result back to
// the model; its ToolCallID names the call it answers.
const RoleTool = "tool"

// ToolTypeFunction is the one tool type the OpenAI API defines.
const ToolTypeFunction = "function"

// FinishToolCalls is the finish reason of a generation that ended by
// calling tools.
const FinishToolCalls = "tool_calls"

// Tool is a tool the model may call, as the OpenAI API describes one:
// {"type": "function", "function": {...}}.
type Tool struct {
	Type     string       `json:"type"`
	Function ToolFunction `json:"function"`
}

// ToolFunction declares a function: its name, what it does, and its
// parameters as a JSON Schema object.
type ToolFunction struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Parameters is a JSON Schema object, kept as the client sent it;
	// empty when the function takes no parameters.
	Parameters json.RawMessage `json:"parameters,omitempty"`
	// Strict is the client's "strict"; nil when absent.
	Strict *bool `json:"strict,omitempty"`
}

// ToolCall is one call the model made, as an assistant message's
// tool_calls entry.
type ToolCall struct {
	// ID names the call; the tool message with the result repeats it.
	ID       string           `json:"id"`
	Type     string           `json:"type"`
	Function ToolCallFunction `json:"function"`
}

// ToolCallFunction is the function a ToolCall calls and its arguments.
type ToolCallFunction struct {
	Name string `json:"name"`
	// Arguments is a JSON object, as a string (the OpenAI API's shape).
	Arguments string `json:"arguments"`
}

// Tool choices, as the OpenAI API names them in tool_choice.
const (
	// ToolChoiceAuto lets the model answer in text or call tools: the
	// default when tools are given.
	ToolChoiceAuto = "auto"
	// ToolChoiceNone forbids calls: the answer is text.
	ToolChoiceNone = "none"
	// ToolChoiceRequired makes the model call one tool or more.
	ToolChoiceRequired = "required"
	// ToolChoiceFunction makes the model call the function ToolChoice.Name.
	ToolChoiceFunction = "function"
)

// ToolChoice is whether, and which, tools the model must call.
type ToolChoice struct {
	// Mode is ToolChoiceAuto, ToolChoiceNone, ToolChoiceRequired or
	// ToolChoiceFunction.
	Mode string `json:"mode"`
	// Name is the function to call, for ToolChoiceFunction.
	Name string `json:"name,omitempty"`
}

// ToolMode is the request's tool choice: its ToolChoice's Mode, or
// ToolChoiceAuto when it has tools and gave none (ToolChoiceNone without
// tools).
func (r *Request) ToolMode() string {
	switch {
	case r.ToolChoice != nil && r.ToolChoice.Mode != "":
		return r.ToolChoice.Mode
	case len(r.Tools) > 0:
		return ToolChoiceAuto
	default:
		return ToolChoiceNone
	}
}

// Parallel reports whether the model may make more than one call in a
// reply: parallel_tool_calls, true unless the client said false.
func (r *Request) Parallel() bool { return r.ParallelToolCalls == nil || *r.ParallelToolCalls }

// UsesTools reports whether the request declares tools or carries a
// conversation with calls or their results: either needs a model that
// speaks a function-calling format.
func (r *Request) UsesTools() bool {
	if len(r.Tools) > 0 {
		return true
	}
	for _, m := range r.Messages {
		if m.Role == RoleTool || len(m.ToolCalls) > 0 {
			return true
		}
	}
	return false
}

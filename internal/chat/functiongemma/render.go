package functiongemma

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Part is one piece of a rendered prompt.
type Part struct {
	Text string
	// Content marks text that came from the client — message contents,
	// tool names and descriptions, schemas, arguments, results — which must
	// be tokenized as plain text, never as control tokens, so that a client
	// who writes "<escape>" cannot end a string early or forge a call. The
	// other parts are the format's own and spell its control tokens.
	Content bool
}

// Prompt is a rendered prompt in parts.
type Prompt []Part

// String returns the prompt's text.
func (p Prompt) String() string {
	var b strings.Builder
	for _, part := range p {
		b.WriteString(part.Text)
	}
	return b.String()
}

// builder appends parts, merging neighbours of the same kind.
type builder struct{ p Prompt }

func (b *builder) add(s string, content bool) {
	if s == "" {
		return
	}
	if n := len(b.p); n > 0 && b.p[n-1].Content == content {
		b.p[n-1].Text += s
		return
	}
	b.p = append(b.p, Part{Text: s, Content: content})
}

func (b *builder) control(s string) { b.add(s, false) }
func (b *builder) content(s string) { b.add(s, true) }

// str writes a string value between <escape> tokens.
func (b *builder) str(s string) {
	b.control(Escape)
	b.content(s)
	b.control(Escape)
}

// schemaSkip are JSON Schema keys a declaration leaves out: FunctionGemma
// was trained on declarations without them, and "additionalProperties":
// false, which every strict OpenAI tool carries, constrains nothing the
// model writes.
var schemaSkip = []string{"$schema", "additionalProperties"}

// Render returns the prompt for msgs with tools declared, ending where the
// model's reply begins. The message roles are chat's system, user and
// assistant, plus chat.RoleTool for a function's result.
//
//   - A first system message and the tool declarations make the developer
//     turn. With tools, TriggerPhrase is added unless the system message
//     already holds it. A later system message is a developer turn of its
//     own.
//   - An assistant message's calls follow its content in its model turn;
//     the tool messages after it are the responses, in the same turn, and
//     an assistant message after those goes on in that turn, as the model
//     itself would after <end_function_response>.
//   - A tool message names its function through its ToolCallID (the
//     call's ID), or by position among the calls when it has none.
//
// Object keys are written sorted, as the model's Jinja template does.
// The prompt does not begin with <bos>: the tokenizer adds it.
func Render(msgs []chat.Message, tools []chat.Tool) (Prompt, error) {
	var b builder
	i := 0
	system, hasSystem := "", false
	if len(msgs) > 0 && msgs[0].Role == chat.RoleSystem {
		system, hasSystem, i = strings.TrimSpace(msgs[0].Content), true, 1
	}
	if hasSystem || len(tools) > 0 {
		b.control(startOfTurn + "developer\n")
		b.content(system)
		if len(tools) > 0 && !strings.Contains(system, TriggerPhrase) {
			if system != "" {
				b.control("\n")
			}
			b.control(TriggerPhrase)
		}
		for j, t := range tools {
			if err := writeDeclaration(&b, t); err != nil {
				return nil, chat.Invalidf(fmt.Sprintf("tools[%d]", j), "Invalid tool 'tools[%d]': %v", j, err)
			}
		}
		b.control(endOfTurn + "\n")
	}

	openModelTurn := false // a model turn with calls, not yet ended
	var calls []chat.ToolCall
	answered := 0
	for ; i < len(msgs); i++ {
		m := msgs[i]
		switch m.Role {
		case chat.RoleUser, chat.RoleSystem:
			if openModelTurn {
				b.control(endOfTurn + "\n")
				openModelTurn = false
			}
			role := "user"
			if m.Role == chat.RoleSystem {
				role = "developer"
			}
			b.control(startOfTurn + role + "\n")
			b.content(strings.TrimSpace(m.Content))
			b.control(endOfTurn + "\n")
			calls = nil
		case chat.RoleAssistant:
			if !openModelTurn {
				b.control(startOfTurn + "model\n")
			}
			b.content(strings.TrimSpace(m.Content))
			for k, c := range m.ToolCalls {
				if err := writeCall(&b, c); err != nil {
					param := fmt.Sprintf("messages[%d].tool_calls[%d]", i, k)
					return nil, chat.Invalidf(param, "Invalid '%s': %v", param, err)
				}
			}
			openModelTurn = len(m.ToolCalls) > 0
			if openModelTurn {
				calls, answered = m.ToolCalls, 0
			} else {
				b.control(endOfTurn + "\n")
				calls = nil
			}
		case chat.RoleTool:
			param := fmt.Sprintf("messages[%d]", i)
			if !openModelTurn || len(calls) == 0 {
				return nil, chat.Invalidf(param, "Invalid '%s': a message with role 'tool' must answer a preceding message with 'tool_calls'.", param)
			}
			name, err := calledName(calls, m.ToolCallID, answered)
			if err != nil {
				return nil, chat.Invalidf(param+".tool_call_id", "Invalid '%s.tool_call_id': %v", param, err)
			}
			writeResponse(&b, name, m.Content)
			answered++
		default:
			param := fmt.Sprintf("messages[%d].role", i)
			return nil, chat.Invalidf(param, "Invalid value for '%s': %q.", param, m.Role)
		}
	}
	if !openModelTurn {
		b.control(startOfTurn + "model\n")
	}
	return b.p, nil
}

// calledName is the name of the function the call with id made, or of the
// nth call when id is empty.
func calledName(calls []chat.ToolCall, id string, n int) (string, error) {
	if id == "" {
		if n < len(calls) {
			return calls[n].Function.Name, nil
		}
		return "", fmt.Errorf("more results than calls (%d)", len(calls))
	}
	for _, c := range calls {
		if c.ID == id {
			return c.Function.Name, nil
		}
	}
	return "", fmt.Errorf("no call with id %q among the preceding message's tool_calls", id)
}

// writeDeclaration writes one tool's <start_function_declaration> block:
// declaration:name{description:<escape>...<escape>,parameters:{...}}.
func writeDeclaration(b *builder, t chat.Tool) error {
	if t.Type != chat.ToolTypeFunction {
		return fmt.Errorf("type %q; only %q is supported", t.Type, chat.ToolTypeFunction)
	}
	f := t.Function
	if f.Name == "" {
		return errors.New("the function has no name")
	}
	var params any
	if len(bytes.TrimSpace(f.Parameters)) > 0 {
		v, err := decodeJSON(f.Parameters)
		if err != nil {
			return fmt.Errorf("parameters: %w", err)
		}
		if v != nil {
			if _, ok := v.(map[string]any); !ok {
				return errors.New("parameters must be a JSON Schema object")
			}
			params = v
		}
	}
	b.control(StartDeclaration + "declaration:")
	b.content(f.Name)
	b.control("{")
	sep := ""
	if f.Description != "" {
		b.control("description:")
		b.str(f.Description)
		sep = ","
	}
	if params != nil {
		b.control(sep + "parameters:")
		writeSchema(b, params.(map[string]any))
	}
	b.control("}" + EndDeclaration)
	return nil
}

// writeSchema writes a JSON Schema object with its keys sorted, its type
// names in upper case (STRING, OBJECT, ...) as Gemini's schemas spell them,
// and the schemas it nests written the same way.
func writeSchema(b *builder, s map[string]any) {
	b.control("{")
	first := true
	for _, k := range sortedKeys(s) {
		if slices.Contains(schemaSkip, k) {
			continue
		}
		if !first {
			b.control(",")
		}
		first = false
		b.content(k)
		b.control(":")
		v := s[k]
		switch k {
		case "type":
			switch t := v.(type) {
			case string:
				b.str(strings.ToUpper(t))
			case []any:
				upper := make([]any, len(t))
				for i, e := range t {
					if s, ok := e.(string); ok {
						e = strings.ToUpper(s)
					}
					upper[i] = e
				}
				writeValue(b, upper)
			default:
				writeValue(b, v)
			}
		case "properties", "$defs", "definitions":
			m, ok := v.(map[string]any)
			if !ok {
				writeValue(b, v)
				break
			}
			b.control("{")
			for j, name := range sortedKeys(m) {
				if j > 0 {
					b.control(",")
				}
				b.content(name)
				b.control(":")
				writeSchemaOrValue(b, m[name])
			}
			b.control("}")
		case "items", "not":
			writeSchemaOrValue(b, v)
		case "anyOf", "oneOf", "allOf":
			a, ok := v.([]any)
			if !ok {
				writeValue(b, v)
				break
			}
			b.control("[")
			for j, e := range a {
				if j > 0 {
					b.control(",")
				}
				writeSchemaOrValue(b, e)
			}
			b.control("]")
		default:
			writeValue(b, v)
		}
	}
	b.control("}")
}

func writeSchemaOrValue(b *builder, v any) {
	if m, ok := v.(map[string]any); ok {
		writeSchema(b, m)
		return
	}
	writeValue(b, v)
}

// writeValue writes a JSON value in the format: strings between <escape>
// tokens, numbers, booleans and null bare, objects with bare keys, sorted.
func writeValue(b *builder, v any) {
	switch v := v.(type) {
	case nil:
		b.content("null")
	case bool:
		b.content(fmt.Sprint(v))
	case json.Number:
		b.content(v.String())
	case string:
		b.str(v)
	case []any:
		b.control("[")
		for i, e := range v {
			if i > 0 {
				b.control(",")
			}
			writeValue(b, e)
		}
		b.control("]")
	case map[string]any:
		writeMembers(b, v)
	}
}

// writeMembers writes an object's members between braces.
func writeMembers(b *builder, m map[string]any) {
	b.control("{")
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b.control(",")
		}
		b.content(k)
		b.control(":")
		writeValue(b, m[k])
	}
	b.control("}")
}

// writeCall writes an assistant's call:
// <start_function_call>call:name{key:value,...}<end_function_call>.
func writeCall(b *builder, c chat.ToolCall) error {
	if c.Type != "" && c.Type != chat.ToolTypeFunction {
		return fmt.Errorf("type %q; only %q is supported", c.Type, chat.ToolTypeFunction)
	}
	if c.Function.Name == "" {
		return errors.New("the function has no name")
	}
	args := map[string]any{}
	if strings.TrimSpace(c.Function.Arguments) != "" {
		v, err := decodeJSON([]byte(c.Function.Arguments))
		if err != nil {
			return fmt.Errorf("function.arguments: %w", err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return errors.New("function.arguments must be a JSON object")
		}
		args = m
	}
	b.control(StartCall + "call:")
	b.content(c.Function.Name)
	writeMembers(b, args)
	b.control(EndCall)
	return nil
}

// writeResponse writes a function's result:
// <start_function_response>response:name{...}<end_function_response>. A
// result that is a JSON object gives the members; any other result is the
// one member "value" (a JSON number, array, ... as such, other text as a
// string).
func writeResponse(b *builder, name, result string) {
	b.control(StartResponse + "response:")
	b.content(name)
	v, err := decodeJSON([]byte(result))
	switch m, ok := v.(map[string]any); {
	case err == nil && ok:
		writeMembers(b, m)
	default:
		if err != nil {
			v = result
		}
		b.control("{")
		b.content("value")
		b.control(":")
		writeValue(b, v)
		b.control("}")
	}
	b.control(EndResponse)
}

// decodeJSON decodes exactly one JSON value, keeping numbers as written.
func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not valid JSON: data after the value")
	}
	return v, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

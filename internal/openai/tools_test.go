package openai

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	sdk "github.com/openai/openai-go/v3"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// weatherTool is a tool as clients declare one.
const weatherTool = `{"type":"function","function":{"name":"get_weather","description":"Weather at a place.",` +
	`"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}}`

func TestDecodeTools(t *testing.T) {
	t.Parallel()
	weather := chat.Tool{Type: "function", Function: chat.ToolFunction{Name: "get_weather", Description: "Weather at a place.",
		Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`), Strict: ptr(true)}}
	noParams := chat.Tool{Type: "function", Function: chat.ToolFunction{Name: "now"}}
	tools := []chat.Tool{weather, noParams}
	both := `"tools":[` + weatherTool + `,{"type":"function","function":{"name":"now","parameters":null}}]`
	call := chat.ToolCall{ID: "call_1", Type: "function", Function: chat.ToolCallFunction{Name: "get_weather", Arguments: `{"city":"Paris"}`}}
	for _, tt := range []struct {
		name string
		body string
		want chat.Request
	}{
		{"tools", `{` + both + `,` + user + `}`, chat.Request{Messages: hi(), Tools: tools}},
		{"auto", `{` + both + `,"tool_choice":"auto",` + user + `}`,
			chat.Request{Messages: hi(), Tools: tools, ToolChoice: &chat.ToolChoice{Mode: "auto"}}},
		{"none", `{` + both + `,"tool_choice":"none",` + user + `}`,
			chat.Request{Messages: hi(), Tools: tools, ToolChoice: &chat.ToolChoice{Mode: "none"}}},
		{"required, one call", `{` + both + `,"tool_choice":"required","parallel_tool_calls":false,` + user + `}`,
			chat.Request{Messages: hi(), Tools: tools, ToolChoice: &chat.ToolChoice{Mode: "required"}, ParallelToolCalls: ptr(false)}},
		{"named", `{` + both + `,"tool_choice":{"type":"function","function":{"name":"now"}},` + user + `}`,
			chat.Request{Messages: hi(), Tools: tools, ToolChoice: &chat.ToolChoice{Mode: "function", Name: "now"}}},
		{"round trip", `{"tools":[` + weatherTool + `],"messages":[{"role":"user","content":"Weather in Paris?"},` +
			`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},` +
			`{"role":"tool","tool_call_id":"call_1","content":[{"type":"text","text":"15"},{"type":"text","text":"C"}]}]}`,
			chat.Request{Tools: []chat.Tool{weather}, Messages: []chat.Message{
				{Role: "user", Content: "Weather in Paris?"},
				{Role: "assistant", ToolCalls: []chat.ToolCall{call}},
				{Role: "tool", ToolCallID: "call_1", Content: "15\nC"},
			}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, e := DecodeChatRequest([]byte(tt.body), Limits{})
			if e != nil {
				t.Fatalf("DecodeChatRequest: %v", e)
			}
			if !reflect.DeepEqual(got.Request, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got.Request, tt.want)
			}
		})
	}
}

func TestDecodeToolsInvalid(t *testing.T) {
	t.Parallel()
	tool := func(fn string) string { return `"tools":[{"type":"function","function":` + fn + `}]` }
	callMsg := func(call string) string {
		return `"messages":[{"role":"user","content":"a"},{"role":"assistant","content":null,"tool_calls":[` + call + `]}]`
	}
	for _, tt := range []struct {
		name, body, param, msg string
	}{
		{"tools not array", `{"tools":{},` + user + `}`, "tools", "expected an array"},
		{"tool null", `{"tools":[null],` + user + `}`, "tools[0]", "got null"},
		{"tool type missing", `{"tools":[{"function":{"name":"f"}}],` + user + `}`, "tools[0].type", "Missing"},
		{"tool type", `{"tools":[{"type":"custom","function":{"name":"f"}}],` + user + `}`, "tools[0].type", `"custom"`},
		{"function missing", `{"tools":[{"type":"function"}],` + user + `}`, "tools[0].function", "Missing"},
		{"name with space", `{` + tool(`{"name":"get weather"}`) + `,` + user + `}`, "tools[0].function.name", "^[a-zA-Z0-9_-]{1,64}$"},
		{"name too long", `{` + tool(`{"name":"`+strings.Repeat("f", 65)+`"}`) + `,` + user + `}`, "tools[0].function.name", ""},
		{"name missing", `{` + tool(`{"description":"d"}`) + `,` + user + `}`, "tools[0].function.name", ""},
		{"name not string", `{` + tool(`{"name":5}`) + `,` + user + `}`, "tools[0].function.name", "expected a string"},
		{"parameters array", `{` + tool(`{"name":"f","parameters":[]}`) + `,` + user + `}`, "tools[0].function.parameters", "JSON Schema object"},
		{"parameters string", `{` + tool(`{"name":"f","parameters":"{}"}`) + `,` + user + `}`, "tools[0].function.parameters", "JSON Schema object"},
		{"tool_choice unknown", `{` + tool(`{"name":"f"}`) + `,"tool_choice":"any",` + user + `}`, "tool_choice", `"any"`},
		{"tool_choice function string", `{` + tool(`{"name":"f"}`) + `,"tool_choice":"function",` + user + `}`, "tool_choice", ""},
		{"tool_choice number", `{` + tool(`{"name":"f"}`) + `,"tool_choice":1,` + user + `}`, "tool_choice", "got a number"},
		{"tool_choice type", `{` + tool(`{"name":"f"}`) + `,"tool_choice":{"type":"allowed_tools"},` + user + `}`, "tool_choice.type", ""},
		{"tool_choice no name", `{` + tool(`{"name":"f"}`) + `,"tool_choice":{"type":"function"},` + user + `}`, "tool_choice.function.name", "Missing"},
		{"tool_choice unknown function", `{` + tool(`{"name":"f"}`) + `,"tool_choice":{"type":"function","function":{"name":"g"}},` + user + `}`,
			"tool_choice", `"g" is not among the tools`},
		{"parallel_tool_calls string", `{` + tool(`{"name":"f"}`) + `,"parallel_tool_calls":"no",` + user + `}`, "parallel_tool_calls", "expected a boolean"},

		{"tool message without id", `{"messages":[{"role":"user","content":"a"},{"role":"tool","content":"r"}]}`, "messages[1].tool_call_id", "Missing"},
		{"tool message without content", `{"messages":[{"role":"user","content":"a"},` +
			`{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},` +
			`{"role":"tool","tool_call_id":"c"}]}`, "messages[2].content", "Missing"},
		{"tool message answering another id", `{"messages":[{"role":"user","content":"a"},` +
			`{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},` +
			`{"role":"tool","tool_call_id":"d","content":"r"}]}`, "messages[2].tool_call_id", `"d"`},
		{"user with tool_calls", `{"messages":[{"role":"user","content":"a","tool_calls":[]}]}`, "messages[0].tool_calls", "only allowed"},
		{"tool_calls not array", `{` + strings.Replace(callMsg(`1`), `[1]`, `{}`, 1) + `}`, "messages[1].tool_calls", "expected an array"},
		{"call id missing", `{` + callMsg(`{"type":"function","function":{"name":"f","arguments":"{}"}}`) + `}`, "messages[1].tool_calls[0].id", "Missing"},
		{"call type", `{` + callMsg(`{"id":"c","type":"custom","function":{"name":"f","arguments":"{}"}}`) + `}`, "messages[1].tool_calls[0].type", ""},
		{"call arguments missing", `{` + callMsg(`{"id":"c","type":"function","function":{"name":"f"}}`) + `}`, "messages[1].tool_calls[0].function.arguments", "Missing"},
		{"call arguments not JSON", `{` + callMsg(`{"id":"c","type":"function","function":{"name":"f","arguments":"{city"}}`) + `}`,
			"messages[1].tool_calls[0].function.arguments", "JSON object"},
		{"call arguments object", `{` + callMsg(`{"id":"c","type":"function","function":{"name":"f","arguments":{}}}`) + `}`,
			"messages[1].tool_calls[0].function.arguments", "expected a string"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, e := DecodeChatRequest([]byte(tt.body), Limits{})
			if e == nil {
				t.Fatalf("DecodeChatRequest succeeded with %+v", got)
			}
			if e.Status != 400 || e.Type != TypeInvalidRequest || e.Param != tt.param || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("got %d %s param %q: %s; want param %q and a message with %q", e.Status, e.Type, e.Param, e.Message, tt.param, tt.msg)
			}
			b, _ := json.Marshal(e)
			if !bytes.HasPrefix(b, []byte(`{"error":{"message":`)) {
				t.Errorf("envelope %s", b)
			}
		})
	}
}

var testCalls = []chat.ToolCall{
	{ID: "call_a1", Type: "function", Function: chat.ToolCallFunction{Name: "get_weather", Arguments: `{"city":"Paris"}`}},
	{ID: "call_b2", Type: "function", Function: chat.ToolCallFunction{Name: "now", Arguments: `{}`}},
}

// A reply of calls only has content null, the calls and finish_reason
// tool_calls, as OpenAI's; the SDK reads it, and turns it back into the
// assistant message of the next request, which decodes to the same calls.
func TestToolCallsResponse(t *testing.T) {
	t.Parallel()
	res := chat.Result{FinishReason: chat.FinishToolCalls, ToolCalls: testCalls, PromptTokens: 9, CompletionTokens: 12}
	b, err := json.Marshal(NewChatCompletion(testMeta, res))
	if err != nil {
		t.Fatal(err)
	}
	want := `"message":{"role":"assistant","content":null,"tool_calls":[` +
		`{"id":"call_a1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},` +
		`{"id":"call_b2","type":"function","function":{"name":"now","arguments":"{}"}}]},"finish_reason":"tool_calls"`
	if !strings.Contains(string(b), want) {
		t.Errorf("response %s\nwant it to hold %s", b, want)
	}
	var c sdk.ChatCompletion
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	msg := c.Choices[0].Message
	if msg.JSON.Content.Valid() || len(msg.ToolCalls) != 2 || msg.ToolCalls[0].ID != "call_a1" ||
		msg.ToolCalls[0].Function.Name != "get_weather" || msg.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` {
		t.Errorf("SDK message %s", msg.RawJSON())
	}

	next := sdk.ChatCompletionNewParams{Model: "m", Messages: []sdk.ChatCompletionMessageParamUnion{
		sdk.UserMessage("Weather in Paris?"), msg.ToParam(), sdk.ToolMessage("15", "call_a1"), sdk.ToolMessage("12:00", "call_b2"),
	}}
	body, err := json.Marshal(next)
	if err != nil {
		t.Fatal(err)
	}
	req, e := DecodeChatRequest(body, Limits{})
	if e != nil {
		t.Fatalf("the SDK's next request %s: %v", body, e)
	}
	if got := req.Messages[1].ToolCalls; !reflect.DeepEqual(got, testCalls) {
		t.Errorf("calls sent back %+v, want %+v", got, testCalls)
	}
	if m := req.Messages[3]; m.Role != chat.RoleTool || m.ToolCallID != "call_b2" || m.Content != "12:00" {
		t.Errorf("tool message %+v", m)
	}

	// Text beside calls stays; text alone is never null.
	res.Text = "Let me look."
	if m := NewChatCompletion(testMeta, res).Choices[0].Message; m.Content == nil || *m.Content != res.Text {
		t.Errorf("text and calls: %+v", m)
	}
	if m := NewChatCompletion(testMeta, chat.Result{}).Choices[0].Message; m.Content == nil || *m.Content != "" || m.ToolCalls != nil {
		t.Errorf("empty reply: %+v", m)
	}
}

// A stream sends each call as OpenAI does: a chunk with its index, id,
// type and name and empty arguments, then the arguments. The SDK's
// accumulator, which clients use to rebuild a streamed message, gets the
// calls back whole.
func TestStreamToolCalls(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := NewStreamWriter(&buf, nil, testMeta, true)
	for _, d := range []chat.Delta{{Content: "Let me look."}, {ToolCalls: testCalls[:1]}, {}, {ToolCalls: testCalls[1:]}} {
		if err := w.Send(d); err != nil {
			t.Fatal(err)
		}
	}
	res := chat.Result{FinishReason: chat.FinishToolCalls, PromptTokens: 9, CompletionTokens: 12}
	if err := w.Finish(res); err != nil {
		t.Fatal(err)
	}
	if err := w.Done(); err != nil {
		t.Fatal(err)
	}
	p, err := parseStream(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	// role, text, 2 per call, finish, usage
	if len(p.chunks) != 8 || !p.done {
		t.Fatalf("%d chunks (done %v):\n%s", len(p.chunks), p.done, buf.String())
	}
	head := `"delta":{"tool_calls":[{"index":1,"id":"call_b2","type":"function","function":{"name":"now","arguments":""}}]}`
	args := `"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}`
	if !strings.Contains(buf.String(), head) || !strings.Contains(buf.String(), args) {
		t.Errorf("stream\n%s\nwant chunks with %s and %s", buf.String(), head, args)
	}

	var acc sdk.ChatCompletionAccumulator
	for _, event := range strings.Split(strings.TrimSpace(buf.String()), "\n\n") {
		data := strings.TrimPrefix(event, "data: ")
		if data == "[DONE]" {
			break
		}
		var c sdk.ChatCompletionChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatal(err)
		}
		if !acc.AddChunk(c) {
			t.Fatalf("the accumulator refused chunk %s", data)
		}
	}
	msg := acc.Choices[0].Message
	if msg.Content != "Let me look." || len(msg.ToolCalls) != 2 || acc.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("accumulated %s", acc.RawJSON())
	}
	for i, c := range msg.ToolCalls {
		if c.ID != testCalls[i].ID || c.Function.Name != testCalls[i].Function.Name || c.Function.Arguments != testCalls[i].Function.Arguments {
			t.Errorf("call %d accumulated as %+v, want %+v", i, c, testCalls[i])
		}
	}
	if acc.Usage.TotalTokens != 21 {
		t.Errorf("usage %+v", acc.Usage)
	}
}

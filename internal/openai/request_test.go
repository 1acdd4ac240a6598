package openai

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

func ptr[T any](v T) *T { return &v }

// user is the smallest valid messages array, for cases about other fields.
const user = `"messages":[{"role":"user","content":"hi"}]`

func hi() []chat.Message { return []chat.Message{{Role: chat.RoleUser, Content: "hi"}} }

func TestDecodeChatRequestValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want ChatCompletionRequest
	}{
		{"minimal", `{` + user + `}`, ChatCompletionRequest{Request: chat.Request{Messages: hi()}}},
		{"model and user", `{"model":"m","user":"u1",` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Model: "m", Messages: hi()}, User: "u1"}},
		{"all roles", `{"messages":[
			{"role":"system","content":"s"},
			{"role":"developer","content":"d"},
			{"role":"user","content":"u"},
			{"role":"assistant","content":"a"},
			{"role":"assistant","content":null},
			{"role":"assistant"}]}`,
			ChatCompletionRequest{Request: chat.Request{Messages: []chat.Message{
				{Role: chat.RoleSystem, Content: "s"},
				{Role: chat.RoleSystem, Content: "d"},
				{Role: chat.RoleUser, Content: "u"},
				{Role: chat.RoleAssistant, Content: "a"},
				{Role: chat.RoleAssistant},
				{Role: chat.RoleAssistant},
			}}}},
		{"empty string content", `{"messages":[{"role":"user","content":""}]}`,
			ChatCompletionRequest{Request: chat.Request{Messages: []chat.Message{{Role: chat.RoleUser}}}}},
		{"text parts joined by newline", `{"messages":[{"role":"user","content":[
			{"type":"text","text":"a"},{"type":"text","text":"b","cache_control":{}}]}]}`,
			ChatCompletionRequest{Request: chat.Request{Messages: []chat.Message{{Role: chat.RoleUser, Content: "a\nb"}}}}},
		// Fields that change nothing in the text are accepted and ignored;
		// so are unknown fields inside a message (only top-level names are
		// checked).
		{"ignored fields", `{"metadata":{"k":"v"},"store":false,"service_tier":"auto","parallel_tool_calls":true,` +
			`"prediction":{"type":"content","content":"x"},"prompt_cache_key":"k","prompt_cache_retention":"24h",` +
			`"prompt_cache_options":{},"safety_identifier":"s","modalities":["text"],` +
			`"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false},` +
			`"messages":[{"role":"user","content":"hi","name":"bob","extra":1}]}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi(), ParallelToolCalls: ptr(true)}, Stream: true, IncludeUsage: true}},
		{"service_tier default", `{"service_tier":"default",` + user + `}`, ChatCompletionRequest{Request: chat.Request{Messages: hi()}}},
		{"max_tokens", `{"max_tokens":5,` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi(), MaxTokens: 5, MaxTokensParam: "max_tokens"}}},
		{"max_completion_tokens wins", `{"max_tokens":5,"max_completion_tokens":7,` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi(), MaxTokens: 7, MaxTokensParam: "max_completion_tokens"}}},
		{"sampling", `{"temperature":0,"top_p":1,"seed":-9007199254740993,` +
			`"presence_penalty":-2,"frequency_penalty":2,` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi(), Temperature: ptr[float32](0), TopP: ptr[float32](1),
				Seed: ptr[int64](-9007199254740993), PresencePenalty: ptr[float32](-2), FrequencyPenalty: ptr[float32](2)}}},
		{"temperature max", `{"temperature":2,` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi(), Temperature: ptr[float32](2)}}},
		{"nulls are absent", `{"model":null,"temperature":null,"top_p":null,"max_tokens":null,"stop":null,` +
			`"n":null,"stream":null,"stream_options":null,"tools":null,"logit_bias":null,` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi()}}},
		{"stop string", `{"stop":"\n\n",` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi(), Stop: []string{"\n\n"}}}},
		{"stop array", `{"stop":["a","b","c","d"],` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi(), Stop: []string{"a", "b", "c", "d"}}}},
		{"stop empty array", `{"stop":[],` + user + `}`, ChatCompletionRequest{Request: chat.Request{Messages: hi()}}},
		{"n 1", `{"n":1,` + user + `}`, ChatCompletionRequest{Request: chat.Request{Messages: hi()}}},
		{"stream", `{"stream":true,` + user + `}`, ChatCompletionRequest{Request: chat.Request{Messages: hi()}, Stream: true}},
		{"stream false", `{"stream":false,` + user + `}`, ChatCompletionRequest{Request: chat.Request{Messages: hi()}}},
		{"include_usage", `{"stream":true,"stream_options":{"include_usage":true},` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi()}, Stream: true, IncludeUsage: true}},
		{"include_usage false", `{"stream":true,"stream_options":{"include_usage":false},` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi()}, Stream: true}},
		{"neutral unsupported values", `{"tools":[],"functions":[],"function_call":"none",` +
			`"response_format":{"type":"text"},"logprobs":false,"logit_bias":{},"modalities":[],` +
			`"audio":null,"reasoning_effort":null,"verbosity":null,"moderation":null,"web_search_options":null,` +
			`"messages":[{"role":"assistant","content":"x","tool_calls":[]},{"role":"user","content":"hi"}]}`,
			ChatCompletionRequest{Request: chat.Request{Messages: []chat.Message{{Role: chat.RoleAssistant, Content: "x"}, {Role: chat.RoleUser, Content: "hi"}},
				ResponseFormat: &chat.ResponseFormat{Type: chat.FormatText}}}},
		{"response_format json_object", `{"response_format":{"type":"json_object"},` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi(), ResponseFormat: &chat.ResponseFormat{Type: chat.FormatJSONObject}}}},
		{"response_format json_schema", `{"response_format":{"type":"json_schema","json_schema":{"name":"p","strict":true,"schema":{"type":"object"}}},` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi(), ResponseFormat: &chat.ResponseFormat{Type: chat.FormatJSONSchema, Name: "p", Strict: true, Schema: []byte(`{"type":"object"}`)}}}},
		{"json_schema without a schema is any object", `{"response_format":{"type":"json_schema","json_schema":{"name":"p"}},` + user + `}`,
			ChatCompletionRequest{Request: chat.Request{Messages: hi(), ResponseFormat: &chat.ResponseFormat{Type: chat.FormatJSONObject, Name: "p"}}}},
		{"logprobs", `{"logprobs":true,` + user + `}`, ChatCompletionRequest{Request: chat.Request{Messages: hi(), Logprobs: true}}},
		{"top_logprobs", `{"logprobs":true,"top_logprobs":20,` + user + `}`, ChatCompletionRequest{Request: chat.Request{Messages: hi(), Logprobs: true, TopLogprobs: 20}}},
		{"whitespace around body", " \n{" + user + "}\n", ChatCompletionRequest{Request: chat.Request{Messages: hi()}}},
		{"every field the services read", `{"model":"m","max_completion_tokens":9,"temperature":0.5,"top_p":0.9,` +
			`"seed":3,"stop":["x"],"presence_penalty":1,"frequency_penalty":-1,"stream":true,` +
			`"messages":[{"role":"developer","content":"be brief"},{"role":"user","content":"hi"}]}`,
			ChatCompletionRequest{Request: chat.Request{
				Model:            "m",
				Messages:         []chat.Message{{Role: chat.RoleSystem, Content: "be brief"}, {Role: chat.RoleUser, Content: "hi"}},
				MaxTokens:        9,
				MaxTokensParam:   "max_completion_tokens",
				Temperature:      ptr[float32](0.5),
				TopP:             ptr[float32](0.9),
				Seed:             ptr[int64](3),
				Stop:             []string{"x"},
				PresencePenalty:  ptr[float32](1),
				FrequencyPenalty: ptr[float32](-1),
			}, Stream: true}},
		// Escaped characters are text: NUL included, and a lone surrogate
		// becomes U+FFFD as encoding/json decodes it.
		{"escaped NUL and surrogate", `{"messages":[{"role":"user","content":"a\u0000b\ud800"}]}`,
			ChatCompletionRequest{Request: chat.Request{Messages: []chat.Message{{Role: chat.RoleUser, Content: "a\x00b\ufffd"}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, e := DecodeChatRequest([]byte(tt.body), Limits{})
			if e != nil {
				t.Fatalf("DecodeChatRequest: %v", e)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestDecodeChatRequestInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		body   string
		limits Limits
		status int    // 0 means 400
		param  string // the field the error names
		code   string
		msg    string // a part of the message
	}{
		// The body as a whole.
		{name: "empty body", body: ``, msg: "not valid JSON"},
		{name: "malformed", body: `{"messages":[`, msg: "not valid JSON"},
		{name: "trailing garbage", body: `{` + user + `} x`, msg: "not valid JSON"},
		{name: "not an object", body: `[1]`, msg: "must be a JSON object"},
		{name: "string body", body: `"hi"`, msg: "must be a JSON object"},
		{name: "invalid UTF-8", body: `{"messages":[{"role":"user","content":"` + "\xff" + `"}]}`, msg: "not valid UTF-8"},
		{name: "raw NUL", body: `{"messages":[{"role":"user","content":"` + "\x00" + `"}]}`, msg: "not valid JSON"},
		{name: "null body", body: `null`, param: "messages"},
		{name: "too large", body: `{` + user + `}`, limits: Limits{MaxBodyBytes: 10},
			status: http.StatusRequestEntityTooLarge, code: "request_too_large"},

		// messages.
		{name: "no messages", body: `{}`, param: "messages", msg: "non-empty"},
		{name: "empty messages", body: `{"messages":[]}`, param: "messages"},
		{name: "messages not array", body: `{"messages":"hi"}`, param: "messages", msg: "expected an array, but got a string"},
		{name: "message not object", body: `{"messages":["hi"]}`, param: "messages[0]", msg: "expected an object"},
		{name: "message null", body: `{"messages":[null]}`, param: "messages[0]"},
		{name: "role missing", body: `{"messages":[{"content":"hi"}]}`, param: "messages[0].role"},
		{name: "role unknown", body: `{"messages":[{"role":"robot","content":"hi"}]}`, param: "messages[0].role"},
		{name: "role not string", body: `{"messages":[{"role":1,"content":"hi"}]}`, param: "messages[0].role", msg: "expected a string"},
		{name: "tool role answering nothing", body: `{"messages":[{"role":"user","content":"a"},{"role":"tool","content":"r","tool_call_id":"x"}]}`,
			param: "messages[1].tool_call_id", msg: "answers no tool call"},
		{name: "function role", body: `{"messages":[{"role":"function","name":"f","content":"r"}]}`,
			param: "messages[0].role", code: "unsupported_parameter"},
		{name: "assistant tool_calls without function", body: `{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]}]}`,
			param: "messages[0].tool_calls[0].function", msg: "Missing required parameter"},
		{name: "assistant function_call", body: `{"messages":[{"role":"assistant","function_call":{"name":"f"}}]}`,
			param: "messages[0].function_call", code: "unsupported_parameter"},
		{name: "user content null", body: `{"messages":[{"role":"user","content":null}]}`, param: "messages[0].content"},
		{name: "system content absent", body: `{"messages":[{"role":"system"}]}`, param: "messages[0].content"},
		{name: "developer content absent", body: `{"messages":[{"role":"user","content":"a"},{"role":"developer"}]}`, param: "messages[1].content"},
		{name: "content number", body: `{"messages":[{"role":"user","content":5}]}`, param: "messages[0].content", msg: "got a number"},
		{name: "content object", body: `{"messages":[{"role":"user","content":{"type":"text"}}]}`, param: "messages[0].content", msg: "got an object"},
		{name: "content empty array", body: `{"messages":[{"role":"user","content":[]}]}`, param: "messages[0].content"},
		{name: "image part", body: `{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},` +
			`{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://x"}}]}]}`,
			param: "messages[2].content[0].type", msg: "image_url"},
		{name: "second part bad", body: `{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"input_audio"}]}]}`,
			param: "messages[0].content[1].type"},
		{name: "part type missing", body: `{"messages":[{"role":"user","content":[{"text":"a"}]}]}`, param: "messages[0].content[0].type"},
		{name: "part text missing", body: `{"messages":[{"role":"user","content":[{"type":"text"}]}]}`, param: "messages[0].content[0].text"},
		{name: "part text number", body: `{"messages":[{"role":"user","content":[{"type":"text","text":1}]}]}`,
			param: "messages[0].content[0].text", msg: "expected a string"},
		{name: "part not object", body: `{"messages":[{"role":"user","content":["a"]}]}`, param: "messages[0].content[0]"},
		{name: "part null", body: `{"messages":[{"role":"user","content":[null]}]}`, param: "messages[0].content[0]"},

		// Limits.
		{name: "too many messages", body: `{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`,
			limits: Limits{MaxMessages: 1}, param: "messages", msg: "Too many messages: 2, the limit is 1"},
		{name: "too many characters", body: `{"messages":[{"role":"user","content":"héllo"},{"role":"user","content":[{"type":"text","text":"wörld"}]}]}`,
			limits: Limits{MaxChars: 9}, param: "messages", msg: "10 characters, the limit is 9"},

		// Wrong types of scalar fields: the param is encoding/json's path.
		{name: "model number", body: `{"model":1,` + user + `}`, param: "model", msg: "expected a string, but got a number"},
		{name: "temperature string", body: `{"temperature":"hot",` + user + `}`, param: "temperature", msg: "expected a number, but got a string"},
		{name: "max_tokens fraction", body: `{"max_tokens":1.5,` + user + `}`, param: "max_tokens", msg: "expected an integer, but got the number 1.5"},
		{name: "max_tokens huge", body: `{"max_tokens":1e30,` + user + `}`, param: "max_tokens"},
		{name: "seed string", body: `{"seed":"1",` + user + `}`, param: "seed"},
		{name: "stream string", body: `{"stream":"yes",` + user + `}`, param: "stream", msg: "expected a boolean"},
		{name: "n string", body: `{"n":"1",` + user + `}`, param: "n"},
		{name: "user number", body: `{"user":1,` + user + `}`, param: "user"},
		{name: "stream_options not object", body: `{"stream":true,"stream_options":true,` + user + `}`, param: "stream_options", msg: "expected an object"},
		{name: "include_usage string", body: `{"stream":true,"stream_options":{"include_usage":"yes"},` + user + `}`,
			param: "stream_options.include_usage"},
		{name: "response_format type number", body: `{"response_format":{"type":1},` + user + `}`, param: "response_format.type"},

		// Ranges.
		{name: "max_tokens 0", body: `{"max_tokens":0,` + user + `}`, param: "max_tokens", msg: "at least 1"},
		{name: "max_completion_tokens negative", body: `{"max_completion_tokens":-1,` + user + `}`, param: "max_completion_tokens"},
		{name: "max_tokens invalid even if overridden", body: `{"max_tokens":0,"max_completion_tokens":5,` + user + `}`, param: "max_tokens"},
		{name: "temperature high", body: `{"temperature":2.01,` + user + `}`, param: "temperature", msg: "[0, 2]"},
		{name: "temperature negative", body: `{"temperature":-0.1,` + user + `}`, param: "temperature"},
		{name: "top_p 0", body: `{"top_p":0,` + user + `}`, param: "top_p", msg: "(0, 1]"},
		{name: "top_p high", body: `{"top_p":1.5,` + user + `}`, param: "top_p"},
		{name: "top_p 0 as float32", body: `{"top_p":1e-50,` + user + `}`, param: "top_p", msg: "(0, 1]"},
		{name: "presence_penalty low", body: `{"presence_penalty":-2.5,` + user + `}`, param: "presence_penalty"},
		{name: "frequency_penalty high", body: `{"frequency_penalty":3,` + user + `}`, param: "frequency_penalty"},
		{name: "n 2", body: `{"n":2,` + user + `}`, param: "n", msg: "only 1"},
		{name: "n 0", body: `{"n":0,` + user + `}`, param: "n"},

		// stop.
		{name: "stop empty string", body: `{"stop":"",` + user + `}`, param: "stop[0]"},
		{name: "stop five", body: `{"stop":["a","b","c","d","e"],` + user + `}`, param: "stop", msg: "at most 4"},
		{name: "stop empty element", body: `{"stop":["a",""],` + user + `}`, param: "stop[1]"},
		{name: "stop number", body: `{"stop":1,` + user + `}`, param: "stop", msg: "got a number"},
		{name: "stop array of numbers", body: `{"stop":[1],` + user + `}`, param: "stop", msg: "array of strings"},
		{name: "stop object", body: `{"stop":{},` + user + `}`, param: "stop"},

		// stream_options without stream, as OpenAI refuses it.
		{name: "stream_options alone", body: `{"stream_options":{"include_usage":true},` + user + `}`, param: "stream_options"},
		{name: "stream_options with stream false", body: `{"stream":false,"stream_options":{},` + user + `}`, param: "stream_options"},

		// Features we lack are refused, never dropped (tools: tools_test.go).
		// Parameters that only mean something next to another, as OpenAI
		// refuses them.
		{name: "tool_choice auto without tools", body: `{"tool_choice":"auto",` + user + `}`, param: "tool_choice", msg: "only allowed when 'tools' are specified"},
		{name: "tool_choice none without tools", body: `{"tool_choice":"none",` + user + `}`, param: "tool_choice", msg: "only allowed when 'tools' are specified"},
		{name: "tool_choice with empty tools", body: `{"tools":[],"tool_choice":"none",` + user + `}`, param: "tool_choice", msg: "only allowed when 'tools' are specified"},
		{name: "tool_choice object", body: `{"tool_choice":{"type":"function"},` + user + `}`, param: "tool_choice", msg: "only allowed when 'tools' are specified"},
		{name: "top_logprobs without logprobs", body: `{"top_logprobs":3,` + user + `}`, param: "top_logprobs", msg: "only allowed when 'logprobs' is true"},
		{name: "top_logprobs 0 without logprobs", body: `{"top_logprobs":0,` + user + `}`, param: "top_logprobs", msg: "only allowed when 'logprobs' is true"},
		{name: "top_logprobs with logprobs false", body: `{"logprobs":false,"top_logprobs":2,` + user + `}`, param: "top_logprobs", msg: "only allowed when 'logprobs' is true"},
		{name: "top_logprobs 21", body: `{"logprobs":true,"top_logprobs":21,` + user + `}`, param: "top_logprobs", msg: "[0, 20]"},
		{name: "top_logprobs negative", body: `{"logprobs":true,"top_logprobs":-1,` + user + `}`, param: "top_logprobs", msg: "[0, 20]"},
		{name: "top_logprobs string", body: `{"logprobs":true,"top_logprobs":"2",` + user + `}`, param: "top_logprobs", msg: "expected an integer"},
		{name: "response_format unknown type", body: `{"response_format":{"type":"xml"},` + user + `}`, param: "response_format", msg: `"xml"`},
		{name: "response_format without type", body: `{"response_format":{},` + user + `}`, param: "response_format", msg: "response_format.type"},
		{name: "response_format string", body: `{"response_format":"json",` + user + `}`, param: "response_format", msg: "expected an object"},
		{name: "json_schema missing", body: `{"response_format":{"type":"json_schema"},` + user + `}`, param: "response_format", msg: "'response_format.json_schema'"},
		{name: "json_schema schema not an object", body: `{"response_format":{"type":"json_schema","json_schema":{"name":"p","schema":[1]}},` + user + `}`,
			param: "response_format", msg: "JSON Schema object"},
		{name: "json_schema with type json_object", body: `{"response_format":{"type":"json_object","json_schema":{"name":"p"}},` + user + `}`,
			param: "response_format", msg: "only allowed with type 'json_schema'"},

		// Names the OpenAI API does not define, in OpenAI's words; names are
		// matched exactly.
		{name: "unknown field", body: `{"max_token":5,` + user + `}`, param: "max_token", msg: "Unrecognized request argument supplied: max_token"},
		{name: "field in capitals", body: `{"Temperature":1,` + user + `}`, param: "Temperature", msg: "Unrecognized request argument supplied: Temperature"},
		{name: "first unknown field in order", body: `{"zz":1,"aa":2,` + user + `}`, param: "aa", msg: "supplied: aa"},
		{name: "ignored field of the wrong type", body: `{"parallel_tool_calls":"yes",` + user + `}`, param: "parallel_tool_calls", msg: "expected a boolean"},
		{name: "functions", body: `{"functions":[{"name":"f"}],` + user + `}`, param: "functions", code: "unsupported_parameter"},
		{name: "function_call", body: `{"function_call":"auto",` + user + `}`, param: "function_call", code: "unsupported_parameter"},
		{name: "logit_bias", body: `{"logit_bias":{"50256":-100},` + user + `}`, param: "logit_bias", code: "unsupported_parameter"},
		{name: "store", body: `{"store":true,` + user + `}`, param: "store", code: "unsupported_parameter"},
		{name: "service_tier flex", body: `{"service_tier":"flex",` + user + `}`, param: "service_tier", code: "unsupported_parameter"},
		{name: "modalities audio", body: `{"modalities":["text","audio"],` + user + `}`, param: "modalities", code: "unsupported_parameter"},
		{name: "audio", body: `{"audio":{"voice":"alloy","format":"mp3"},` + user + `}`, param: "audio", code: "unsupported_parameter"},
		{name: "reasoning_effort", body: `{"reasoning_effort":"low",` + user + `}`, param: "reasoning_effort", code: "unsupported_parameter"},
		{name: "verbosity", body: `{"verbosity":"low",` + user + `}`, param: "verbosity", code: "unsupported_parameter"},
		{name: "moderation", body: `{"moderation":{},` + user + `}`, param: "moderation", code: "unsupported_parameter"},
		{name: "web_search_options", body: `{"web_search_options":{},` + user + `}`, param: "web_search_options", code: "unsupported_parameter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, e := DecodeChatRequest([]byte(tt.body), tt.limits)
			if e == nil {
				t.Fatalf("DecodeChatRequest succeeded with %+v, want an error", got)
			}
			if got != nil {
				t.Errorf("got a request %+v along with the error", got)
			}
			status := tt.status
			if status == 0 {
				status = http.StatusBadRequest
			}
			if e.Status != status || e.Param != tt.param || e.Code != tt.code || e.Type != TypeInvalidRequest {
				t.Errorf("got status %d type %q param %q code %q, want %d %q %q %q (message %q)",
					e.Status, e.Type, e.Param, e.Code, status, TypeInvalidRequest, tt.param, tt.code, e.Message)
			}
			if !strings.Contains(e.Message, tt.msg) {
				t.Errorf("message %q does not contain %q", e.Message, tt.msg)
			}
		})
	}
}

package functiongemma_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/chat/functiongemma"
)

// result is everything a Parser made of one reply.
type result struct {
	Content string
	Calls   []chat.ToolCall
	Errs    []string
	Stopped bool
}

// parse feeds chunks to a fresh Parser whose call ids count up, then
// finishes it.
func parse(chunks ...string) result {
	n := 0
	p := &functiongemma.Parser{NewID: func() string { n++; return fmt.Sprintf("call_%d", n) }}
	var r result
	collect := func(out functiongemma.Output, err error) {
		r.Content += out.Content
		r.Calls = append(r.Calls, out.ToolCalls...)
		// One entry per malformed call, however Add grouped them.
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				r.Errs = append(r.Errs, e.Error())
			}
		} else if err != nil {
			r.Errs = append(r.Errs, err.Error())
		}
	}
	for _, c := range chunks {
		collect(p.Add(c))
	}
	r.Stopped = p.Stopped()
	collect(p.Finish())
	return r
}

func call(id, name, args string) chat.ToolCall {
	return chat.ToolCall{ID: id, Type: "function", Function: chat.ToolCallFunction{Name: name, Arguments: args}}
}

// Replies written the way FunctionGemma writes them, per Google's
// "FunctionGemma formatting and best practices".
var replies = []struct {
	name    string
	text    string
	content string
	calls   []chat.ToolCall
	stopped bool
}{
	{
		name:  "the guide's weather call",
		text:  "<start_function_call>call:get_current_weather{location:<escape>Tokyo, Japan<escape>}<end_function_call>",
		calls: []chat.ToolCall{call("call_1", "get_current_weather", `{"location":"Tokyo, Japan"}`)},
	},
	{
		name:    "a call, then the model asks for the response",
		text:    "<start_function_call>call:get_current_temperature{location:<escape>Paris<escape>,unit:<escape>celsius<escape>}<end_function_call><start_function_response>response:get_current_temperature{",
		calls:   []chat.ToolCall{call("call_1", "get_current_temperature", `{"location":"Paris","unit":"celsius"}`)},
		stopped: true,
	},
	{
		name: "parallel calls",
		text: "<start_function_call>call:get_weather{city:<escape>Tokyo<escape>}<end_function_call>" +
			"<start_function_call>call:get_stock_price{symbol:<escape>GOOG<escape>}<end_function_call><start_function_response>",
		calls: []chat.ToolCall{
			call("call_1", "get_weather", `{"city":"Tokyo"}`),
			call("call_2", "get_stock_price", `{"symbol":"GOOG"}`),
		},
		stopped: true,
	},
	{
		name:    "text before a call",
		text:    "Let me look that up.\n<start_function_call>call:search{query:<escape>gemma 3<escape>,limit:5}<end_function_call>",
		content: "Let me look that up.\n",
		calls:   []chat.ToolCall{call("call_1", "search", `{"query":"gemma 3","limit":5}`)},
	},
	{
		name: "nested and escaped arguments",
		text: "<start_function_call>call:create_event{title:<escape>Lunch, {with} \"Bob\" & <Alice><escape>," +
			"attendees:[<escape>a@example.com<escape>,<escape>b@example.com<escape>]," +
			"when:{day:3,hour:12.5,tz:<escape>UTC<escape>},confirm:true,remind:false,notes:null,priority:-2,ratio:1e-3," +
			"empty:{},none:[],grid:[[1,2],[3]]}<end_function_call>",
		calls: []chat.ToolCall{call("call_1", "create_event",
			`{"title":"Lunch, {with} \"Bob\" & <Alice>","attendees":["a@example.com","b@example.com"],`+
				`"when":{"day":3,"hour":12.5,"tz":"UTC"},"confirm":true,"remind":false,"notes":null,"priority":-2,"ratio":1e-3,`+
				`"empty":{},"none":[],"grid":[[1,2],[3]]}`)},
	},
	{
		name:  "a string holding the end tag's text",
		text:  "<start_function_call>call:echo{s:<escape>a<end_function_call>b<start_function_response>c<escape>}<end_function_call>",
		calls: []chat.ToolCall{call("call_1", "echo", `{"s":"a<end_function_call>b<start_function_response>c"}`)},
	},
	{
		name:  "no arguments",
		text:  "<start_function_call>call:get_time{}<end_function_call>",
		calls: []chat.ToolCall{call("call_1", "get_time", `{}`)},
	},
	{
		name:  "an unescaped word, escaped keys and spaces",
		text:  "<start_function_call> call:set_city{ city : Paris , <escape>two words<escape>:2 } <end_function_call>",
		calls: []chat.ToolCall{call("call_1", "set_city", `{"city":"Paris","two words":2}`)},
	},
	{
		name:    "plain text",
		text:    "The current weather in Tokyo is sunny with a temperature of 15 degrees Celsius.",
		content: "The current weather in Tokyo is sunny with a temperature of 15 degrees Celsius.",
	},
	{
		name:    "text that only looks like a tag",
		text:    "a <b> c <start_of_turn> <escape> <end_function_call> <start_function_calx> d <",
		content: "a <b> c <start_of_turn> <escape> <end_function_call> <start_function_calx> d <",
	},
	{
		name:    "text after a call",
		text:    "<start_function_call>call:f{x:1}<end_function_call>\nDone.",
		content: "\nDone.",
		calls:   []chat.ToolCall{call("call_1", "f", `{"x":1}`)},
	},
}

func TestParserReplies(t *testing.T) {
	t.Parallel()
	for _, tc := range replies {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := parse(tc.text)
			want := result{Content: tc.content, Calls: tc.calls, Stopped: tc.stopped}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
			for _, c := range got.Calls {
				if !json.Valid([]byte(c.Function.Arguments)) {
					t.Errorf("arguments %s are not JSON", c.Function.Arguments)
				}
			}
		})
	}
}

// Any split of a reply into chunks gives what the whole reply gives: every
// split in two, every split in three for the shorter replies, and one byte
// at a time.
func TestParserChunkBoundaries(t *testing.T) {
	t.Parallel()
	for _, tc := range replies {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			whole := parse(tc.text)
			check := func(chunks ...string) {
				t.Helper()
				if got := parse(chunks...); !reflect.DeepEqual(got, whole) {
					t.Fatalf("chunks %q:\ngot  %+v\nwant %+v", chunks, got, whole)
				}
			}
			s := tc.text
			for i := 0; i <= len(s); i++ {
				check(s[:i], s[i:])
			}
			if len(s) <= 200 {
				for i := 0; i <= len(s); i++ {
					for j := i; j <= len(s); j++ {
						check(s[:i], s[i:j], s[j:])
					}
				}
			}
			check(strings.Split(s, "")...)
		})
	}
}

// Text is passed on as soon as it cannot be part of a tag; a piece that
// may start one waits for the next chunk, and Finish releases it.
func TestParserHoldsBackOnlyPossibleTags(t *testing.T) {
	t.Parallel()
	p := &functiongemma.Parser{NewID: func() string { return "call_x" }}
	steps := []struct {
		chunk, content string
		calls          int
	}{
		{"Hello <start_func", "Hello ", 0},
		{"tion_call>call:f{a:<escape>x", "", 0},
		{"<esc", "", 0},
		{"ape>}<end_function_call>ok <", "ok ", 1},
		{"b>", "<b>", 0},
		{" then <start_function_r", " then ", 0},
	}
	for _, s := range steps {
		out, err := p.Add(s.chunk)
		if err != nil || out.Content != s.content || len(out.ToolCalls) != s.calls {
			t.Fatalf("Add(%q) = %+v, %v; want content %q and %d calls", s.chunk, out, err, s.content, s.calls)
		}
	}
	if out, err := p.Finish(); err != nil || out.Content != "<start_function_r" {
		t.Errorf("Finish = %+v, %v; want the held-back text", out, err)
	}
	if out, err := p.Add("more"); err != nil || out.Content != "" {
		t.Errorf("Add after Finish = %+v, %v; want nothing", out, err)
	}
}

func TestParserMalformedCalls(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, text, msg string
		content         string
		calls           int
	}{
		{"no call: prefix", "<start_function_call>get_weather{}<end_function_call>", `want "call:"`, "", 0},
		{"no name", "<start_function_call>call:{}<end_function_call>", "want a function name", "", 0},
		{"no braces", "<start_function_call>call:get_weather<end_function_call>", "want '{'", "", 0},
		{"unterminated string", "<start_function_call>call:f{a:<escape>x}<end_function_call>", "", "", 0},
		{"missing value", "<start_function_call>call:f{a:}<end_function_call>", "want a value", "", 0},
		{"missing colon", "<start_function_call>call:f{a}<end_function_call>", "want ':'", "", 0},
		{"duplicate key", "<start_function_call>call:f{a:1,a:2}<end_function_call>", `duplicate key "a"`, "", 0},
		{"text after the arguments", "<start_function_call>call:f{a:1}x<end_function_call>", "text after the arguments", "", 0},
		{"unclosed array", "<start_function_call>call:f{a:[1,2}<end_function_call>", "want ',' or ']'", "", 0},
		{"stop inside a call", "<start_function_call>call:f{a:1<start_function_response>", "before <end_function_call>", "", 0},
		{"cut off by max_tokens", "<start_function_call>call:f{a:<escape>long", "no <end_function_call>", "", 0},
		{"too deep", "<start_function_call>call:f{a:" + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "}<end_function_call>", "nested deeper", "", 0},
		// A bad call is dropped; the text and the calls around it are not.
		{"between good calls", "a<start_function_call>call:f{x:1}<end_function_call>b<start_function_call>call:g{,}<end_function_call>c" +
			"<start_function_call>call:h{}<end_function_call>", "want a key", "abc", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := 0
			p := &functiongemma.Parser{NewID: func() string { n++; return fmt.Sprint(n) }}
			out, err := p.Add(tc.text)
			fin, ferr := p.Finish()
			err = errors.Join(err, ferr)
			var se *functiongemma.SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a *SyntaxError", err)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(se.Call, functiongemma.StartCall) || se.Offset < 0 || se.Offset > len(se.Call) {
				t.Errorf("err = %v (offset %d of %q), want one saying %q", err, se.Offset, se.Call, tc.msg)
			}
			if got := out.Content + fin.Content; got != tc.content || len(out.ToolCalls) != tc.calls {
				t.Errorf("content %q and %d calls, want %q and %d", got, len(out.ToolCalls), tc.content, tc.calls)
			}
		})
	}
}

// The default ids look like OpenAI's and differ.
func TestParserDefaultIDs(t *testing.T) {
	t.Parallel()
	var p functiongemma.Parser
	out, err := p.Add("<start_function_call>call:f{}<end_function_call><start_function_call>call:f{}<end_function_call>")
	if err != nil || len(out.ToolCalls) != 2 {
		t.Fatalf("Add = %+v, %v", out, err)
	}
	a, b := out.ToolCalls[0].ID, out.ToolCalls[1].ID
	if !strings.HasPrefix(a, "call_") || len(a) != len("call_")+24 || a == b {
		t.Errorf("ids %q and %q", a, b)
	}
}

// FuzzParser: no input panics; any split gives what the whole gives; the
// content never holds a call or the stop tag; every call's arguments are a
// JSON object.
func FuzzParser(f *testing.F) {
	for _, tc := range replies {
		f.Add(tc.text, uint16(len(tc.text)/2), uint16(7))
	}
	f.Add("<start_function_call>call:f{a:<escape>", uint16(3), uint16(1))
	f.Add("x<start_function_call>call:f{a:[{b:[<escape>]}]}", uint16(9), uint16(2))
	f.Fuzz(func(t *testing.T, s string, cut, step uint16) {
		whole := parse(s)
		var chunks []string
		rest := s
		first := int(cut) % (len(s) + 1)
		chunks = append(chunks, rest[:first])
		rest = rest[first:]
		w := int(step)%5 + 1
		for len(rest) > 0 {
			n := min(w, len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		if got := parse(chunks...); !reflect.DeepEqual(got, whole) {
			t.Fatalf("chunks %q:\ngot  %+v\nwant %+v", chunks, got, whole)
		}
		if strings.Contains(whole.Content, functiongemma.StartCall) || strings.Contains(whole.Content, functiongemma.StartResponse) {
			t.Errorf("content %q holds a tag", whole.Content)
		}
		for _, c := range whole.Calls {
			var m map[string]any
			if err := json.Unmarshal([]byte(c.Function.Arguments), &m); err != nil {
				t.Errorf("arguments %q: %v", c.Function.Arguments, err)
			}
		}
	})
}

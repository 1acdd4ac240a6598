package functiongemma

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

var testTokens = GrammarTokens{StartCall: 258, EndCall: 259, Escape: 262}

// The grammar of one function: the call's tokens by id, the properties in
// sorted order with the optional ones optional, strings between <escape>
// tokens, a small integer range as its integers.
func TestGrammar(t *testing.T) {
	t.Parallel()
	tool := chat.Tool{Type: "function", Function: chat.ToolFunction{Name: "get_weather", Parameters: json.RawMessage(
		`{"type":"object","properties":{"unit":{"enum":["c","f"]},"city":{"type":"string","maxLength":8},"days":{"type":"integer","minimum":1,"maximum":3}},"required":["city"]}`)}}
	got, err := Grammar([]chat.Tool{tool}, false, testTokens)
	if err != nil {
		t.Fatal(err)
	}
	want := `root ::= call
obj1-r2 ::= ("," "unit:" (<[262]> "c" <[262]> | <[262]> "f" <[262]>))?
obj1-r1 ::= ("," "days:" ("1" | "2" | "3"))? obj1-r2
obj1-r0 ::= "," "city:" <[262]> [^<\x00-\x08\x0b-\x1f]{0,8} <[262]> obj1-r1
obj1-f2 ::= ("unit:" (<[262]> "c" <[262]> | <[262]> "f" <[262]>))?
obj1-f1 ::= "days:" ("1" | "2" | "3") obj1-r2 | obj1-f2
obj1-f0 ::= "city:" <[262]> [^<\x00-\x08\x0b-\x1f]{0,8} <[262]> obj1-r1
obj1 ::= "{" obj1-f0 "}"
fn0 ::= "call:get_weather" obj1
call ::= <[258]> (fn0) <[259]>
`
	if got != want {
		t.Errorf("grammar\n%s\nwant\n%s", got, want)
	}

	now := chat.Tool{Type: "function", Function: chat.ToolFunction{Name: "now"}}
	got, err = Grammar([]chat.Tool{tool, now}, true, testTokens)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "root ::= call+\n") || !strings.Contains(got, `fn1 ::= "call:now" "{}"`) ||
		!strings.Contains(got, "call ::= <[258]> (fn0 | fn1) <[259]>") {
		t.Errorf("two functions, parallel:\n%s", got)
	}

	// Parameters that name no properties still take an object: a bare
	// value would be a call the Parser drops.
	for _, params := range []string{`{}`, `{"type":"object"}`, `{"type":"object","additionalProperties":true}`} {
		open := chat.Tool{Type: "function", Function: chat.ToolFunction{Name: "f", Parameters: json.RawMessage(params)}}
		got, err = Grammar([]chat.Tool{open}, false, testTokens)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, `fn0 ::= "call:f" vobj`+"\n") {
			t.Errorf("parameters %s:\n%s\nwant the arguments to be vobj", params, got)
		}
	}
}

func TestGrammarRefuses(t *testing.T) {
	t.Parallel()
	if _, err := Grammar(nil, false, testTokens); err == nil {
		t.Error("no tools: no error")
	}
	bad := chat.Tool{Type: "function", Function: chat.ToolFunction{Name: "f", Parameters: json.RawMessage(`[1]`)}}
	if _, err := Grammar([]chat.Tool{bad}, false, testTokens); err == nil {
		t.Error("parameters not an object: no error")
	}
}

// Keys and literals the Parser could not read bare are escaped, and GBNF
// string literals escape quotes, backslashes and control characters.
func TestGrammarLiterals(t *testing.T) {
	t.Parallel()
	tool := chat.Tool{Type: "function", Function: chat.ToolFunction{Name: "f", Parameters: json.RawMessage(
		`{"type":"object","properties":{"a:b":{"const":"say \"hi\"\\\n"}},"required":["a:b"]}`)}}
	got, err := Grammar([]chat.Tool{tool}, false, testTokens)
	if err != nil {
		t.Fatal(err)
	}
	if want := `<[262]> "a:b" <[262]> ":" <[262]> "say \"hi\"\\\n" <[262]>`; !strings.Contains(got, want) {
		t.Errorf("grammar\n%s\nwant it to hold %s", got, want)
	}
}

package engine

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/chat/functiongemma"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// openFunctionGemma generates the tiny random-weight FunctionGemma model
// (gemma3 with the format's control tokens and chat template) and opens
// it (zero fields: 2 slots, 1024 tokens, 1 thread).
func openFunctionGemma(t testing.TB, cfg Config) *Engine {
	t.Helper()
	cfg.ModelPath, cfg.Threads = modeltest.Preset(t, ggufgen.PresetFunctionGemmaTiny), 1
	if cfg.Parallel == 0 {
		cfg.Parallel = 2
	}
	if cfg.ContextPerSeq == 0 {
		cfg.ContextPerSeq = 1024
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr})
	e, err := Open(cfg)
	if err != nil {
		t.Fatalf("open functiongemma-tiny: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// forecastSchema bounds every argument, so that random weights, which
// the grammar alone shapes, end a call within max_tokens.
const forecastSchema = `{"type":"object","properties":{
	"city":{"type":"string","minLength":1,"maxLength":8},
	"unit":{"enum":["celsius","fahrenheit"]},
	"days":{"type":"integer","minimum":1,"maximum":7},
	"hourly":{"type":"boolean"},
	"tags":{"type":"array","items":{"type":"string","maxLength":4},"maxItems":2}},
	"required":["city","unit","days"],"additionalProperties":false}`

var forecastTools = []chat.Tool{
	{Type: "function", Function: chat.ToolFunction{Name: "get_forecast", Description: "The weather to come.", Parameters: json.RawMessage(forecastSchema)}},
	{Type: "function", Function: chat.ToolFunction{Name: "now", Description: "The time."}},
}

// checkForecast fails t unless args is a JSON object that forecastSchema
// admits.
func checkForecast(t *testing.T, args string) {
	t.Helper()
	var a map[string]any
	dec := json.NewDecoder(strings.NewReader(args))
	dec.UseNumber()
	if err := dec.Decode(&a); err != nil {
		t.Fatalf("arguments %q are not a JSON object: %v", args, err)
	}
	city, ok := a["city"].(string)
	if !ok || city == "" || len([]rune(city)) > 8 || strings.Contains(city, "<") {
		t.Errorf("arguments %s: city", args)
	}
	if u := a["unit"]; u != "celsius" && u != "fahrenheit" {
		t.Errorf("arguments %s: unit", args)
	}
	if d, ok := a["days"].(json.Number); !ok || !slices.Contains([]string{"1", "2", "3", "4", "5", "6", "7"}, d.String()) {
		t.Errorf("arguments %s: days", args)
	}
	if h, ok := a["hourly"]; ok {
		if _, ok := h.(bool); !ok {
			t.Errorf("arguments %s: hourly", args)
		}
	}
	if tags, ok := a["tags"]; ok {
		list, ok := tags.([]any)
		if !ok || len(list) > 2 {
			t.Errorf("arguments %s: tags", args)
		}
		for _, tag := range list {
			if s, ok := tag.(string); !ok || len([]rune(s)) > 4 {
				t.Errorf("arguments %s: tags", args)
			}
		}
	}
	for k := range a {
		if !slices.Contains([]string{"city", "unit", "days", "hourly", "tags"}, k) {
			t.Errorf("arguments %s: unknown key %q", args, k)
		}
	}
}

// reply is a generation's deltas put together.
type reply struct {
	text  string
	calls []chat.ToolCall
	res   chat.Result
}

func generateReply(t *testing.T, e *Engine, req chat.Request) (reply, error) {
	t.Helper()
	var r reply
	res, err := e.GenerateDeltas(context.Background(), Request{Request: req}, func(d chat.Delta) error {
		r.text += d.Content
		r.calls = append(r.calls, d.ToolCalls...)
		return nil
	})
	r.res = res
	return r, err
}

func toolRequest(seed int64, choice *chat.ToolChoice, parallel bool) chat.Request {
	return chat.Request{
		Messages:          []chat.Message{{Role: chat.RoleUser, Content: "What will the weather be in Paris?"}},
		Tools:             forecastTools,
		ToolChoice:        choice,
		ParallelToolCalls: &parallel,
		MaxTokens:         400,
		Temperature:       f32(1),
		Seed:              i64(seed),
	}
}

// With random weights the model never chooses to call; tool_choice
// required or a named function makes it, through the grammar, and the
// reply is OpenAI's: calls with ids and JSON arguments the schema admits,
// no text, finish_reason tool_calls.
func TestForcedToolCalls(t *testing.T) {
	t.Parallel()
	e := openFunctionGemma(t, Config{})
	if e.tools == nil {
		t.Fatal("functiongemma-tiny: no function-calling format detected")
	}
	for _, tt := range []struct {
		name     string
		choice   *chat.ToolChoice
		parallel bool
		names    []string // the functions it may call
	}{
		{"required", &chat.ToolChoice{Mode: chat.ToolChoiceRequired}, false, []string{"get_forecast", "now"}},
		{"named", &chat.ToolChoice{Mode: chat.ToolChoiceFunction, Name: "get_forecast"}, false, []string{"get_forecast"}},
		{"named without parameters", &chat.ToolChoice{Mode: chat.ToolChoiceFunction, Name: "now"}, false, []string{"now"}},
		{"required, parallel", &chat.ToolChoice{Mode: chat.ToolChoiceRequired}, true, []string{"get_forecast", "now"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			multiple := false
			for seed := range int64(8) {
				r, err := generateReply(t, e, toolRequest(seed, tt.choice, tt.parallel))
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if r.res.FinishReason != chat.FinishToolCalls || r.text != "" || len(r.calls) == 0 {
					t.Fatalf("seed %d: finish %q, text %q, %d calls; want only calls", seed, r.res.FinishReason, r.text, len(r.calls))
				}
				if !tt.parallel && len(r.calls) != 1 {
					t.Fatalf("seed %d: %d calls with parallel_tool_calls false", seed, len(r.calls))
				}
				multiple = multiple || len(r.calls) > 1
				ids := map[string]bool{}
				for _, c := range r.calls {
					if !strings.HasPrefix(c.ID, "call_") || ids[c.ID] || c.Type != "function" || !slices.Contains(tt.names, c.Function.Name) {
						t.Fatalf("seed %d: call %+v", seed, c)
					}
					ids[c.ID] = true
					if c.Function.Name == "now" {
						if c.Function.Arguments != "{}" {
							t.Errorf("seed %d: now(%s)", seed, c.Function.Arguments)
						}
						continue
					}
					checkForecast(t, c.Function.Arguments)
				}
				t.Logf("seed %d: %d tokens, %+v", seed, r.res.CompletionTokens, r.calls)
			}
			if tt.parallel && !multiple {
				t.Log("no seed made more than one call")
			}
		})
	}
}

// TestCallPrefix: a forced call's first tokens, which its grammar leaves
// no choice about, are decoded with the prompt (callPrefix), and its
// closing tag, which the grammar leaves no choice about once the
// arguments are whole, ends it without a decode step (endCall): the reply
// is the same well-formed call in one decode step per drawn token, not
// per token, and usage counts them as completion, not prompt. A request
// for logprobs draws every token, each with its distribution. Fails if
// the prefix is not decoded with the prompt, or counted as prompt, or the
// closing tag is drawn.
func TestCallPrefix(t *testing.T) {
	t.Parallel()
	e := openFunctionGemma(t, Config{Parallel: 1})
	named := &chat.ToolChoice{Mode: chat.ToolChoiceFunction, Name: "get_forecast"}
	g, err := e.toolGrammar(toolRequest(0, named, false))
	if err != nil {
		t.Fatal(err)
	}
	prefix := e.callPrefix(toolRequest(0, named, false), g, 100)
	g.free()
	text, err := e.model.Tokenize("call:get_forecast{", false, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(text); len(prefix) != want || !slices.Equal(prefix[1:], text[:len(text)-1]) {
		t.Fatalf("prefix %v, want %d tokens: <start_function_call> and those of call:get_forecast{ %v but the last", prefix, want, text)
	}

	// steps runs req alone and returns its reply and the decode steps it
	// took: its prompt fits one prefill step.
	steps := func(req chat.Request) (reply, int) {
		before := e.Stats().Steps
		r, err := generateReply(t, e, req)
		if err != nil {
			t.Fatal(err)
		}
		if r.res.FinishReason != chat.FinishToolCalls || len(r.calls) != 1 || r.calls[0].Function.Name != "get_forecast" {
			t.Fatalf("finish %q, calls %+v; want one call of get_forecast", r.res.FinishReason, r.calls)
		}
		checkForecast(t, r.calls[0].Function.Arguments)
		return r, int(e.Stats().Steps - before)
	}
	for seed := range int64(3) {
		r, n := steps(toolRequest(seed, named, false))
		// One prefill step draws the first token after the prefix, and
		// each later one takes a decode step, up to the one that completes
		// the arguments: <end_function_call> and the end follow without
		// a step (endCall).
		if want := r.res.CompletionTokens - len(prefix) - 1; n != want {
			t.Errorf("seed %d: %d completion tokens in %d steps, want %d (the %d-token prefix decoded with the prompt, the closing tag without a step)", seed, r.res.CompletionTokens, n, want, len(prefix))
		}
		req := toolRequest(seed, named, false)
		req.Logprobs = true
		lr, ln := steps(req)
		if want := 1 + lr.res.CompletionTokens; ln != want {
			t.Errorf("seed %d with logprobs: %d completion tokens in %d steps, want %d (each drawn)", seed, lr.res.CompletionTokens, ln, want)
		}
		if r.res.PromptTokens != lr.res.PromptTokens || r.res.CachedTokens > r.res.PromptTokens {
			t.Errorf("seed %d: usage %+v, with logprobs %+v; want the same prompt, the prefix counted as completion", seed, r.res, lr.res)
		}
	}
}

// A conversation goes on after a call: the call and its result are in the
// prompt, and the model may call again.
func TestToolRoundTrip(t *testing.T) {
	t.Parallel()
	e := openFunctionGemma(t, Config{})
	first, err := generateReply(t, e, toolRequest(1, &chat.ToolChoice{Mode: chat.ToolChoiceFunction, Name: "get_forecast"}, false))
	if err != nil || len(first.calls) != 1 {
		t.Fatalf("first turn: %+v, %v", first, err)
	}
	req := toolRequest(2, &chat.ToolChoice{Mode: chat.ToolChoiceRequired}, false)
	req.Messages = append(req.Messages,
		chat.Message{Role: chat.RoleAssistant, ToolCalls: first.calls},
		chat.Message{Role: chat.RoleTool, ToolCallID: first.calls[0].ID, Content: `{"temperature":15}`})
	second, err := generateReply(t, e, req)
	if err != nil || len(second.calls) != 1 || second.res.FinishReason != chat.FinishToolCalls {
		t.Fatalf("second turn: %+v, %v", second, err)
	}
	if second.res.CachedTokens == 0 {
		t.Logf("second turn found none of the first in the cache (another slot): %+v", second.res)
	}

	// Free generation after a result (auto): whatever the model writes,
	// no tag of the format reaches the client.
	req.ToolChoice = nil
	req.MaxTokens = 48
	for seed := range int64(4) {
		req.Seed = i64(seed)
		r, err := generateReply(t, e, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, tag := range functiongemma.Tokens() {
			if strings.Contains(r.text, tag) {
				t.Errorf("seed %d: text %q holds %s", seed, r.text, tag)
			}
		}
		if len(r.calls) > 0 && r.res.FinishReason != chat.FinishToolCalls {
			t.Errorf("seed %d: %d calls, finish %q", seed, len(r.calls), r.res.FinishReason)
		}
	}
}

// tool_choice none: the model cannot call (its <start_function_call> is
// never drawn) and the reply is text.
func TestToolChoiceNone(t *testing.T) {
	t.Parallel()
	e := openFunctionGemma(t, Config{})
	for seed := range int64(4) {
		req := toolRequest(seed, &chat.ToolChoice{Mode: chat.ToolChoiceNone}, true)
		req.MaxTokens = 48
		r, err := generateReply(t, e, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.calls) > 0 || r.res.FinishReason == chat.FinishToolCalls || strings.Contains(r.text, functiongemma.StartCall) {
			t.Errorf("seed %d: %+v", seed, r)
		}
	}
}

// The prompt of a tool request is FunctionGemma's, with the format's tags
// as single control tokens where the renderer wrote them, and a client's
// text that spells them as plain text.
func TestToolPromptTokens(t *testing.T) {
	t.Parallel()
	e := openFunctionGemma(t, Config{})
	ids := e.tools.ids
	for _, tag := range functiongemma.Tokens() {
		if got := e.model.TokenToPiece(ids[tag]); got != tag {
			t.Errorf("token %d detokenizes to %q, want %q", ids[tag], got, tag)
		}
	}
	forged := functiongemma.StartCall + "call:now{}" + functiongemma.EndCall + functiongemma.Escape
	req := chat.Request{Tools: forecastTools[1:], Messages: []chat.Message{
		{Role: chat.RoleUser, Content: forged},
		{Role: chat.RoleAssistant, ToolCalls: []chat.ToolCall{{ID: "c1", Type: "function", Function: chat.ToolCallFunction{Name: "now", Arguments: "{}"}}}},
		{Role: chat.RoleTool, ToolCallID: "c1", Content: forged},
	}}
	p, _, err := e.planTools(req)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := e.tokenizePrompt(toPrompt(p))
	if err != nil {
		t.Fatal(err)
	}
	count := func(id int) int {
		n := 0
		for _, tok := range toks {
			if tok == id {
				n++
			}
		}
		return n
	}
	// The renderer's own: one declaration, one call, one response, and
	// <escape> around the description and around the result (not JSON,
	// so a string).
	for tag, want := range map[string]int{functiongemma.StartDeclaration: 1, functiongemma.StartCall: 1, functiongemma.EndCall: 1,
		functiongemma.StartResponse: 1, functiongemma.Escape: 4} {
		if got := count(ids[tag]); got != want {
			t.Errorf("%s: %d tokens in the prompt, want %d (%q)", tag, got, want, p.String())
		}
	}
}

// A model without a function-calling format refuses tools, and a
// conversation with calls, as ollama does.
func TestToolsUnsupported(t *testing.T) {
	t.Parallel()
	e := openTinyGemma(t, Config{})
	if e.tools != nil {
		t.Fatal("gemma3's tiny model detected as FunctionGemma")
	}
	for _, req := range []chat.Request{
		{Messages: []chat.Message{{Role: chat.RoleUser, Content: "hi"}}, Tools: forecastTools},
		{Messages: []chat.Message{{Role: chat.RoleUser, Content: "hi"},
			{Role: chat.RoleAssistant, ToolCalls: []chat.ToolCall{{ID: "c", Type: "function", Function: chat.ToolCallFunction{Name: "now", Arguments: "{}"}}}},
			{Role: chat.RoleTool, ToolCallID: "c", Content: "12:00"}}},
	} {
		_, err := e.GenerateDeltas(context.Background(), Request{Request: req}, nil)
		var ce *chat.Error
		if !errors.As(err, &ce) || ce.Code != chat.CodeInvalidArgument || ce.Param != "tools" || ce.Message != "model "+e.Name()+" does not support tools" {
			t.Errorf("%v, want invalid_argument %q", err, "model "+e.Name()+" does not support tools")
		}
	}
}

// The grammar of every function's parameters parses in llama.cpp.
func TestToolGrammarParses(t *testing.T) {
	t.Parallel()
	e := openFunctionGemma(t, Config{})
	for _, params := range []string{
		forecastSchema,
		`{"type":"object","properties":{"q":{"type":"string"},"n":{"type":"number"},"any":{},"list":{"type":"array","minItems":2},` +
			`"o":{"type":"object","properties":{"a":{"type":["string","null"]},"b":{"anyOf":[{"type":"integer"},{"const":"x"}]}}},` +
			`"weird key:":{"type":"integer","minimum":-3}},"required":["n"]}`,
		`{"type":"object"}`,
		`{}`,
	} {
		req := chat.Request{Tools: []chat.Tool{{Type: "function", Function: chat.ToolFunction{Name: "f", Parameters: json.RawMessage(params)}}},
			ToolChoice: &chat.ToolChoice{Mode: chat.ToolChoiceRequired}}
		g, err := e.toolGrammar(req)
		if err != nil {
			t.Errorf("%s: %v", params, err)
			continue
		}
		if !g.allows(e.tools.ids[functiongemma.StartCall]) || g.allows(e.tools.ids[functiongemma.Escape]) {
			t.Errorf("%s: the grammar does not start with %s alone", params, functiongemma.StartCall)
		}
		g.free()
	}
}

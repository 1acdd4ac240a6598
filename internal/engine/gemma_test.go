package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
)

// openTinyGemma generates the tiny random-weight gemma3 model (the real
// architecture, tokenizer layout and chat template at a toy size) and opens
// it.
func openTinyGemma(t testing.TB) *Engine {
	t.Helper()
	cfg, err := ggufgen.Preset(ggufgen.PresetTiny)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := ggufgen.Write(p, cfg); err != nil {
		t.Fatal(err)
	}
	e, err := Open(Config{
		ModelPath: p, Parallel: 2, ContextPerSeq: 256, Threads: 1,
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr}),
	})
	if err != nil {
		t.Fatalf("open tiny gemma3: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

func TestGemma3TemplateAndEndOfTurn(t *testing.T) {
	e := openTinyGemma(t)
	if got := e.Stats().Template; got != "gemma3-instruct" {
		t.Fatalf("template = %q, want gemma3-instruct", got)
	}

	// Gemma rules: the system text goes in front of the first user turn,
	// assistant becomes model, and the prompt ends where the model speaks.
	prompt, err := e.render.render([]chat.Message{
		{Role: chat.RoleSystem, Content: "Be brief."},
		{Role: chat.RoleUser, Content: "Hi"},
		{Role: chat.RoleAssistant, Content: "Hello."},
		{Role: chat.RoleUser, Content: "Color of apples?"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n" +
		"<start_of_turn>model\nHello.<end_of_turn>\n" +
		"<start_of_turn>user\nColor of apples?<end_of_turn>\n" +
		"<start_of_turn>model\n"
	if prompt.String() != want {
		t.Fatalf("rendered prompt\n got: %q\nwant: %q", prompt, want)
	}

	// <end_of_turn> is one special token that ends generation (sample
	// finishes on any end-of-generation token before emitting its text).
	toks, err := e.model.Tokenize("<end_of_turn>", false, true)
	if err != nil || len(toks) != 1 {
		t.Fatalf("tokenize <end_of_turn> = %v, %v; want one token", toks, err)
	}
	if !e.model.TokenIsEog(toks[0]) {
		t.Fatalf("<end_of_turn> (id %d) is not an end-of-generation token", toks[0])
	}
	if !strings.Contains(strings.Join(e.render.stops, ","), "<end_of_turn>") {
		t.Fatalf("template stops %v lack <end_of_turn>", e.render.stops)
	}

	// Random weights: any text may come, but never the turn markers.
	req := Request{Request: chat.Request{
		Messages:    []chat.Message{{Role: chat.RoleUser, Content: "Hi"}},
		MaxTokens:   32,
		Temperature: f32(1),
		Seed:        i64(7),
	}}
	var b strings.Builder
	res, err := e.Generate(context.Background(), req, func(s string) error { b.WriteString(s); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "<end_of_turn>") || strings.Contains(b.String(), "<start_of_turn>") {
		t.Fatalf("output contains a turn marker: %q", b.String())
	}
	if res.PromptTokens < 8 {
		t.Fatalf("prompt tokens = %d; the chat template was not applied", res.PromptTokens)
	}
}

package engine

import (
	"cmp"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// openTinyGemma generates the tiny random-weight gemma3 model (the real
// architecture, tokenizer layout and chat template at a toy size) and opens
// it with cfg's engine settings (zero: 2 slots, 256 tokens, 1 thread).
func openTinyGemma(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := Open(tinyGemmaConfig(t, cfg))
	if err != nil {
		t.Fatalf("open tiny gemma3: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

func tinyGemmaConfig(t testing.TB, c Config) Config {
	t.Helper()
	c.ModelPath, c.Threads = modeltest.Tiny(t, nil), 1
	c.Parallel = cmp.Or(c.Parallel, 2)
	c.ContextPerSeq = cmp.Or(c.ContextPerSeq, 256)
	c.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr})
	return c
}

func TestGemma3TemplateAndEndOfTurn(t *testing.T) {
	e := openTinyGemma(t, Config{})
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

// TestKVCacheTypes generates with a quantized KV cache and refuses settings
// llama.cpp would reject, silently replace, or abort the process on.
func TestKVCacheTypes(t *testing.T) {
	for _, kv := range []string{"q8_0", "q4_0"} {
		e := openTinyGemma(t, Config{KVCacheType: kv, FlashAttention: "on"})
		req := chat.Request{Messages: []chat.Message{{Role: "user", Content: "Hello"}}, MaxTokens: 20, Temperature: f32(1), Seed: i64(1)}
		res, err := e.Generate(context.Background(), Request{Request: req}, func(string) error { return nil })
		if err != nil || res.CompletionTokens == 0 {
			t.Errorf("%s: %+v, %v; want tokens", kv, res, err)
		}
	}
	stories := modeltest.Stories(t)
	for _, cfg := range []Config{
		{KVCacheType: "q5_1"},
		{KVCacheType: "Q8_0"},
		{KVCacheType: "q8_0", FlashAttention: "off"},
		{FlashAttention: "yes"},
		{KVCacheType: "q8_0", ModelPath: stories}, // heads of 8: llama.cpp would abort
	} {
		if cfg.ModelPath == "" {
			cfg = tinyGemmaConfig(t, cfg)
		}
		if _, err := Open(cfg); err == nil {
			t.Errorf("kv %q, flash attention %q, %s: opened, want an error", cfg.KVCacheType, cfg.FlashAttention, filepath.Base(cfg.ModelPath))
		} else {
			t.Logf("kv %q, flash attention %q: %v", cfg.KVCacheType, cfg.FlashAttention, err)
		}
	}
}

// These tests load the FunctionGemma and EmbeddingGemma presets in
// llama.cpp, as TestTinyModelLoadsInLlamaCpp does the tiny model.

package ggufgen_test

import (
	"math"
	"slices"
	"testing"

	"github.com/ollama/ollama/llama"
	"github.com/ollama/ollama/ml"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/chat/functiongemma"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// presetSizes runs f on the tiny variant and, unless -short, on the full
// preset (a few hundred MiB written and mapped).
func presetSizes(t *testing.T, tiny, full string, f func(t *testing.T, name string)) {
	t.Run(tiny, func(t *testing.T) { f(t, tiny) })
	t.Run(full, func(t *testing.T) {
		if testing.Short() {
			t.Skip("writes a full-size model")
		}
		f(t, full)
	})
}

// A FunctionGemma prompt tokenizes with each function-calling tag as one
// control token, which detokenizes to the tag (so that the parser sees
// it), and decodes to finite logits.
func TestFunctionGemmaLoadsInLlamaCpp(t *testing.T) {
	llama.BackendInit()
	presetSizes(t, ggufgen.PresetFunctionGemmaTiny, ggufgen.PresetFunctionGemma270M, func(t *testing.T, name string) {
		cfg, _ := ggufgen.Preset(name)
		m, err := llama.LoadModelFromFile(modeltest.Preset(t, name), llama.ModelParams{UseMmap: true})
		if err != nil {
			t.Fatal(err)
		}
		defer llama.FreeModel(m)
		if m.NumVocab() != cfg.VocabSize || m.NEmbd() != cfg.EmbeddingLength {
			t.Errorf("vocab %d, embedding %d; want %d, %d", m.NumVocab(), m.NEmbd(), cfg.VocabSize, cfg.EmbeddingLength)
		}

		p, err := functiongemma.Render([]chat.Message{
			{Role: "user", Content: "weather in Paris?"},
			{Role: "assistant", ToolCalls: []chat.ToolCall{{ID: "1", Type: "function", Function: chat.ToolCallFunction{Name: "w", Arguments: `{"city":"Paris"}`}}}},
			{Role: "tool", ToolCallID: "1", Content: `{"t":15}`},
		}, []chat.Tool{{Type: "function", Function: chat.ToolFunction{Name: "w", Description: "weather"}}})
		if err != nil {
			t.Fatal(err)
		}
		toks, err := m.Tokenize(p.String(), true, true)
		if err != nil {
			t.Fatal(err)
		}
		for i, tag := range functiongemma.Tokens() {
			id := ggufgen.FirstByteID + 256 + i
			if piece := m.TokenToPiece(id); piece != tag {
				t.Errorf("token %d detokenizes to %q, want %q", id, piece, tag)
			}
			if tag == functiongemma.StartResponse || tag == functiongemma.EndResponse || tag == functiongemma.StartCall || tag == functiongemma.Escape {
				if !slices.Contains(toks, id) {
					t.Errorf("%s is not token %d in the prompt's tokens", tag, id)
				}
			}
		}
		if toks[0] != ggufgen.BOSID || !slices.Contains(toks, ggufgen.StartOfTurnID) {
			t.Errorf("tokens %v: want <bos> first and <start_of_turn>", toks[:min(len(toks), 8)])
		}

		ctx, err := llama.NewContextWithModel(m, llama.NewContextParams(512, 256, 1, 2, ml.FlashAttentionAuto, "f16"))
		if err != nil {
			t.Fatal(err)
		}
		batch, err := llama.NewBatch(256, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer batch.Free()
		for i, tok := range toks {
			batch.Add(tok, nil, i, i == len(toks)-1, 0)
		}
		if err := ctx.Decode(batch); err != nil {
			t.Fatal(err)
		}
		for i, l := range ctx.GetLogitsIth(len(toks) - 1) {
			if math.IsNaN(float64(l)) || math.IsInf(float64(l), 0) {
				t.Fatalf("logit %d is %v", i, l)
			}
		}
	})
}

// llama.cpp loads the gemma-embedding architecture with mean pooling and
// gives one embedding of the model's width per sequence: finite, not all
// zero, the same for the same text and different for another.
func TestEmbeddingGemmaLoadsInLlamaCpp(t *testing.T) {
	llama.BackendInit()
	presetSizes(t, ggufgen.PresetEmbeddingGemmaTiny, ggufgen.PresetEmbeddingGemma300M, func(t *testing.T, name string) {
		cfg, _ := ggufgen.Preset(name)
		path := modeltest.Preset(t, name)
		if arch, err := llama.GetModelArch(path); err != nil || arch != "gemma-embedding" {
			t.Fatalf("architecture %q, %v", arch, err)
		}
		m, err := llama.LoadModelFromFile(path, llama.ModelParams{UseMmap: true})
		if err != nil {
			t.Fatal(err)
		}
		defer llama.FreeModel(m)
		if m.NEmbd() != cfg.EmbeddingLength {
			t.Errorf("embedding %d, want %d", m.NEmbd(), cfg.EmbeddingLength)
		}
		embed := func(text string) []float32 {
			t.Helper()
			toks, err := m.Tokenize(text, true, true)
			if err != nil {
				t.Fatal(err)
			}
			if toks[0] != ggufgen.BOSID || toks[len(toks)-1] != ggufgen.EOSID {
				t.Errorf("tokens %v: want <bos> ... <eos>", toks)
			}
			ctx, err := llama.NewContextWithModel(m, llama.NewContextParams(256, 256, 1, 2, ml.FlashAttentionAuto, "f16"))
			if err != nil {
				t.Fatal(err)
			}
			batch, err := llama.NewBatch(256, 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer batch.Free()
			for i, tok := range toks {
				batch.Add(tok, nil, i, true, 0)
			}
			if err := ctx.Decode(batch); err != nil {
				t.Fatal(err)
			}
			return ctx.GetEmbeddingsSeq(0)
		}
		a, b, c := embed("the cat sat on the mat"), embed("the cat sat on the mat"), embed("stock prices fell")
		if len(a) != cfg.EmbeddingLength {
			t.Fatalf("embedding of %d values, want %d", len(a), cfg.EmbeddingLength)
		}
		var norm float64
		for i, v := range a {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("value %d is %v", i, v)
			}
			norm += float64(v) * float64(v)
		}
		if norm == 0 {
			t.Error("the embedding is all zeros")
		}
		if !slices.Equal(a, b) || slices.Equal(a, c) {
			t.Error("the same text should embed the same, and another text differently")
		}
	})
}

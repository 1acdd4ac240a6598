//go:build llama

// This test loads generated models in llama.cpp. It needs the cgo build of
// github.com/ollama/ollama/llama, which takes minutes the first time:
//
//	CGO_CFLAGS="-O3 -march=x86-64-v3 -Wno-stringop-overflow" CGO_CXXFLAGS="-O3 -march=x86-64-v3 -Wno-stringop-overflow" \
//	  go test -trimpath -tags llama ./internal/model/ggufgen

package ggufgen_test

import (
	"math"
	"testing"
	"time"

	"github.com/ollama/ollama/llama"
	"github.com/ollama/ollama/ml"

	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
)

// The tiny model loads, tokenizes a Gemma chat prompt (special tokens and
// byte fallback included), and decodes it to finite logits.
func TestTinyModelLoadsInLlamaCpp(t *testing.T) {
	path := writeTiny(t, 0)
	llama.BackendInit()

	start := time.Now()
	m, err := llama.LoadModelFromFile(path, llama.ModelParams{UseMmap: true})
	if err != nil {
		t.Fatal(err)
	}
	defer llama.FreeModel(m)
	t.Logf("loaded in %s", time.Since(start))
	if m.NumVocab() != 1000 || m.NEmbd() != 64 {
		t.Errorf("vocab %d, embedding %d; want 1000, 64", m.NumVocab(), m.NEmbd())
	}
	if !m.TokenIsEog(ggufgen.EndOfTurnID) || !m.TokenIsEog(ggufgen.EOSID) {
		t.Error("<end_of_turn> and <eos> must both end generation")
	}

	ctx, err := llama.NewContextWithModel(m, llama.NewContextParams(256, 64, 1, 1, ml.FlashAttentionAuto, "f16"))
	if err != nil {
		t.Fatal(err)
	}
	toks, err := m.Tokenize("<bos><start_of_turn>user\nhello world<end_of_turn>\n<start_of_turn>model\n", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if toks[0] != ggufgen.BOSID || toks[1] != ggufgen.StartOfTurnID || toks[len(toks)-1] != ggufgen.FirstByteID+'\n' {
		t.Errorf("tokens %v: want <bos> <start_of_turn> ... <0x0A>", toks)
	}
	batch, err := llama.NewBatch(64, 1, 0)
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
}

// This test loads generated models in llama.cpp (the cgo package the
// engine's tests build too).

package ggufgen_test

import (
	"math"
	"testing"
	"time"

	"github.com/ollama/ollama/llama"
	"github.com/ollama/ollama/ml"

	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// The tiny model loads, tokenizes a Gemma chat prompt (special tokens and
// byte fallback included), and decodes it to finite logits of the
// expected spread in every weight type: a scale written where llama.cpp
// does not read it would blow the logits up or flatten them.
func TestTinyModelLoadsInLlamaCpp(t *testing.T) {
	llama.BackendInit()
	for _, typ := range ggufgen.Types() {
		t.Run(string(typ), func(t *testing.T) {
			sd := decodeTiny(t, modeltest.Tiny(t, func(c *ggufgen.Config) { c.Weights = typ }))
			// The final RMS norm (weights of one) leaves a hidden state
			// of unit RMS, so the logits' spread is that of the tied
			// embedding's rows: sqrt(64) × 0.02 = 0.16 in every type.
			if want := 0.16; math.Abs(sd-want) > 0.15*want {
				t.Errorf("logits' standard deviation %.3f, want %.2f ± 15%%", sd, want)
			}
		})
	}
}

// decodeTiny decodes a chat prompt with the tiny model at path and returns
// the standard deviation of the last token's logits.
func decodeTiny(t *testing.T, path string) float64 {

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
	logits := ctx.GetLogitsIth(len(toks) - 1)
	var sum, sq float64
	for i, l := range logits {
		if math.IsNaN(float64(l)) || math.IsInf(float64(l), 0) {
			t.Fatalf("logit %d is %v", i, l)
		}
		sum += float64(l)
		sq += float64(l) * float64(l)
	}
	mean := sum / float64(len(logits))
	return math.Sqrt(sq/float64(len(logits)) - mean*mean)
}

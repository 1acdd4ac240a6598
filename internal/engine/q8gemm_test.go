package engine

import (
	"slices"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/q8gemm"
)

// TestQ8GEMMMatchesGGML runs the same work with the Q8_0 kernel for
// batches (internal/q8gemm) and with ggml's own: 64 embeddings packed
// into passes, and a greedy reply on the tiny gemma3 whose prompt (over 32
// tokens) is prefilled in one batch. The results must be the same bit for
// bit, and the kernel must have run only when on. (Not parallel: the
// switch is process-wide.)
func TestQ8GEMMMatchesGGML(t *testing.T) {
	var inputs []string
	for i := range 64 {
		inputs = append(inputs, sentence(i))
	}
	prompt := strings.Join(inputs[:3], " ")

	type outcome struct {
		embeddings [][]float32
		text       string
		prompt     int
		products   uint64
	}
	run := func(on bool) outcome {
		// Engines of their own: a context may reuse a graph scheduled
		// before the switch.
		q8gemm.SetEnabled(on)
		defer q8gemm.SetEnabled(true)
		emb := openEmbedding(t, ggufgen.PresetEmbeddingGemmaTiny, Config{})
		gen := openTinyGemma(t, Config{NoPromptCache: true})
		before := q8gemm.Products()
		r := embed(t, emb, chat.EmbedRequest{Inputs: texts(inputs...)})
		text, res := generate(t, gen, userMsg(prompt, 24))
		return outcome{r.Embeddings, text, res.PromptTokens, q8gemm.Products() - before}
	}
	off := run(false)
	if !q8gemm.Registered() { // the engine registers it, where CPU and build allow
		t.Skip("no AVX-512 VNNI here, or ggml built without AVX2/FMA/F16C: ggml's kernels run everything")
	}
	on := run(true)

	if off.products != 0 {
		t.Errorf("switched off, the kernel ran %d products", off.products)
	}
	if on.products == 0 {
		t.Fatal("switched on, the kernel ran no product")
	}
	if on.prompt < 32 {
		t.Fatalf("a prompt of %d tokens: too short for the kernel", on.prompt)
	}
	for i := range inputs {
		if !slices.Equal(on.embeddings[i], off.embeddings[i]) {
			t.Errorf("input %d: embeddings differ (by up to %g)", i, maxDiff(t, on.embeddings[i], off.embeddings[i]))
		}
	}
	if on.text != off.text {
		t.Errorf("greedy replies differ:\n kernel: %q\n ggml:   %q", on.text, off.text)
	}
}

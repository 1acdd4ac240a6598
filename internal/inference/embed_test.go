package inference

import (
	"math"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/engine"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

func openEngine(t *testing.T, path string) *engine.Engine {
	t.Helper()
	e, err := engine.Open(engine.Config{ModelPath: path, Threads: 1, Parallel: 2, ContextPerSeq: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// inference::run_embeddings on an embedding model, and the refusals of
// the other tier's work on each kind of model.
func TestEmbeddingsOverRPC(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	s.SetEngine(openEngine(t, modeltest.Preset(t, ggufgen.PresetEmbeddingGemmaTiny)))
	c, _ := startInference(t, s)

	res, err := c.Embed(testCtx(t), chat.EmbedRequest{Inputs: []chat.EmbedInput{{Text: "hello"}, {Tokens: []int{2, 10, 11}}}, Dimensions: 32})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Embeddings) != 2 || len(res.Embeddings[0]) != 32 || res.PromptTokens < 4 || res.Model == "" {
		t.Fatalf("result: %d embeddings, model %q, %d tokens", len(res.Embeddings), res.Model, res.PromptTokens)
	}
	var sum float64
	for _, x := range res.Embeddings[1] {
		sum += float64(x) * float64(x)
	}
	if math.Abs(sum-1) > 1e-4 {
		t.Errorf("squared norm %v, want 1", sum)
	}
	_, err = c.Embed(testCtx(t), chat.EmbedRequest{Model: "other", Inputs: []chat.EmbedInput{{Text: "x"}}})
	wantRPCError(t, err, chat.CodeNotFound, "model", "")
	_, err = c.RunInference(testCtx(t), chat.Request{Messages: []chat.Message{{Role: chat.RoleUser, Content: "hi"}}}, nil)
	wantRPCError(t, err, chat.CodeInvalidArgument, "model", "")
}

func TestRawCompletionAndNoEmbeddingsOverRPC(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	s.SetEngine(openEngine(t, modeltest.Stories(t)))
	c, _ := startInference(t, s)

	_, err := c.Embed(testCtx(t), chat.EmbedRequest{Inputs: []chat.EmbedInput{{Text: "x"}}})
	wantRPCError(t, err, chat.CodeInvalidArgument, "model", "")

	prompt := "Once upon a time"
	zero := float32(0)
	var text string
	res, err := c.RunInference(testCtx(t), chat.Request{RawPrompt: &prompt, MaxTokens: 8, Temperature: &zero}, func(d chat.Delta) error {
		text += d.Content
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if text == "" || res.CompletionTokens != 8 || res.FinishReason != chat.FinishLength {
		t.Fatalf("text %q, result %+v", text, res)
	}
}

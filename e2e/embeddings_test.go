package e2e

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	sdk "github.com/openai/openai-go/v3"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// The embedding model and the chat model behind one caller, each on its
// own inference instance: the caller routes by model.
const (
	embeddingModel = ggufgen.PresetEmbeddingGemmaTiny
	storiesModel   = "stories260K"
)

func startEmbeddingMesh(t *testing.T) *mesh {
	t.Helper()
	return startMesh(t, localmesh.Config{Models: []string{modeltest.Preset(t, embeddingModel), modeltest.Stories(t)}, Parallel: 2})
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// wantAPIError checks that err is the SDK's error for status naming param,
// with a message holding text.
func wantAPIError(t *testing.T, err error, status int, param, text string) {
	t.Helper()
	var ae *sdk.Error
	if !errors.As(err, &ae) || ae.StatusCode != status || ae.Param != param || !strings.Contains(ae.Message, text) {
		t.Fatalf("error %v, want %d naming %q saying %q", err, status, param, text)
	}
}

// fromBase64 decodes OpenAI's base64 encoding_format: little-endian
// float32 values.
func fromBase64(t *testing.T, s string) []float32 {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b)%4 != 0 {
		t.Fatalf("base64 embedding %q: %v", s, err)
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// TestEmbeddingsSDK: 64 inputs in one request through the real gateway,
// caller and inference with the OpenAI SDK, each embedding of unit length
// and the one its input gets alone; base64 carries the same values;
// token inputs and dimensions; the refusals.
func TestEmbeddingsSDK(t *testing.T) {
	m := startEmbeddingMesh(t)
	c := m.client()
	ctx := testContext(t)

	var inputs []string
	for i := range 64 {
		inputs = append(inputs, fmt.Sprintf("sentence number %d about %s", i, strings.Repeat("words ", i%7+1)))
	}
	res, err := c.Embeddings.New(ctx, sdk.EmbeddingNewParams{
		Model: embeddingModel,
		Input: sdk.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Data) != 64 || res.Model != embeddingModel || res.Usage.PromptTokens < 64*4 || res.Usage.TotalTokens != res.Usage.PromptTokens {
		t.Fatalf("%d embeddings, model %q, usage %+v", len(res.Data), res.Model, res.Usage)
	}
	for i, d := range res.Data {
		if d.Index != int64(i) || d.Object != "embedding" {
			t.Fatalf("data[%d]: index %d, object %q", i, d.Index, d.Object)
		}
		var sum float64
		for _, x := range d.Embedding {
			sum += x * x
		}
		if math.Abs(sum-1) > 1e-3 {
			t.Errorf("data[%d]: squared norm %v", i, sum)
		}
	}
	for _, i := range []int{0, 37, 63} {
		one, err := c.Embeddings.New(ctx, sdk.EmbeddingNewParams{
			Model: embeddingModel, Input: sdk.EmbeddingNewParamsInputUnion{OfString: sdk.String(inputs[i])},
		})
		if err != nil {
			t.Fatal(err)
		}
		for k, x := range one.Data[0].Embedding {
			if math.Abs(x-res.Data[i].Embedding[k]) > 1e-4 {
				t.Fatalf("input %d alone differs from its place in the batch at %d: %v vs %v", i, k, x, res.Data[i].Embedding[k])
			}
		}
	}
	if res.Data[0].Embedding[0] == res.Data[1].Embedding[0] && res.Data[0].Embedding[1] == res.Data[1].Embedding[1] {
		t.Error("different inputs, same embedding")
	}

	// base64: the same float32 values, little-endian.
	b64, err := c.Embeddings.New(ctx, sdk.EmbeddingNewParams{
		Model:          embeddingModel,
		Input:          sdk.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs[:2]},
		EncodingFormat: sdk.EmbeddingNewParamsEncodingFormatBase64,
	})
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(b64.RawJSON()), &raw); err != nil || len(raw.Data) != 2 {
		t.Fatalf("base64 response %s: %v", b64.RawJSON(), err)
	}
	for i, d := range raw.Data {
		v := fromBase64(t, d.Embedding)
		if len(v) != len(res.Data[i].Embedding) {
			t.Fatalf("base64 embedding of %d values, float of %d", len(v), len(res.Data[i].Embedding))
		}
		for k := range v {
			if v[k] != float32(res.Data[i].Embedding[k]) {
				t.Fatalf("base64 value %d: %v, float %v", k, v[k], res.Data[i].Embedding[k])
			}
		}
	}

	// Token arrays and dimensions.
	toks, err := c.Embeddings.New(ctx, sdk.EmbeddingNewParams{
		Model:      embeddingModel,
		Input:      sdk.EmbeddingNewParamsInputUnion{OfArrayOfTokenArrays: [][]int64{{2, 10, 11, 1}, {2, 12, 1}}},
		Dimensions: sdk.Int(16),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(toks.Data) != 2 || len(toks.Data[1].Embedding) != 16 || toks.Usage.PromptTokens != 7 {
		t.Fatalf("token inputs: %s", toks.RawJSON())
	}

	_, err = c.Embeddings.New(ctx, sdk.EmbeddingNewParams{Model: embeddingModel, Input: sdk.EmbeddingNewParamsInputUnion{OfString: sdk.String("x")}, Dimensions: sdk.Int(4096)})
	wantAPIError(t, err, 400, "dimensions", "4096")
	_, err = c.Embeddings.New(ctx, sdk.EmbeddingNewParams{Model: embeddingModel, Input: sdk.EmbeddingNewParamsInputUnion{OfString: sdk.String(strings.Repeat("word ", 2000))}})
	wantAPIError(t, err, 400, "input", "tokens")
	_, err = c.Embeddings.New(ctx, sdk.EmbeddingNewParams{Model: storiesModel, Input: sdk.EmbeddingNewParamsInputUnion{OfString: sdk.String("x")}})
	wantAPIError(t, err, 400, "model", "does not support embeddings")
	_, err = c.Chat.Completions.New(ctx, sdk.ChatCompletionNewParams{
		Model: embeddingModel, Messages: []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage("hi")},
	})
	wantAPIError(t, err, 400, "model", "does not support chat completions")
}

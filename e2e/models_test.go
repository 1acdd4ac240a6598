package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	sdk "github.com/openai/openai-go/v3"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// TestSeveralModels serves two models behind one endpoint — stories260K
// and a generated tiny gemma, one inference instance each, found by the
// caller in Consul by the model each registers — and talks to it with the
// OpenAI SDK: each request is answered by the model it names (streamed
// too), a request without a model goes to the caller's -default-model,
// /v1/models lists both, and an unknown model is 404 model_not_found.
func TestSeveralModels(t *testing.T) {
	t.Parallel()
	const stories, tiny = "stories260K", ggufgen.PresetTiny
	m := startMesh(t, localmesh.Config{
		ConsulBin: consulBinary(t),
		Models:    []string{modeltest.Stories(t), modeltest.Preset(t, tiny)},
		ExtraArgs: map[string][]string{"caller": {"-default-model", stories}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := m.client()

	page, err := c.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, md := range page.Data {
		ids = append(ids, md.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{stories, tiny}) {
		t.Errorf("models.list: %v, want both models", ids)
	}
	for _, id := range []string{stories, tiny} {
		if one, err := c.Models.Get(ctx, id); err != nil || one.ID != id {
			t.Errorf("models.retrieve %s: %v %v", id, one, err)
		}
	}

	for range 3 {
		for _, id := range []string{stories, tiny} {
			p := m.greedy("Once upon a time", 8)
			p.Model = id
			if res := m.complete(t, p); res.Model != id {
				t.Errorf("asked %s, answered by %s", id, res.Model)
			}
		}
	}
	p := m.greedy("Once upon a time", 8)
	p.Model = tiny
	stream := c.Chat.Completions.NewStreaming(ctx, p)
	var chunks int
	for stream.Next() {
		chunks++
		if got := stream.Current().Model; got != tiny {
			t.Errorf("a streamed chunk from %s, want %s", got, tiny)
		}
	}
	if err := stream.Err(); err != nil || chunks == 0 {
		t.Errorf("stream from %s: %d chunks, %v", tiny, chunks, err)
	}

	resp, body := m.request(t, "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"Once"}],"max_tokens":4}`, nil)
	var res struct {
		Model string `json:"model"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &res) != nil || res.Model != stories {
		t.Errorf("no model, -default-model %s: %d %s", stories, resp.StatusCode, body)
	}

	p.Model = "gpt-nothing"
	_, err = c.Chat.Completions.New(ctx, p)
	var e *sdk.Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusNotFound || e.Code != "model_not_found" {
		t.Errorf("unknown model: %v, want 404 model_not_found", err)
	}
}

package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
	"github.com/slm-mesh/slm-mesh/internal/openai"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// embedFunc is a fake caller's inference::get_embeddings.
type embedFunc func(context.Context, chat.EmbedRequest) (chat.EmbedResult, error)

func (f embedFunc) Embed(ctx context.Context, req chat.EmbedRequest) (chat.EmbedResult, error) {
	return f(ctx, req)
}

// startEmbedGateway serves a gateway over one fake caller whose
// embeddings are f's.
func startEmbedGateway(t *testing.T, f embedFunc) *httptest.Server {
	t.Helper()
	addr := meshtest.ServeRPC(t, func(srv *rpc.Server) {
		mesh.RegisterCaller(srv, &meshtest.Caller{})
		mesh.RegisterCallerEmbeddings(srv, f)
	})
	g, err := New(Config{Caller: meshtest.Pool(t, discovery.ServiceCaller, rpc.PoolConfig{}, addr)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv
}

func postPath(t *testing.T, srv *httptest.Server, path, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestEmbeddings(t *testing.T) {
	t.Parallel()
	srv := startEmbedGateway(t, func(_ context.Context, req chat.EmbedRequest) (chat.EmbedResult, error) {
		if req.Dimensions > 2 {
			return chat.EmbedResult{}, chat.Invalidf("dimensions", "Invalid 'dimensions': %d is more than model emb's 2.", req.Dimensions)
		}
		out := make([][]float32, len(req.Inputs))
		for i := range out {
			out[i] = []float32{float32(i), 0.5}
		}
		return chat.EmbedResult{Model: "emb", Embeddings: out, PromptTokens: 2 * len(req.Inputs)}, nil
	})

	resp, body := postPath(t, srv, "/v1/embeddings", `{"model":"emb","input":["a","b"]}`)
	var list openai.EmbeddingList
	if resp.StatusCode != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if list.Object != "list" || len(list.Data) != 2 || list.Data[1].Index != 1 || list.Model != "emb" || list.Usage.PromptTokens != 4 || list.Usage.TotalTokens != 4 {
		t.Fatalf("response %s", body)
	}
	if got := list.Data[1].Embedding.([]any); got[0] != 1.0 || got[1] != 0.5 {
		t.Fatalf("embedding %v", got)
	}

	resp, body = postPath(t, srv, "/v1/embeddings", `{"input":"a","encoding_format":"base64"}`)
	if resp.StatusCode != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if v, err := openai.DecodeBase64(list.Data[0].Embedding.(string)); err != nil || len(v) != 2 || v[1] != 0.5 {
		t.Fatalf("base64 embedding %v, %v", v, err)
	}

	for _, tc := range []struct{ body, param string }{
		{`{"input":[]}`, "input"},
		{`{"input":"a","dimensions":3}`, "dimensions"},
		{`{"input":"a","suffix":"x"}`, "suffix"},
	} {
		resp, body = postPath(t, srv, "/v1/embeddings", tc.body)
		var e openai.Error
		if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || e.Param != tc.param {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.body, resp.StatusCode, body, tc.param)
		}
	}
}

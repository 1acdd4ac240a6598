package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEmbedTexts(t *testing.T) {
	t.Parallel()
	a := EmbedTexts(64, 15, 1, 0)
	if len(a) != 64 {
		t.Fatalf("%d texts, want 64", len(a))
	}
	for i, s := range a {
		if n := len(strings.Fields(s)); n != 15 {
			t.Fatalf("text %d has %d words, want 15: %q", i, n, s)
		}
	}
	if uniq := slices.Compact(slices.Sorted(slices.Values(a))); len(uniq) != 64 {
		t.Error("two texts of one request are alike")
	}
	if !slices.Equal(a, EmbedTexts(64, 15, 1, 0)) {
		t.Error("the same seed and request gave other texts")
	}
	if b := EmbedTexts(64, 15, 1, 1); slices.Equal(a, b) || a[0] == b[0] {
		t.Error("two requests got the same texts")
	}
}

// embedServer is a fake /v1/embeddings that counts two tokens per word and
// two special tokens per input, and answers with drop embeddings fewer
// than inputs when a request has more than one. It records the inputs of
// every request.
type embedServer struct {
	drop int
	mu   sync.Mutex
	got  [][]string
}

func (s *embedServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/embeddings" {
		http.NotFound(w, r)
		return
	}
	var req struct {
		Input []string `json:"input"`
		Model string   `json:"model"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model != "m" {
		http.Error(w, fmt.Sprintf("bad request: %v, model %q", err, req.Model), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.got = append(s.got, req.Input)
	s.mu.Unlock()
	n := len(req.Input)
	if n > 1 {
		n -= s.drop
	}
	tokens := 0
	for _, in := range req.Input {
		tokens += 2 + 2*len(strings.Fields(in))
	}
	var data []string
	for i := range n {
		data = append(data, fmt.Sprintf(`{"object":"embedding","index":%d,"embedding":[0.5,-0.25,1]}`, i))
	}
	fmt.Fprintf(w, `{"object":"list","data":[%s],"model":"m","usage":{"prompt_tokens":%d,"total_tokens":%d}}`,
		strings.Join(data, ","), tokens, tokens)
}

// TestRunEmbed measures two fake servers, the second of which leaves an
// embedding out of every answer: the texts are sized on the first, both
// get the same texts, and the second's requests count as errors.
func TestRunEmbed(t *testing.T) {
	t.Parallel()
	good, short := &embedServer{}, &embedServer{drop: 1}
	var eps []Endpoint
	for _, e := range []struct {
		name string
		srv  *embedServer
	}{{"A", good}, {"B", short}} {
		hs := httptest.NewServer(e.srv)
		t.Cleanup(hs.Close)
		eps = append(eps, Endpoint{Name: e.name, Client: &Client{BaseURL: hs.URL, Model: "m"}})
	}
	var out strings.Builder
	plan := EmbedPlan{Inputs: 8, Tokens: 32, Requests: 2, Rounds: 3, Seed: 4}
	res, err := RunEmbed(context.Background(), &out, io.Discard, plan, eps)
	if err != nil {
		t.Fatal(err)
	}
	if len(res[0]) != 6 || len(res[1]) != 6 {
		t.Fatalf("samples %d and %d, want 2 requests × 3 rounds each", len(res[0]), len(res[1]))
	}
	for _, s := range res[0] {
		// 15 words: 2 + 2×15 = 32 tokens per input.
		if s.Err != nil || s.Inputs != 8 || s.PromptTokens != 8*32 || s.Dimensions != 3 {
			t.Fatalf("A sample %+v, want 8 inputs of 32 tokens, 3 dimensions", s)
		}
	}
	for _, s := range res[1] {
		if s.Err == nil || !strings.Contains(s.Err.Error(), "7 embeddings for 8 inputs") {
			t.Fatalf("B sample error %v, want one about a missing embedding", s.Err)
		}
	}
	measured := func(got [][]string) [][]string {
		return slices.DeleteFunc(slices.Clone(got), func(in []string) bool { return len(in) != 8 })
	}
	if a, b := measured(good.got), measured(short.got); len(a) != 6 || !slices.EqualFunc(a, b, slices.Equal) {
		t.Fatalf("A got %d requests of 8 inputs, B %d; want the same 6", len(a), len(b))
	}

	text := out.String()
	row := func(name string) []string {
		for l := range strings.Lines(text) {
			cells := strings.Fields(strings.ReplaceAll(l, "|", " "))
			if len(cells) > 0 && cells[0] == name {
				return cells
			}
		}
		t.Fatalf("no row %s in\n%s", name, text)
		return nil
	}
	if a := row("A"); !slices.Equal(a[1:6], []string{"6", "0", "48", "32.0", "3"}) {
		t.Errorf("row A %q: want 6 requests, 0 errors, 48 inputs, 32.0 tok/input, 3 dims\n%s", a, text)
	}
	if b := row("B"); !slices.Equal(b[1:5], []string{"6", "6", "0", "-"}) {
		t.Errorf("row B %q: want 6 requests, 6 errors, no inputs\n%s", b, text)
	}
	if !strings.Contains(text, "8 inputs of 15 words (about 32 tokens)") {
		t.Errorf("workload line missing or wrong:\n%s", text)
	}
}

func TestEmbedRefusesRPC(t *testing.T) {
	t.Parallel()
	c := &Client{BaseURL: "rpc://127.0.0.1:1"}
	if s := c.Embed(context.Background(), []string{"x"}); s.Err == nil {
		t.Fatal("no error for an rpc:// endpoint")
	}
}

// TestWriteEmbedRounds: the per-round table holds each round's inputs/s
// and B/A, the medians over the rounds (where the totals weigh a slow
// round by its time) and each endpoint's fastest round.
func TestWriteEmbedRounds(t *testing.T) {
	t.Parallel()
	row := func(inputs int, busy time.Duration) EmbedRow {
		return EmbedRow{Requests: 1, Inputs: inputs, Busy: busy}
	}
	rounds := [][]EmbedRow{
		{row(64, 4*time.Second), row(64, 2*time.Second)},  // 16 and 32 inputs/s: 2.00
		{row(64, 64*time.Second), row(64, 8*time.Second)}, // 1 and 8: 8.00, a loaded round
		{row(64, 8*time.Second), row(64, 4*time.Second)},  // 8 and 16: 2.00
		{row(64, 2*time.Second), row(64, 4*time.Second)},  // 32 and 16: 0.50
		{row(64, 4*time.Second), row(64, 1*time.Second)},  // 16 and 64: 4.00
	}
	eps := []Endpoint{{Name: "ollama", Client: &Client{}}, {Name: "mesh", Client: &Client{}}}
	var b strings.Builder
	if err := WriteEmbed(&b, eps, make([][]EmbedSample, 2), rounds, []float64{1, 2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	var got [][]string
	for l := range strings.Lines(b.String()) {
		got = append(got, strings.Fields(strings.ReplaceAll(l, "|", " ")))
	}
	if h := got[len(got)-9]; !slices.Equal(h, []string{"round", "ollama", "inputs/s", "mesh", "inputs/s", "B/A", "load"}) {
		t.Errorf("header %q", h)
	}
	if r := got[len(got)-5]; !slices.Equal(r, []string{"3", "8.0", "16.0", "2.00", "3.00"}) {
		t.Errorf("round 3 %q, want 8.0 16.0 2.00 3.00", r)
	}
	if m := got[len(got)-2]; !slices.Equal(m, []string{"median", "16.0", "16.0", "2.00"}) {
		t.Errorf("medians %q, want 16.0 16.0 2.00\n%s", m, b.String())
	}
	if m := got[len(got)-1]; !slices.Equal(m, []string{"best", "32.0", "64.0", "2.00"}) {
		t.Errorf("fastest rounds %q, want 32.0 64.0 2.00\n%s", m, b.String())
	}
}

package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

func openEmbedding(t testing.TB, preset string, cfg Config) *Engine {
	t.Helper()
	cfg.ModelPath = modeltest.Preset(t, preset)
	if cfg.Threads == 0 {
		cfg.Threads = 1
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "engine", Level: hclog.Warn, Output: os.Stderr})
	e, err := Open(cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

func texts(ss ...string) []chat.EmbedInput {
	in := make([]chat.EmbedInput, len(ss))
	for i, s := range ss {
		in[i] = chat.EmbedInput{Text: s}
	}
	return in
}

func embed(t *testing.T, e *Engine, req chat.EmbedRequest) chat.EmbedResult {
	t.Helper()
	res, err := e.Embed(context.Background(), req)
	if err != nil {
		t.Fatalf("embed: %v", err)
	}
	if len(res.Embeddings) != len(req.Inputs) {
		t.Fatalf("%d embeddings for %d inputs", len(res.Embeddings), len(req.Inputs))
	}
	return res
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

// maxDiff is the largest difference between a and b, which have the same
// length.
func maxDiff(t *testing.T, a, b []float32) float64 {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("lengths %d and %d", len(a), len(b))
	}
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// sentence is the i-th of a set of different texts of similar length.
func sentence(i int) string {
	words := []string{"the", "cat", "sat", "on", "a", "mat", "while", "dogs", "ran", "far", "away", "from", "home"}
	var b strings.Builder
	for k := range 12 + i%5 {
		b.WriteString(words[(i*7+k*(i%3+1))%len(words)])
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "%d", i)
	return b.String()
}

func TestEmbeddingsDeterministicAndNormalised(t *testing.T) {
	e := openEmbedding(t, ggufgen.PresetEmbeddingGemmaTiny, Config{})
	if !e.Embedding() {
		t.Fatal("the embedding preset is not served as an embedding model")
	}
	cfg, _ := ggufgen.Preset(ggufgen.PresetEmbeddingGemmaTiny)
	a := embed(t, e, chat.EmbedRequest{Inputs: texts("hello world")})
	b := embed(t, e, chat.EmbedRequest{Inputs: texts("hello world")})
	c := embed(t, e, chat.EmbedRequest{Inputs: texts("something else entirely")})
	if len(a.Embeddings[0]) != cfg.EmbeddingLength {
		t.Fatalf("embedding of %d values, want %d", len(a.Embeddings[0]), cfg.EmbeddingLength)
	}
	if d := maxDiff(t, a.Embeddings[0], b.Embeddings[0]); d != 0 {
		t.Errorf("the same text embedded twice differs by %g", d)
	}
	if d := maxDiff(t, a.Embeddings[0], c.Embeddings[0]); d < 1e-4 {
		t.Errorf("different texts have the same embedding (difference %g)", d)
	}
	for _, v := range [][]float32{a.Embeddings[0], c.Embeddings[0]} {
		if n := norm(v); math.Abs(n-1) > 1e-4 {
			t.Errorf("norm %v, want 1", n)
		}
	}
	if a.PromptTokens < 3 || a.Model != e.Name() {
		t.Errorf("result %d tokens, model %q", a.PromptTokens, a.Model)
	}
}

// A batch of 64 inputs, packed many per decode, gives each input the
// embedding it gets alone.
func TestEmbeddingsBatchEqualsOneByOne(t *testing.T) {
	e := openEmbedding(t, ggufgen.PresetEmbeddingGemmaTiny, Config{})
	var ss []string
	for i := range 64 {
		ss = append(ss, sentence(i))
	}
	batch := embed(t, e, chat.EmbedRequest{Inputs: texts(ss...)})
	total := 0
	for i, s := range ss {
		one := embed(t, e, chat.EmbedRequest{Inputs: texts(s)})
		total += one.PromptTokens
		if d := maxDiff(t, batch.Embeddings[i], one.Embeddings[0]); d > 1e-4 {
			t.Errorf("input %d: batched and alone differ by %g", i, d)
		}
	}
	if batch.PromptTokens != total {
		t.Errorf("batch counts %d tokens, the inputs alone %d", batch.PromptTokens, total)
	}
}

// Inputs are packed many per pass only with flash attention, which skips
// the attention between inputs that the mask rules out; without it each
// input has a pass of its own, which is faster then.
func TestEmbeddingsPacking(t *testing.T) {
	var ss []string
	for i := range 64 {
		ss = append(ss, sentence(i))
	}
	for _, tt := range []struct {
		flash    string
		min, max uint64 // passes for the 64 inputs
	}{
		{"auto", 1, 8},
		{"off", 64, 64},
	} {
		e := openEmbedding(t, ggufgen.PresetEmbeddingGemmaTiny, Config{FlashAttention: tt.flash})
		before := e.Stats().Steps
		embed(t, e, chat.EmbedRequest{Inputs: texts(ss...)})
		if n := e.Stats().Steps - before; n < tt.min || n > tt.max {
			t.Errorf("flash attention %s: 64 inputs in %d passes, want %d to %d", tt.flash, n, tt.min, tt.max)
		}
	}
}

// queued waits until n Embed calls are in e's queue.
func queued(t *testing.T, e *Engine, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.embed.qmu.Lock()
		got := len(e.embed.queue)
		e.embed.qmu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Concurrent requests share passes: eight one-input requests that arrive
// while the context is busy are encoded in one pass, each getting the
// embedding its input gets alone. A request whose caller gives up while
// it waits returns its context's error and is not encoded, and the others
// are not disturbed.
func TestEmbeddingsAcrossRequests(t *testing.T) {
	e := openEmbedding(t, ggufgen.PresetEmbeddingGemmaTiny, Config{})
	alone := make([][]float32, 8)
	for i := range alone {
		alone[i] = embed(t, e, chat.EmbedRequest{Inputs: texts(sentence(i))}).Embeddings[0]
	}

	// Holding the context's turn stands for a pass in progress.
	e.embed.turn <- struct{}{}
	got := make([][]float32, len(alone))
	errs := make([]error, len(alone)+1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range alone {
		wg.Go(func() {
			res, err := e.Embed(context.Background(), chat.EmbedRequest{Inputs: texts(sentence(i))})
			if errs[i] = err; err == nil {
				got[i] = res.Embeddings[0]
			}
		})
	}
	wg.Go(func() {
		_, errs[len(alone)] = e.Embed(ctx, chat.EmbedRequest{Inputs: texts("given up on")})
	})
	queued(t, e, len(alone)+1)
	cancel()
	before := e.Stats().Steps
	<-e.embed.turn
	wg.Wait()

	if n := e.Stats().Steps - before; n != 1 {
		t.Errorf("%d one-input requests in %d passes, want 1", len(alone), n)
	}
	for i := range alone {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if d := maxDiff(t, got[i], alone[i]); d > 1e-4 {
			t.Errorf("request %d: with the others and alone differ by %g", i, d)
		}
	}
	if err := errs[len(alone)]; !errors.Is(err, context.Canceled) {
		t.Errorf("the request given up on: %v, want context.Canceled", err)
	}
	queued(t, e, 0)
}

// Token inputs are used as they are: the tokens of a text give its
// embedding.
func TestEmbeddingsOfTokens(t *testing.T) {
	e := openEmbedding(t, ggufgen.PresetEmbeddingGemmaTiny, Config{})
	toks, err := e.model.Tokenize("hello world", true, false)
	if err != nil {
		t.Fatal(err)
	}
	res := embed(t, e, chat.EmbedRequest{Inputs: []chat.EmbedInput{{Text: "hello world"}, {Tokens: toks}}})
	if d := maxDiff(t, res.Embeddings[0], res.Embeddings[1]); d > 1e-5 {
		t.Errorf("text and its tokens differ by %g", d)
	}
}

// dimensions keeps the first values and normalises them again.
func TestEmbeddingsDimensions(t *testing.T) {
	e := openEmbedding(t, ggufgen.PresetEmbeddingGemmaTiny, Config{})
	full := embed(t, e, chat.EmbedRequest{Inputs: texts("hello world")}).Embeddings[0]
	short := embed(t, e, chat.EmbedRequest{Inputs: texts("hello world"), Dimensions: 16}).Embeddings[0]
	if len(short) != 16 {
		t.Fatalf("%d values, want 16", len(short))
	}
	if n := norm(short); math.Abs(n-1) > 1e-4 {
		t.Errorf("norm %v, want 1", n)
	}
	scale := norm(full[:16])
	for i := range short {
		if math.Abs(float64(short[i])-float64(full[i])/scale) > 1e-5 {
			t.Fatalf("value %d: %v, want %v", i, short[i], float64(full[i])/scale)
		}
	}
}

func TestEmbeddingsRefused(t *testing.T) {
	e := openEmbedding(t, ggufgen.PresetEmbeddingGemmaTiny, Config{ContextPerSeq: 64})
	long := strings.Repeat("word ", 200)
	many := make([]chat.EmbedInput, chat.MaxEmbedInputs+1)
	for i := range many {
		many[i].Text = "x"
	}
	for _, tc := range []struct {
		name  string
		req   chat.EmbedRequest
		param string
	}{
		{"no inputs", chat.EmbedRequest{}, "input"},
		{"too many inputs", chat.EmbedRequest{Inputs: many}, "input"},
		{"empty input", chat.EmbedRequest{Inputs: texts("a", "")}, "input[1]"},
		{"too long", chat.EmbedRequest{Inputs: texts("a", long)}, "input"},
		{"token out of vocabulary", chat.EmbedRequest{Inputs: []chat.EmbedInput{{Tokens: []int{2, 1 << 20}}}}, "input"},
		{"too many dimensions", chat.EmbedRequest{Inputs: texts("a"), Dimensions: 65}, "dimensions"},
		{"negative dimensions", chat.EmbedRequest{Inputs: texts("a"), Dimensions: -1}, "dimensions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Embed(context.Background(), tc.req)
			ce, ok := err.(*chat.Error)
			if !ok || ce.Code != chat.CodeInvalidArgument || ce.Param != tc.param {
				t.Fatalf("error %v, want invalid_argument naming %s", err, tc.param)
			}
		})
	}
	_, err := e.GenerateDeltas(context.Background(), userMsg("hi", 4), nil)
	if ce, ok := err.(*chat.Error); !ok || ce.Code != chat.CodeInvalidArgument || !strings.Contains(ce.Message, "does not support completions") {
		t.Fatalf("chat on an embedding model: %v", err)
	}
}

// A chat model refuses embeddings.
func TestEmbeddingsOnChatModelRefused(t *testing.T) {
	e := openStories(t, Config{Parallel: 1})
	_, err := e.Embed(context.Background(), chat.EmbedRequest{Inputs: texts("hi")})
	if ce, ok := err.(*chat.Error); !ok || ce.Code != chat.CodeInvalidArgument || !strings.Contains(ce.Message, "does not support embeddings") {
		t.Fatalf("embeddings on a chat model: %v", err)
	}
}

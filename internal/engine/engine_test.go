package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// storiesGolden is stories260K's greedy continuation of BOS, computed by an
// independent forward pass (see shared/models/README.md).
const storiesGolden = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. " +
	"One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n" +
	"Lily's mom said, \"Lily, let's go to"

func openStories(t testing.TB, cfg Config) *Engine {
	t.Helper()
	cfg.ModelPath = modeltest.Stories(t)
	if cfg.ContextPerSeq == 0 {
		cfg.ContextPerSeq = 512 // the model was trained with 512
	}
	// One thread: for a model this small, a second thread only adds
	// barrier waits, and on a loaded machine (go test runs packages in
	// parallel) a descheduled spinning thread makes every step wait for it.
	cfg.Threads = 1
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "engine", Level: hclog.Warn, Output: os.Stderr})
	e, err := Open(cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

func f32(v float32) *float32 { return &v }
func i64(v int64) *int64     { return &v }

// userMsg is a request whose plain rendering is exactly text.
func userMsg(text string, maxTokens int) Request {
	return Request{Request: chat.Request{
		Messages:    []chat.Message{{Role: chat.RoleUser, Content: text}},
		MaxTokens:   maxTokens,
		Temperature: f32(0),
	}}
}

func generate(t *testing.T, e *Engine, req Request) (string, chat.Result) {
	t.Helper()
	var b strings.Builder
	res, err := e.Generate(context.Background(), req, func(s string) error { b.WriteString(s); return nil })
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	return b.String(), res
}

func TestGreedyMatchesGolden(t *testing.T) {
	e := openStories(t, Config{Parallel: 2})
	// An empty user message renders to nothing: the model starts from BOS.
	text, res := generate(t, e, userMsg("", 80))
	if got := strings.TrimLeft(text, " "); got != storiesGolden {
		t.Fatalf("greedy text differs from the golden one\n got: %q\nwant: %q", got, storiesGolden)
	}
	if res.FinishReason != chat.FinishLength || res.CompletionTokens != 80 || res.PromptTokens != 1 {
		t.Fatalf("result = %+v, want length after 80 tokens from a 1-token prompt", res)
	}
}

func TestSeedReproducible(t *testing.T) {
	e := openStories(t, Config{Parallel: 2})
	req := userMsg("Once upon a time", 40)
	req.Temperature, req.Seed = f32(1), i64(1234)
	a, _ := generate(t, e, req)
	b, _ := generate(t, e, req)
	if a != b {
		t.Fatalf("same seed gave different text:\n%q\n%q", a, b)
	}
	if a == "" {
		t.Fatal("no text generated")
	}
}

func TestStopString(t *testing.T) {
	e := openStories(t, Config{Parallel: 1})
	req := userMsg("", 80)
	req.Stop = []string{"Lily"}
	text, res := generate(t, e, req)
	want := storiesGolden[:strings.Index(storiesGolden, "Lily")]
	if strings.TrimLeft(text, " ") != want || res.FinishReason != chat.FinishStop {
		t.Fatalf("got %q (%s), want %q (stop)", text, res.FinishReason, want)
	}
}

func TestMaxTokensGivesLength(t *testing.T) {
	e := openStories(t, Config{Parallel: 1})
	_, res := generate(t, e, userMsg("Once upon a time", 5))
	if res.FinishReason != chat.FinishLength || res.CompletionTokens != 5 {
		t.Fatalf("result = %+v, want length after 5 tokens", res)
	}
}

// TestConcurrentEqualsAlone checks that batching does not change results:
// each prompt decoded greedily next to seven others gives the text it gives
// alone.
func TestConcurrentEqualsAlone(t *testing.T) {
	e := openStories(t, Config{Parallel: 8})
	prompts := []string{
		"Once upon a time", "The cat", "Tom and Sue went", "One day, a big dog",
		"The sun was", "Lily had a red", "There was a little boy named", "The bird sang",
	}
	alone := make([]string, len(prompts))
	for i, p := range prompts {
		alone[i], _ = generate(t, e, userMsg(p, 48))
	}
	together := make([]string, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() { together[i], _ = generate(t, e, userMsg(p, 48)) })
	}
	wg.Wait()
	for i := range prompts {
		if alone[i] != together[i] {
			t.Errorf("prompt %q:\n alone:    %q\n together: %q", prompts[i], alone[i], together[i])
		}
	}
}

// TestCancelFreesSlot cancels a streaming request in the only slot: the
// queued request must then run, and after many cancels no slot stays busy
// and the KV cache is clean (the golden text still comes out).
func TestCancelFreesSlot(t *testing.T) {
	e := openStories(t, Config{Parallel: 1, QueueSize: 4})
	for i := range 30 {
		ctx, cancel := context.WithCancel(context.Background())
		first := make(chan struct{})
		var once sync.Once
		errc := make(chan error, 1)
		go func() {
			_, err := e.Generate(ctx, userMsg("Once upon a time", 400), func(string) error {
				once.Do(func() { close(first) })
				return nil
			})
			errc <- err
		}()
		select {
		case <-first:
		case <-time.After(30 * time.Second):
			t.Fatal("no first delta")
		}
		// Queued behind the running one, it starts only if the cancel frees the slot.
		done := make(chan error, 1)
		go func() {
			_, err := e.Generate(context.Background(), userMsg("The cat", 3), nil)
			done <- err
		}()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: cancelled request returned %v", i, err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: queued request: %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: queued request never ran: the slot was not freed", i)
		}
	}
	if st := e.Stats(); st.Busy != 0 || st.Queued != 0 {
		t.Fatalf("after cancels: %d busy, %d queued", st.Busy, st.Queued)
	}
	text, _ := generate(t, e, userMsg("", 80))
	if strings.TrimLeft(text, " ") != storiesGolden {
		t.Fatalf("after cancels the golden text changed: %q", text)
	}
}

func TestOverloaded(t *testing.T) {
	e := openStories(t, Config{Parallel: 1, QueueSize: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	var once sync.Once
	go e.Generate(ctx, userMsg("Once", 400), func(string) error { once.Do(func() { close(started) }); return nil })
	<-started
	go e.Generate(ctx, userMsg("Once", 400), nil) // fills the queue
	deadline := time.Now().Add(10 * time.Second)
	for e.Stats().Queued != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	_, err := e.Generate(ctx, userMsg("Once", 4), nil)
	if chat.Code(err) != chat.CodeOverloaded {
		t.Fatalf("third request: got %v, want overloaded", err)
	}
}

// TestQueueBoundHoldsInABurst: requests arriving together, before the loop
// has admitted any, are bounded by the free slots plus the queue, not let in
// because a slot looked free.
func TestQueueBoundHoldsInABurst(t *testing.T) {
	const parallel, queue, burst = 2, 2, 30
	e := openStories(t, Config{Parallel: parallel, QueueSize: queue})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var overloaded atomic.Int32
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range burst {
		wg.Go(func() {
			if _, err := e.Generate(ctx, userMsg("Once", 400), nil); chat.Code(err) == chat.CodeOverloaded {
				overloaded.Add(1)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st := e.Stats()
		if int(overloaded.Load())+st.Busy+st.Queued == burst {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got, want := int(overloaded.Load()), burst-parallel-queue; got < want {
		st := e.Stats()
		t.Fatalf("%d of %d requests refused, want at least %d (busy %d, queued %d)", got, burst, want, st.Busy, st.Queued)
	}
}

func TestContextOverflowRefused(t *testing.T) {
	e := openStories(t, Config{Parallel: 1, ContextPerSeq: 64})
	long := strings.Repeat("Once upon a time there was a cat. ", 40)
	_, err := e.Generate(context.Background(), userMsg(long, 8), nil)
	if chat.Code(err) != chat.CodeInvalidArgument || !strings.Contains(err.Error(), "at most 64") {
		t.Fatalf("got %v, want invalid_argument naming the 64-token limit", err)
	}
	_, err = e.Generate(context.Background(), userMsg("Once", 100), nil)
	if chat.Code(err) != chat.CodeInvalidArgument || !strings.Contains(err.Error(), "and max_tokens 100") {
		t.Fatalf("max_tokens past the context: got %v, want invalid_argument naming max_tokens", err)
	}
	// The field is named as the client named it.
	req := userMsg("Once", 100)
	req.MaxTokensParam = "max_completion_tokens"
	_, err = e.Generate(context.Background(), req, nil)
	if chat.Code(err) != chat.CodeInvalidArgument || !strings.Contains(err.Error(), "and max_completion_tokens 100") {
		t.Fatalf("max_completion_tokens past the context: got %v, want invalid_argument naming max_completion_tokens", err)
	}
}

func TestBadModelFilesRefused(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(modeltest.Stories(t))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"truncated.gguf": src[:len(src)/2],
		"text.gguf":      []byte("this is not a model\n"),
		"empty.gguf":     nil,
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(Config{ModelPath: p}); err == nil {
			t.Errorf("%s: opened, want an error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestInvalidSampling(t *testing.T) {
	e := openStories(t, Config{Parallel: 1})
	for _, req := range []Request{
		{Request: chat.Request{Messages: []chat.Message{{Role: "user", Content: "x"}}, Temperature: f32(3)}},
		{Request: chat.Request{Messages: []chat.Message{{Role: "user", Content: "x"}}, TopP: f32(-1)}},
		{Request: chat.Request{Messages: []chat.Message{{Role: "user", Content: "x"}}, RepeatPenalty: f32(0)}},
		{Request: chat.Request{Messages: []chat.Message{{Role: "user", Content: "x"}}, Stop: []string{"a", "b", "c", "d", "e"}}},
		{Request: chat.Request{}},
	} {
		if _, err := e.Generate(context.Background(), req, nil); chat.Code(err) != chat.CodeInvalidArgument {
			t.Errorf("%s: got %v, want invalid_argument", fmt.Sprint(req.Request), err)
		}
	}
}

func TestGoMaxProcs(t *testing.T) {
	n := runtime.NumCPU()
	for _, tc := range []struct{ threads, want int }{
		{0, 1},     // llama.cpp on every CPU: Go still gets one
		{n, 1},     // the same, said explicitly
		{n + 3, 1}, // more threads than CPUs
		{1, n - 1}, // Go gets every CPU but llama.cpp's one
	} {
		if tc.want < 1 {
			continue // a 1-CPU machine has no CPU to leave
		}
		if got := GoMaxProcs(tc.threads); got != tc.want {
			t.Errorf("GoMaxProcs(%d) on %d CPUs = %d, want %d", tc.threads, n, got, tc.want)
		}
	}
}

// TestStatsCreated checks that the engine reports the model file's time,
// which /v1/models shows as "created".
func TestStatsCreated(t *testing.T) {
	t.Parallel()
	e := openStories(t, Config{Parallel: 1})
	fi, err := os.Stat(modeltest.Stories(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Stats().Created; !got.Equal(fi.ModTime()) {
		t.Errorf("Stats().Created = %v, want the file's %v", got, fi.ModTime())
	}
}

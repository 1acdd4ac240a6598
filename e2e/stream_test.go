package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// prompts are the openings of the concurrent streams; each continues into a
// different story.
var prompts = []string{
	"Once upon a time",
	"One day, a little boy",
	"The sun was shining",
	"Tom and his dog",
	"There was a big tree",
	"Lily wanted to",
	"In the park",
	"The cat sat on",
}

// testConcurrentStreams has 32 clients stream at once, read the server-sent
// events as they are on the wire, and checks each stream on its own: well
// formed, one id, ended by [DONE], and the text of its own prompt — the
// greedy text the same prompt gets alone and without streaming, so a piece
// of another stream, a lost piece or a reordering shows.
func testConcurrentStreams(t *testing.T, m *mesh) {
	const (
		clients   = 32
		maxTokens = 96
	)
	want := make([]string, len(prompts))
	for i, p := range prompts {
		want[i] = m.complete(t, m.greedy(p, maxTokens)).Choices[0].Message.Content
	}

	before := scrape(t, m.Addr("inference-1"))
	start := make(chan struct{})
	results := make([]rawStream, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			body, _ := json.Marshal(map[string]any{
				"model":          m.model,
				"messages":       []map[string]string{{"role": "user", "content": prompts[i%len(prompts)]}},
				"max_tokens":     maxTokens,
				"temperature":    0,
				"stream":         true,
				"stream_options": map[string]bool{"include_usage": true},
			})
			<-start
			results[i] = m.rawStream(ctx, string(body))
		})
	}
	close(start)
	wg.Wait()

	// The streams were generated together, not one after another: the
	// engine decoded their tokens in shared steps. (96 tokens each: with a
	// few, on a loaded machine, each stream could end before the next
	// reached the engine.)
	after := scrape(t, m.Addr("inference-1"))
	steps := after.sum("slm_inference_decode_steps_total") - before.sum("slm_inference_decode_steps_total")
	tokens := after.sum("slm_inference_generation_tokens_total") - before.sum("slm_inference_generation_tokens_total")
	t.Logf("%v tokens in %v decode steps", tokens, steps)
	if tokens != clients*maxTokens || steps >= tokens/2 {
		t.Errorf("%v tokens in %v decode steps: the streams did not run concurrently", tokens, steps)
	}

	ids := map[string]int{}
	for i, s := range results {
		for _, p := range s.check(m.model, want[i%len(prompts)], maxTokens) {
			t.Errorf("stream %d (prompt %q): %s", i, prompts[i%len(prompts)], p)
		}
		if len(s.chunks) > 0 {
			if j, dup := ids[s.chunks[0].ID]; dup {
				t.Errorf("streams %d and %d share the id %s", j, i, s.chunks[0].ID)
			}
			ids[s.chunks[0].ID] = i
		}
	}
}

// rawStream is a streamed chat completion as read from the wire.
type rawStream struct {
	status      int
	contentType string
	chunks      []rawChunk
	done        bool // the last event was "data: [DONE]", followed by the end of the body
	err         error
}

type rawChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// rawStream posts a streamed chat request and reads its events strictly:
// every event is one "data: " line and a blank line.
func (m *mesh) rawStream(ctx context.Context, body string) rawStream {
	var s rawStream
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL()+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		s.err = err
		return s
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.err = err
		return s
	}
	defer resp.Body.Close()
	s.status, s.contentType = resp.StatusCode, resp.Header.Get("Content-Type")
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		s.err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
		return s
	}
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		if errors.Is(err, io.EOF) && line == "" {
			if !s.done {
				s.err = errors.New("the stream ended without data: [DONE]")
			}
			return s
		}
		if err != nil {
			s.err = fmt.Errorf("read: %w", err)
			return s
		}
		if s.done {
			s.err = fmt.Errorf("%q after data: [DONE]", line)
			return s
		}
		data, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: ")
		if !ok {
			s.err = fmt.Errorf("line %q is not a data line", line)
			return s
		}
		if blank, err := r.ReadString('\n'); err != nil || blank != "\n" {
			s.err = fmt.Errorf("event %q not followed by a blank line but %q (%v)", data, blank, err)
			return s
		}
		if data == "[DONE]" {
			s.done = true
			continue
		}
		var c rawChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			s.err = fmt.Errorf("event %q: %w", data, err)
			return s
		}
		if c.Error != nil {
			s.err = fmt.Errorf("error event %s", c.Error)
			return s
		}
		s.chunks = append(s.chunks, c)
	}
}

// check lists what is wrong with s as the stream of wantText from model,
// generated with maxTokens.
func (s rawStream) check(model, wantText string, maxTokens int) []string {
	if s.err != nil {
		return []string{s.err.Error()}
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if !strings.HasPrefix(s.contentType, "text/event-stream") {
		bad("Content-Type %q", s.contentType)
	}
	// role, text..., finish, usage
	if len(s.chunks) < 4 {
		return append(problems, fmt.Sprintf("only %d chunks", len(s.chunks)))
	}
	id := s.chunks[0].ID
	if !strings.HasPrefix(id, "chatcmpl-") {
		bad("id %q", id)
	}
	var text strings.Builder
	finishAt := -1
	for i, c := range s.chunks {
		if c.ID != id || c.Object != "chat.completion.chunk" || c.Model != model {
			bad("chunk %d: id %q object %q model %q, the stream began with id %q", i, c.ID, c.Object, c.Model, id)
		}
		last := i == len(s.chunks)-1
		if last {
			if len(c.Choices) != 0 || c.Usage == nil {
				bad("the last chunk is not the usage chunk: %+v", c)
			}
			continue
		}
		if len(c.Choices) != 1 || c.Choices[0].Index != 0 {
			bad("chunk %d has %d choices", i, len(c.Choices))
			continue
		}
		ch := c.Choices[0]
		if i == 0 && ch.Delta.Role != "assistant" {
			bad("the first chunk's role is %q", ch.Delta.Role)
		}
		if ch.FinishReason != nil {
			if finishAt >= 0 {
				bad("a second finish_reason in chunk %d", i)
			}
			finishAt = i
		} else if finishAt >= 0 {
			bad("chunk %d after the finish_reason", i)
		}
		text.WriteString(ch.Delta.Content)
	}
	if finishAt != len(s.chunks)-2 {
		bad("finish_reason in chunk %d of %d", finishAt, len(s.chunks))
	} else if r := *s.chunks[finishAt].Choices[0].FinishReason; r != "length" {
		bad("finish_reason %q, want length", r)
	}
	if u := s.chunks[len(s.chunks)-1].Usage; u != nil &&
		(u.CompletionTokens != maxTokens || u.PromptTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens) {
		bad("usage %+v, want %d completion tokens", *u, maxTokens)
	}
	if text.String() != wantText {
		bad("text %q\nwant %q", text.String(), wantText)
	}
	return problems
}

// testDisconnectFreesSlot starts a long generation, hangs up while it runs
// and watches the inference instance's slot: it must be free within a
// second, and the inference must count the generation as cancelled, having
// generated fewer tokens than asked for. A streaming client hangs up after
// its first text; a non-streaming one while its slot is busy.
func testDisconnectFreesSlot(t *testing.T, m *mesh) {
	for _, stream := range []bool{true, false} {
		name := "NonStreaming"
		if stream {
			name = "Streaming"
		}
		t.Run(name, func(t *testing.T) {
			const maxTokens = 1000
			inf := m.Addr("inference-1")
			if !eventually(10*time.Second, 20*time.Millisecond, func() bool { return m.inferenceHealth(t, "inference-1").Busy == 0 }) {
				t.Fatal("the inference instance is busy before the test")
			}
			before := scrape(t, inf)

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := m.client()
			busy := 0
			if stream {
				s := readStream(c.Chat.Completions.NewStreaming(ctx, m.greedy(story, maxTokens)), func(string) bool {
					busy = m.inferenceHealth(t, "inference-1").Busy
					cancel() // the client goes away
					return false
				})
				if s.text == "" {
					t.Fatalf("no text before the disconnect: %v", s.err)
				}
			} else {
				done := make(chan error, 1)
				go func() {
					_, err := c.Chat.Completions.New(ctx, m.greedy(story, maxTokens))
					done <- err
				}()
				eventually(10*time.Second, 5*time.Millisecond, func() bool {
					busy = m.inferenceHealth(t, "inference-1").Busy
					return busy > 0
				})
				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Fatalf("the request ended with %v before the client hung up", err)
				}
			}
			hungUp := time.Now()
			if busy != 1 {
				t.Fatalf("%d slots busy during the generation, want 1", busy)
			}
			if !eventually(time.Second, 10*time.Millisecond, func() bool { return m.inferenceHealth(t, "inference-1").Busy == 0 }) {
				t.Fatalf("the slot is still busy %s after the client hung up", time.Since(hungUp).Round(time.Millisecond))
			}
			t.Logf("slot freed %s after the client hung up", time.Since(hungUp).Round(time.Millisecond))

			const canceled = `code="canceled"`
			var after metrics
			if !eventually(5*time.Second, 20*time.Millisecond, func() bool {
				after = scrape(t, inf)
				return after.sum("slm_inference_requests_total", canceled) > before.sum("slm_inference_requests_total", canceled)
			}) {
				t.Errorf("the inference did not count a cancelled generation: %v", after.sum("slm_inference_requests_total", canceled))
			}
			if n := after.sum("slm_inference_generation_tokens_total") - before.sum("slm_inference_generation_tokens_total"); n >= maxTokens {
				t.Errorf("the inference generated %v tokens for a client that hung up midway", n)
			}

			// The mesh still answers.
			if res := m.complete(t, m.greedy(story, 4)); res.Usage.CompletionTokens != 4 {
				t.Errorf("after the disconnect: %s", res.RawJSON())
			}
		})
	}
}

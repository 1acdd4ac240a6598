package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// parsedStream is what a client reads from a stream.
type parsedStream struct {
	chunks []ChatCompletionChunk
	text   string // the deltas' contents, joined
	done   bool   // the stream ended with [DONE]
	err    *Error // the stream ended with an error event
}

// parseStream reads an event stream strictly: every event is one
// "data: " line followed by a blank line, and nothing follows the end.
func parseStream(b []byte) (parsedStream, error) {
	var p parsedStream
	rest := string(b)
	for rest != "" {
		if p.done || p.err != nil {
			return p, fmt.Errorf("data after the end of the stream: %q", rest)
		}
		event, after, ok := strings.Cut(rest, "\n\n")
		if !ok {
			return p, fmt.Errorf("unterminated event %q", rest)
		}
		rest = after
		data, ok := strings.CutPrefix(event, "data: ")
		if !ok || strings.ContainsAny(data, "\r\n") {
			return p, fmt.Errorf("event %q is not a single data line", event)
		}
		switch {
		case data == "[DONE]":
			p.done = true
		case strings.HasPrefix(data, `{"error":`):
			p.err = &Error{}
			if err := json.Unmarshal([]byte(data), p.err); err != nil {
				return p, fmt.Errorf("error event %q: %w", data, err)
			}
		default:
			var c ChatCompletionChunk
			if err := json.Unmarshal([]byte(data), &c); err != nil {
				return p, fmt.Errorf("chunk %q: %w", data, err)
			}
			p.chunks = append(p.chunks, c)
			for _, ch := range c.Choices {
				if ch.Delta.Content != nil {
					p.text += *ch.Delta.Content
				}
			}
		}
	}
	return p, nil
}

func TestSetStreamHeaders(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	SetStreamHeaders(h)
	want := map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"Connection":        "keep-alive",
		"X-Accel-Buffering": "no",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

// recorder is the response side of a stream: the bytes written and, at
// each flush, how many of them there were.
type recorder struct {
	bytes.Buffer
	flushedAt []int
}

func (r *recorder) flush() { r.flushedAt = append(r.flushedAt, r.Len()) }

func TestStreamWriterBytes(t *testing.T) {
	t.Parallel()
	const head = `data: {"id":"chatcmpl-test","object":"chat.completion.chunk","created":1700000000,"model":"tiny",`
	res := chat.Result{FinishReason: chat.FinishLength, PromptTokens: 4, CompletionTokens: 2}

	tests := []struct {
		name         string
		includeUsage bool
		run          func(s *StreamWriter)
		want         []string // the events, each flushed on its own
	}{
		{
			name:         "whole stream with usage",
			includeUsage: true,
			run: func(s *StreamWriter) {
				s.Start()
				s.Delta("Hello")
				s.Delta("") // writes nothing
				s.Delta(" <wörld> & \"quotes\"\n\tnew\u2028line")
				s.Finish(res)
				s.Done()
			},
			want: []string{
				// With include_usage, every chunk before the usage chunk
				// has "usage": null, as OpenAI sends it.
				head + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}],"usage":null}` + "\n\n",
				head + `"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null,"logprobs":null}],"usage":null}` + "\n\n",
				head + `"choices":[{"index":0,"delta":{"content":" <wörld> & \"quotes\"\n\tnew\u2028line"},"finish_reason":null,"logprobs":null}],"usage":null}` + "\n\n",
				head + `"choices":[{"index":0,"delta":{},"finish_reason":"length","logprobs":null}],"usage":null}` + "\n\n",
				head + `"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6,"prompt_tokens_details":{"cached_tokens":0}}}` + "\n\n",
				"data: [DONE]\n\n",
			},
		},
		{
			name: "Delta starts the stream; no usage unless asked",
			run: func(s *StreamWriter) {
				s.Delta("x")
				s.Finish(res)
				s.Done()
			},
			want: []string{
				head + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}]}` + "\n\n",
				head + `"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null,"logprobs":null}]}` + "\n\n",
				head + `"choices":[{"index":0,"delta":{},"finish_reason":"length","logprobs":null}]}` + "\n\n",
				"data: [DONE]\n\n",
			},
		},
		{
			name: "error midway ends the stream",
			run: func(s *StreamWriter) {
				s.Start()
				s.Delta("x")
				s.Error(Timeout(""))
				s.Delta("y")
				s.Finish(res)
				s.Done()
				s.Error(Internal())
			},
			want: []string{
				head + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}]}` + "\n\n",
				head + `"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null,"logprobs":null}]}` + "\n\n",
				`data: {"error":{"message":"The request timed out.","type":"server_error","param":null,"code":"timeout"}}` + "\n\n",
			},
		},
		{
			name: "error before start",
			run: func(s *StreamWriter) {
				s.Error(Overloaded("busy", 1))
				s.Done()
			},
			want: []string{
				`data: {"error":{"message":"busy","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}` + "\n\n",
			},
		},
		{
			name: "nothing after Done",
			run: func(s *StreamWriter) {
				s.Start()
				s.Start()
				s.Done()
				s.Delta("late")
				s.Finish(res)
				s.Done()
				s.Error(Internal())
			},
			want: []string{
				head + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}]}` + "\n\n",
				"data: [DONE]\n\n",
			},
		},
		{
			name: "deltas after Finish are dropped",
			run: func(s *StreamWriter) {
				s.Finish(res)
				s.Delta("late")
				s.Finish(res)
				s.Done()
			},
			want: []string{
				head + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}]}` + "\n\n",
				head + `"choices":[{"index":0,"delta":{},"finish_reason":"length","logprobs":null}]}` + "\n\n",
				"data: [DONE]\n\n",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var rec recorder
			tt.run(NewStreamWriter(&rec, rec.flush, testMeta, tt.includeUsage))

			if got, want := rec.String(), strings.Join(tt.want, ""); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
			// Each event is flushed as soon as it is written.
			var ends []int
			n := 0
			for _, ev := range tt.want {
				n += len(ev)
				ends = append(ends, n)
			}
			if fmt.Sprint(rec.flushedAt) != fmt.Sprint(ends) {
				t.Errorf("flushed at %v, want after each event at %v", rec.flushedAt, ends)
			}
			if _, err := parseStream(rec.Bytes()); err != nil {
				t.Errorf("the stream does not parse back: %v", err)
			}
		})
	}
}

func TestStreamWriterParsesBack(t *testing.T) {
	t.Parallel()
	deltas := []string{"Once", " upon", " a time\n", "\"quoted\"", " </script>", " 日本語", " 🙂", "\\", "\x00\x1f"}
	var buf bytes.Buffer
	s := NewStreamWriter(&buf, nil, testMeta, true)
	for _, d := range deltas {
		if err := s.Delta(d); err != nil {
			t.Fatal(err)
		}
	}
	res := chat.Result{FinishReason: chat.FinishStop, PromptTokens: 1, CompletionTokens: len(deltas)}
	if err := s.Finish(res); err != nil {
		t.Fatal(err)
	}
	if err := s.Done(); err != nil {
		t.Fatal(err)
	}

	p, err := parseStream(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(deltas, ""); p.text != want {
		t.Errorf("text %q, want %q", p.text, want)
	}
	if !p.done || p.err != nil {
		t.Errorf("done %v err %v, want a clean end", p.done, p.err)
	}
	for _, c := range p.chunks {
		if c.ID != testMeta.ID || c.Created != testMeta.Created || c.Model != testMeta.Model || c.Object != ObjectChatCompletionChunk {
			t.Errorf("chunk %+v does not carry the stream's meta", c)
		}
	}
	last := p.chunks[len(p.chunks)-1]
	if last.Usage == nil || last.Usage.TotalTokens != 1+len(deltas) || len(last.Choices) != 0 {
		t.Errorf("last chunk %+v, want the usage chunk", last)
	}
}

// failingWriter fails every write after the first n.
type failingWriter struct {
	n      int
	writes int
}

var errGone = errors.New("client gone")

func (w *failingWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.writes > w.n {
		return 0, errGone
	}
	return len(p), nil
}

func TestStreamWriterWriteError(t *testing.T) {
	t.Parallel()
	w := &failingWriter{n: 1}
	flushes := 0
	s := NewStreamWriter(w, func() { flushes++ }, testMeta, false)
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := s.Delta("a"); !errors.Is(err, errGone) {
		t.Fatalf("Delta: %v, want %v", err, errGone)
	}
	// The connection is broken: every later call reports it and writes
	// nothing more.
	for name, call := range map[string]func() error{
		"Start":  s.Start,
		"Delta":  func() error { return s.Delta("b") },
		"Finish": func() error { return s.Finish(chat.Result{}) },
		"Error":  func() error { return s.Error(Internal()) },
		"Done":   s.Done,
	} {
		if err := call(); !errors.Is(err, errGone) {
			t.Errorf("%s after a failed write: %v, want %v", name, err, errGone)
		}
	}
	if w.writes != 2 || flushes != 1 {
		t.Errorf("%d writes and %d flushes, want 2 and 1", w.writes, flushes)
	}
}

// TestDecodeChunk reads back what a StreamWriter writes, as a client of
// the gateway does, and refuses data of neither shape.
func TestDecodeChunk(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	s := NewStreamWriter(&buf, nil, testMeta, true)
	if err := s.Delta("hi"); err != nil {
		t.Fatal(err)
	}
	if err := s.Error(FromError(&chat.Error{Code: chat.CodeOverloaded, Message: "The queue is full."})); err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, ev := range strings.SplitAfter(buf.String(), "\n\n") {
		if data, ok := strings.CutPrefix(strings.TrimSpace(ev), "data: "); ok {
			events = append(events, data)
		}
	}
	if len(events) != 3 {
		t.Fatalf("events %q, want role, text and error", events)
	}
	c, err := DecodeChunk([]byte(events[1]))
	if err != nil || c.ID != testMeta.ID || c.Object != ObjectChatCompletionChunk || len(c.Choices) != 1 ||
		c.Choices[0].Delta.Content == nil || *c.Choices[0].Delta.Content != "hi" || c.Usage != nil {
		t.Errorf("text event %s: %+v, %v", events[1], c, err)
	}
	var e *Error
	if _, err := DecodeChunk([]byte(events[2])); !errors.As(err, &e) || e.Message != "The queue is full." || e.Type != TypeRateLimit {
		t.Errorf("error event %s: %v", events[2], err)
	}
	if c, err := DecodeChunk([]byte(`{"id":"c","object":"chat.completion.chunk","choices":[],"error":null}`)); err != nil || c.ID != "c" {
		t.Errorf("a null error is no error: %+v, %v", c, err)
	}
	for _, data := range []string{`{"id":`, `[]`, `{"error":"boom"}`, `{"choices":{}}`} {
		if _, err := DecodeChunk([]byte(data)); err == nil || errors.As(err, &e) {
			t.Errorf("%s: %v, want a decoding error", data, err)
		}
	}
}

package openai

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// SetStreamHeaders sets the headers of a server-sent events response. Call it
// before the status is written.
func SetStreamHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	// nginx buffers responses by default, which would hold tokens back.
	h.Set("X-Accel-Buffering", "no")
}

// StreamWriter writes a streamed chat completion as server-sent events, one
// "data: <json>\n\n" event per chunk, each flushed at once so the client sees
// tokens as they come.
//
// A stream goes Start, Delta…, Finish, Done; Delta and Finish start it if
// needed. Error ends it at any point with an error event instead. Once Done
// or Error has been written, further calls write nothing and return nil, so a
// handler may `defer w.Done()` safely. After a failed write, every call
// returns that write's error: the client is gone.
//
// A StreamWriter is not safe for concurrent use.
type StreamWriter struct {
	w            io.Writer
	flush        func()
	meta         CompletionMeta
	includeUsage bool

	started  bool
	calls    int // tool calls sent, the next one's index
	finished bool
	ended    bool
	err      error
	buf      bytes.Buffer
}

// NewStreamWriter returns a writer of meta's stream to w. flush, usually the
// response's http.Flusher.Flush, is called after each event; it may be nil.
// includeUsage adds the usage chunk that stream_options.include_usage asks
// for.
func NewStreamWriter(w io.Writer, flush func(), meta CompletionMeta, includeUsage bool) *StreamWriter {
	if flush == nil {
		flush = func() {}
	}
	return &StreamWriter{w: w, flush: flush, meta: meta, includeUsage: includeUsage}
}

// Start writes the first chunk, which names the assistant role. It does
// nothing if the stream has started.
func (s *StreamWriter) Start() error {
	if s.err != nil || s.started || s.ended {
		return s.err
	}
	s.started = true
	return s.chunk(RoleChunk(s.meta))
}

// Send writes a piece of generated text with the logprobs of its tokens,
// then the tool calls it completes (ToolCallChunks), numbered on from
// those sent before. An empty delta writes nothing.
func (s *StreamWriter) Send(d chat.Delta) error {
	if err := s.Start(); err != nil {
		return err
	}
	if s.finished || s.ended {
		return nil
	}
	if d.Content != "" || len(d.Logprobs) > 0 {
		if err := s.chunk(DeltaChunk(s.meta, d)); err != nil {
			return err
		}
	}
	for _, call := range d.ToolCalls {
		for _, c := range ToolCallChunks(s.meta, s.calls, call) {
			if err := s.chunk(c); err != nil {
				return err
			}
		}
		s.calls++
	}
	return nil
}

// Finish writes the finish reason and, if asked for, the usage chunk. Done
// must still follow.
func (s *StreamWriter) Finish(res chat.Result) error {
	if err := s.Start(); err != nil {
		return err
	}
	if s.finished || s.ended {
		return nil
	}
	s.finished = true
	if err := s.chunk(FinishChunk(s.meta, res)); err != nil {
		return err
	}
	if s.includeUsage {
		return s.chunk(UsageChunk(s.meta, res))
	}
	return nil
}

// Error writes e as an error event, as the OpenAI API does when a stream
// fails midway, and ends the stream without [DONE]: the SDKs raise the
// error on reading it.
func (s *StreamWriter) Error(e *Error) error {
	if s.err != nil || s.ended {
		return s.err
	}
	s.ended = true
	return s.event(e)
}

// Done writes the closing "data: [DONE]" event.
func (s *StreamWriter) Done() error {
	if s.err != nil || s.ended {
		return s.err
	}
	s.ended = true
	return s.write([]byte("data: [DONE]\n\n"))
}

// chunkWithUsage is a chunk whose usage is written even when null: its
// Usage hides the embedded chunk's, which is omitted when empty.
type chunkWithUsage struct {
	ChatCompletionChunk
	Usage *Usage `json:"usage"`
}

// chunk writes c as an event. When the client asked for usage, every chunk
// carries "usage" (null until the usage chunk), as OpenAI's do.
func (s *StreamWriter) chunk(c ChatCompletionChunk) error {
	if s.includeUsage {
		return s.event(chunkWithUsage{c, c.Usage})
	}
	return s.event(c)
}

// event writes v as one event's JSON data.
func (s *StreamWriter) event(v any) error {
	s.buf.Reset()
	s.buf.WriteString("data: ")
	enc := json.NewEncoder(&s.buf)
	// Generated text often holds <, > and &; escaping them is for HTML, not
	// for an event stream, and only makes the stream harder to read.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Our chunk types always encode; keep the stream well-formed anyway.
		s.err = err
		return err
	}
	// Encode has ended the data line with a newline (JSON escapes those
	// within strings, so the data is one line); a blank line ends the event.
	s.buf.WriteByte('\n')
	return s.write(s.buf.Bytes())
}

// write sends one whole event in one Write and flushes it.
func (s *StreamWriter) write(event []byte) error {
	if _, err := s.w.Write(event); err != nil {
		s.err = err
		return err
	}
	s.flush()
	return nil
}

// DecodeChunk reads the data of one stream event as a client does: a
// chunk, or the error event a failed stream ends with, returned as an
// *Error (find it with errors.As). Any other error means the data is not
// JSON of either shape. Go clients of the gateway read streams with it.
func DecodeChunk(data []byte) (ChatCompletionChunk, error) {
	var ev struct {
		ChatCompletionChunk
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return ChatCompletionChunk{}, err
	}
	if isNull(ev.Error) {
		return ev.ChatCompletionChunk, nil
	}
	e := &Error{}
	if err := json.Unmarshal(data, e); err != nil {
		return ChatCompletionChunk{}, err
	}
	return ChatCompletionChunk{}, e
}

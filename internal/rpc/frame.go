package rpc

import (
	"encoding/json"
	"strconv"
	"sync"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Frame types, the "type" field of every frame.
const (
	frameCall   = "call"   // client → server: start a call
	frameChunk  = "chunk"  // server → client: one streamed piece of a call's output
	frameResult = "result" // server → client: the call succeeded; last frame of the call
	frameError  = "error"  // server → client: the call failed; last frame of the call
	frameCancel = "cancel" // client → server: the caller gave up; cancel the handler
	framePing   = "ping"   // either way: are you there?
	framePong   = "pong"   // either way: the answer to a ping
)

// frame is one decoded frame. Which fields are set depends on Type; see
// docs/rpc.md. Frames are encoded by hand (frameBuf) and decoded with
// encoding/json.
type frame struct {
	Type      string `json:"type"`
	ID        uint64 `json:"id,omitempty"`
	Method    string `json:"method,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// The W3C trace context of a traced call (trace.go); optional, and
	// ignored by peers that predate it.
	TraceParent string          `json:"traceparent,omitempty"`
	TraceState  string          `json:"tracestate,omitempty"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	// Err is the failure an error frame carries: its fields (code,
	// message, …) are the frame's, decoded by the wire.
	Err *chat.Error `json:"-"`
}

// compactJSON is a payload that is already compact, valid JSON (the output of
// json.Marshal), so it is copied into a frame without another pass. The pool
// marshals a request once and may send it twice.
type compactJSON []byte

// frameBuf builds one encoded frame: a JSON object on one line, ending in
// '\n'. Writing the few fixed fields by hand, and payloads straight into the
// same buffer, saves the second pass json.Marshal would make over a
// json.RawMessage payload. frameBufs are pooled; the writer goroutine returns
// them after writing.
type frameBuf struct {
	b   []byte
	enc *json.Encoder // encodes payloads by appending to b
	// closing, when set, makes this a marker rather than a frame: the writer
	// closes the connection with this error when it reaches it.
	closing *chat.Error
}

// Write lets enc append to b.
func (f *frameBuf) Write(p []byte) (int, error) {
	f.b = append(f.b, p...)
	return len(p), nil
}

// maxPooledFrame keeps the odd huge frame from pinning memory in the pool.
const maxPooledFrame = 64 << 10

var framePool = sync.Pool{New: func() any {
	f := &frameBuf{b: make([]byte, 0, 512)}
	f.enc = json.NewEncoder(f)
	f.enc.SetEscapeHTML(false)
	return f
}}

// newFrame starts a frame of type typ for call id (0: no id).
func newFrame(typ string, id uint64) *frameBuf {
	f := framePool.Get().(*frameBuf)
	f.b = append(f.b[:0], `{"type":"`...)
	f.b = append(f.b, typ...)
	f.b = append(f.b, '"')
	if id != 0 {
		f.b = append(f.b, `,"id":`...)
		f.b = strconv.AppendUint(f.b, id, 10)
	}
	return f
}

func (f *frameBuf) release() {
	if cap(f.b) <= maxPooledFrame {
		framePool.Put(f)
	}
}

func (f *frameBuf) key(k string) {
	f.b = append(f.b, ',', '"')
	f.b = append(f.b, k...)
	f.b = append(f.b, '"', ':')
}

// str adds a string field.
func (f *frameBuf) str(k, v string) {
	f.key(k)
	if plainASCII(v) {
		f.b = append(f.b, '"')
		f.b = append(f.b, v...)
		f.b = append(f.b, '"')
		return
	}
	_ = f.enc.Encode(v) // a string always encodes
	f.b = f.b[:len(f.b)-1]
}

// int adds an integer field.
func (f *frameBuf) int(k string, v int64) {
	f.key(k)
	f.b = strconv.AppendInt(f.b, v, 10)
}

// value adds v, encoded as JSON, as field k. On error the frame is left as
// it was before the call.
func (f *frameBuf) value(k string, v any) error {
	mark := len(f.b)
	f.key(k)
	if c, ok := v.(compactJSON); ok {
		f.b = append(f.b, c...)
		return nil
	}
	if err := f.enc.Encode(v); err != nil {
		f.b = f.b[:mark]
		return err
	}
	f.b = f.b[:len(f.b)-1] // Encode ends with '\n'; frames are one line each
	return nil
}

// end closes the frame.
func (f *frameBuf) end() *frameBuf {
	f.b = append(f.b, '}', '\n')
	return f
}

// plainASCII reports whether s can be written inside JSON quotes as it is.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// errorFrame encodes the error frame that ends call id with err: the
// error's JSON fields (chat.Error.MarshalJSON) beside the frame's own.
func errorFrame(id uint64, err *chat.Error) *frameBuf {
	f := newFrame(frameError, id)
	mark := len(f.b)
	// An error always encodes, and always as an object with a code and a
	// message: its fields follow the frame's in place of its braces.
	_ = f.enc.Encode(err)
	f.b[mark] = ','
	f.b = f.b[:len(f.b)-2] // "}\n"
	return f.end()
}

// frameTooLarge is the error for a frame over the sender's limit.
func frameTooLarge(what string, n int, limit int64) error {
	return chat.Errorf(chat.CodeInvalidArgument, "%s frame of %d bytes exceeds the limit of %d bytes", what, n, limit)
}

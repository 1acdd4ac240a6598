package rpc

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestFrameRoundTrip proves hand-encoded frames are valid one-line JSON
// that decodes to what was written, including strings that need escaping.
func TestFrameRoundTrip(t *testing.T) {
	t.Parallel()
	method := "inference::run_inference"
	rid := "req-\"quoted\"\n\u00e9\u2028"
	payload := map[string]any{"text": "a\nb </script> \u00e9", "n": 3}

	f := newFrame(frameCall, 42)
	f.str("method", method)
	f.int("timeout_ms", 1500)
	f.str("request_id", rid)
	if err := f.value("payload", payload); err != nil {
		t.Fatal(err)
	}
	f.end()
	enc := string(f.b)
	f.release()

	if strings.Count(enc, "\n") != 1 || !strings.HasSuffix(enc, "\n") {
		t.Fatalf("frame is not one line: %q", enc)
	}
	var got frame
	if err := json.Unmarshal([]byte(enc), &got); err != nil {
		t.Fatalf("decode %q: %v", enc, err)
	}
	if got.Type != frameCall || got.ID != 42 || got.Method != method || got.TimeoutMS != 1500 || got.RequestID != rid {
		t.Errorf("decoded %+v from %q", got, enc)
	}
	var p map[string]any
	if err := json.Unmarshal(got.Payload, &p); err != nil || p["text"] != payload["text"] {
		t.Errorf("payload %s (%v)", got.Payload, err)
	}
}

// TestRawPayloadIsCompacted proves a json.RawMessage with newlines cannot
// break the one-frame-per-line rule.
func TestRawPayloadIsCompacted(t *testing.T) {
	t.Parallel()
	f := newFrame(frameChunk, 1)
	if err := f.value("payload", json.RawMessage("{\n  \"a\": 1\n}")); err != nil {
		t.Fatal(err)
	}
	f.end()
	defer f.release()
	if want := `{"type":"chunk","id":1,"payload":{"a":1}}` + "\n"; string(f.b) != want {
		t.Errorf("got %q, want %q", f.b, want)
	}
}

// TestDecodeBatch proves a message with several frames is split into them.
func TestDecodeBatch(t *testing.T) {
	t.Parallel()
	var got []string
	w := &wire{cfg: wireConfig{dispatch: func(f *frame) { got = append(got, f.Type+":"+string(f.Payload)) }}}
	msg := `{"type":"chunk","id":1,"payload":1}` + "\n" + `{"type":"chunk","id":1,"payload":2}` + "\n" + `{"type":"result","id":1,"payload":null}`
	if err := w.decode([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "chunk:1 chunk:2 result:null" {
		t.Errorf("got %v", got)
	}
	if err := w.decode([]byte(`{"type":`)); err == nil {
		t.Error("malformed frame accepted")
	}
}

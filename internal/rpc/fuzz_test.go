package rpc

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecodeFrames feeds any WebSocket message to the frame decoder, which
// must return an error or dispatch frames, never panic. What it dispatches
// must survive the trip back: every frame of a known type, encoded as this
// package encodes frames, is one line of JSON, and the message made of
// those lines (and the pings) decodes to the same frames — the fields their
// types carry, with payloads compacted. Seeds are in
// testdata/fuzz/FuzzDecodeFrames.
func FuzzDecodeFrames(f *testing.F) {
	f.Add([]byte(`{"type":"call","id":7,"method":"inference::run_inference","timeout_ms":29998,"request_id":"r-5d1c","payload":{"messages":[{"role":"user","content":"Hi"}],"max_tokens":16}}` + "\n" +
		`{"type":"ping"}` + "\n" + `{"type":"error","id":8,"code":"invalid_argument","message":"messages must not be empty"}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		frames, pings, err := decodeMessage(msg)
		if err != nil {
			return
		}
		var again []byte
		var sent []frame
		for _, fr := range frames {
			c, ok := carried(fr)
			if !ok {
				continue // an unknown type: peers ignore it, and never send one
			}
			enc := encodeFrame(c)
			if bytes.IndexByte(enc, '\n') != len(enc)-1 {
				t.Fatalf("%+v encodes to %q, not one line", c, enc)
			}
			again = append(again, enc...)
			sent = append(sent, c)
		}
		for range pings {
			again = append(again, pingFrame.b...)
		}
		decoded, pingsAgain, err := decodeMessage(again)
		if err != nil {
			t.Fatalf("re-encoded frames %q do not decode: %v", again, err)
		}
		if pingsAgain != pings || len(decoded) != len(sent) {
			t.Fatalf("%q decodes to %d frames and %d pings; re-encoded as %q, to %d and %d",
				msg, len(sent), pings, again, len(decoded), pingsAgain)
		}
		for i, want := range sent {
			got := *decoded[i]
			if !bytes.Equal(compact(t, want.Payload), got.Payload) {
				t.Fatalf("payload %s came back as %s", want.Payload, got.Payload)
			}
			want.Payload, got.Payload = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("frame %+v came back as %+v", want, got)
			}
		}
	})
}

// decodeMessage runs msg through a wire's decoder and returns the frames it
// dispatched and the number of pings it answered.
func decodeMessage(msg []byte) ([]*frame, int, error) {
	var frames []*frame
	// A ping is at least 15 bytes, so pongs never fill this queue.
	w := &wire{
		cfg: wireConfig{dispatch: func(f *frame) { frames = append(frames, f) }},
		out: make(chan *frameBuf, len(msg)/len(`{"type":"ping"}`)+1),
	}
	err := w.decode(msg)
	return frames, len(w.out), err
}

// carried returns the fields of f that its type carries (docs/rpc.md); a
// peer ignores the others. ok is false for a type peers never send.
func carried(f *frame) (c frame, ok bool) {
	c = frame{Type: f.Type, ID: f.ID}
	switch f.Type {
	case frameCall:
		c.Method, c.TimeoutMS, c.RequestID, c.Payload = f.Method, f.TimeoutMS, f.RequestID, f.Payload
		c.TraceParent, c.TraceState = f.TraceParent, f.TraceState
	case frameChunk, frameResult:
		c.Payload = f.Payload
	case frameError:
		c.Err = f.Err
	case frameCancel:
	default:
		return frame{}, false
	}
	return c, true
}

// encodeFrame encodes f as the client and server build frames.
func encodeFrame(f frame) []byte {
	var b *frameBuf
	if f.Type == frameError {
		b = errorFrame(f.ID, f.Err)
	} else {
		b = newFrame(f.Type, f.ID)
		if f.Method != "" {
			b.str("method", f.Method)
		}
		if f.TimeoutMS != 0 {
			b.int("timeout_ms", f.TimeoutMS)
		}
		if f.RequestID != "" {
			b.str("request_id", f.RequestID)
		}
		if f.TraceParent != "" {
			b.str("traceparent", f.TraceParent)
		}
		if f.TraceState != "" {
			b.str("tracestate", f.TraceState)
		}
		if f.Payload != nil {
			// A decoded payload is valid JSON, so it always encodes.
			_ = b.value("payload", f.Payload)
		}
		b.end()
	}
	defer b.release()
	return bytes.Clone(b.b)
}

// compact returns raw without insignificant space (nil stays nil).
func compact(t *testing.T, raw json.RawMessage) json.RawMessage {
	t.Helper()
	if raw == nil {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("decoded payload %q is not JSON: %v", raw, err)
	}
	return b.Bytes()
}

package openai

import (
	"bytes"
	"net/http"
	"testing"
	"unicode/utf8"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// fuzzLimits are small so that the fuzzer reaches the limit checks.
var fuzzLimits = Limits{MaxBodyBytes: 4096, MaxMessages: 4, MaxChars: 200}

// FuzzDecodeChatRequest checks that any body gives either a request that
// holds every promise of ChatCompletionRequest, or a 400/413 error, and
// never a panic; only a UTF-8 body is accepted. Its seeds are in
// testdata/fuzz/FuzzDecodeChatRequest.
func FuzzDecodeChatRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, e := DecodeChatRequest(body, fuzzLimits)
		if (r == nil) == (e == nil) {
			t.Fatalf("got request %v and error %v; want exactly one", r, e)
		}
		if e != nil {
			if e.Status != http.StatusBadRequest && e.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d: %v", e.Status, e)
			}
			if e.Message == "" || e.Type != TypeInvalidRequest {
				t.Fatalf("error %+v", e)
			}
			return
		}
		if !utf8.Valid(body) {
			t.Fatalf("accepted a body that is not UTF-8: %q", body)
		}
		checkRequest(t, r)
	})
}

// checkRequest fails t unless r is a valid request under fuzzLimits.
func checkRequest(t *testing.T, r *ChatCompletionRequest) {
	t.Helper()
	if n := len(r.Messages); n == 0 || n > fuzzLimits.MaxMessages {
		t.Fatalf("%d messages", n)
	}
	chars := 0
	for _, m := range r.Messages {
		switch m.Role {
		case chat.RoleSystem, chat.RoleUser, chat.RoleAssistant:
		default:
			t.Fatalf("role %q", m.Role)
		}
		if !utf8.ValidString(m.Content) {
			t.Fatalf("content %q is not UTF-8", m.Content)
		}
		chars += utf8.RuneCountInString(m.Content)
	}
	if chars > fuzzLimits.MaxChars {
		t.Fatalf("%d characters", chars)
	}
	if r.MaxTokens < 0 || (r.MaxTokens == 0) != (r.MaxTokensParam == "") {
		t.Fatalf("max tokens %d named %q", r.MaxTokens, r.MaxTokensParam)
	}
	inRange := func(name string, v *float32, lo, hi float32) {
		if v != nil && (*v < lo || *v > hi) {
			t.Fatalf("%s %v", name, *v)
		}
	}
	inRange("temperature", r.Temperature, 0, 2)
	inRange("top_p", r.TopP, 0, 1)
	inRange("presence_penalty", r.PresencePenalty, -2, 2)
	inRange("frequency_penalty", r.FrequencyPenalty, -2, 2)
	if r.TopP != nil && *r.TopP == 0 {
		t.Fatal("top_p 0")
	}
	if len(r.Stop) > chat.MaxStop {
		t.Fatalf("%d stop strings", len(r.Stop))
	}
	for _, s := range r.Stop {
		if s == "" || !utf8.ValidString(s) {
			t.Fatalf("stop string %q", s)
		}
	}
	if r.IncludeUsage && !r.Stream {
		t.Fatal("include_usage without stream")
	}
}

// FuzzStreamWriter checks that any text, cut into deltas anywhere, comes
// back whole from the event stream, with every event well-formed. Its seeds
// are in testdata/fuzz/FuzzStreamWriter.
func FuzzStreamWriter(f *testing.F) {
	f.Add("Hello, world!\n", uint8(3))
	f.Fuzz(func(t *testing.T, text string, cut uint8) {
		// Cut text into deltas of cut+1 bytes. The engine never splits a
		// UTF-8 character (see chat.Delta), so neither do we: a cut inside
		// one moves to the character's end.
		var deltas []string
		for rest := text; rest != ""; {
			n := min(int(cut)+1, len(rest))
			for n < len(rest) && !utf8.RuneStart(rest[n]) {
				n++
			}
			deltas = append(deltas, rest[:n])
			rest = rest[n:]
		}

		var buf bytes.Buffer
		s := NewStreamWriter(&buf, nil, testMeta, true)
		for _, d := range deltas {
			if err := s.Delta(d); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Finish(chat.Result{FinishReason: chat.FinishStop}); err != nil {
			t.Fatal(err)
		}
		if err := s.Done(); err != nil {
			t.Fatal(err)
		}

		p, err := parseStream(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if !p.done || p.err != nil {
			t.Fatalf("done %v, error %v", p.done, p.err)
		}
		// encoding/json writes invalid UTF-8 as U+FFFD; the engine only
		// sends valid text, so only that must come back byte for byte.
		if utf8.ValidString(text) && p.text != text {
			t.Fatalf("got back %q, want %q", p.text, text)
		}
	})
}

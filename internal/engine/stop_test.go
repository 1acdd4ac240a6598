package engine

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

func TestTextStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		stops   []string
		pieces  []string
		want    string
		stopped bool
	}{
		{"no stops", nil, []string{"Hel", "lo"}, "Hello", false},
		{"stop inside one piece", []string{"END"}, []string{"abcENDdef"}, "abc", true},
		{"stop across pieces", []string{"<end>"}, []string{"hi <e", "n", "d> more"}, "hi ", true},
		{"false start is released", []string{"<end>"}, []string{"a <e", "x"}, "a <ex", false},
		{"earliest stop wins", []string{"zz", "b"}, []string{"abzz"}, "a", true},
		{"utf8 split across pieces", nil, []string{"caf\xc3", "\xa9!"}, "café!", false},
		{"dangling utf8 dropped at end", nil, []string{"ok\xe2\x82"}, "ok", false},
		{"empty stop ignored", []string{""}, []string{"abc"}, "abc", false},
		{"stop is whole output", []string{"x"}, []string{"x"}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newTextStream(tc.stops)
			var got strings.Builder
			stopped := false
			for _, p := range tc.pieces {
				out, s := ts.push(p)
				if !utf8.ValidString(out) {
					t.Fatalf("emitted invalid UTF-8 %q", out)
				}
				got.WriteString(out)
				if s {
					stopped = true
					break
				}
			}
			if !stopped {
				got.WriteString(ts.flush())
			}
			if got.String() != tc.want || stopped != tc.stopped {
				t.Fatalf("got %q stopped=%v, want %q stopped=%v", got.String(), stopped, tc.want, tc.stopped)
			}
		})
	}
}

// FuzzTextStream checks, for any text cut into pieces of any size and any
// two stop strings, that
//   - the output is the text up to a stop string, or all of it when there
//     is none; no stop string that began earlier had ended by then (with two
//     stops the pieces decide which completes first, as tokens do);
//   - where the text and the stop strings are valid UTF-8 (as the API's
//     are), so is every delta: a client never sees half a character;
//   - the stream holds back at most a stop string's length less one, or an
//     unfinished character: its memory is bounded whatever it is fed.
//
// Seeds are in testdata/fuzz/FuzzTextStream.
func FuzzTextStream(f *testing.F) {
	f.Add("hello <end> world", "<end>", "", uint8(3))
	f.Fuzz(func(t *testing.T, text, stop1, stop2 string, cut uint8) {
		size := int(cut)%64 + 1
		stops := []string{stop1, stop2}
		ts := newTextStream(stops)
		limit := max(ts.maxStop-1, utf8.UTFMax-1)
		valid := utf8.ValidString(text) && utf8.ValidString(stop1) && utf8.ValidString(stop2)
		var got strings.Builder
		stopped := false
		for i := 0; i < len(text) && !stopped; i += size {
			out, s := ts.push(text[i:min(i+size, len(text))])
			if valid && !utf8.ValidString(out) {
				t.Fatalf("text %q: delta %q is not valid UTF-8", text, out)
			}
			if len(ts.pending) > limit {
				t.Fatalf("text %q, stops %q: %d bytes held back, at most %d expected", text, stops, len(ts.pending), limit)
			}
			got.WriteString(out)
			stopped = s
		}
		if !stopped {
			got.WriteString(ts.flush())
		}

		out := got.String()
		if !strings.HasPrefix(text, out) {
			t.Fatalf("text %q, stops %q: output %q is not a beginning of it", text, stops, out)
		}
		if !stopped {
			for _, stop := range stops {
				if stop != "" && strings.Contains(text, stop) {
					t.Fatalf("text %q: stop %q missed; output %q", text, stop, out)
				}
			}
			if valid && out != text {
				t.Fatalf("text %q, no stop: output %q", text, out)
			}
			return
		}
		end := -1 // where the stop string that ended the output ends
		for _, stop := range stops {
			if stop != "" && strings.HasPrefix(text[len(out):], stop) && (end < 0 || len(out)+len(stop) < end) {
				end = len(out) + len(stop)
			}
		}
		if end < 0 {
			t.Fatalf("text %q, stops %q, pieces of %d: output %q is not followed by a stop string", text, stops, size, out)
		}
		for _, stop := range stops {
			if i := strings.Index(text[:end], stop); stop != "" && i >= 0 && i < len(out) {
				t.Fatalf("text %q, pieces of %d: output %q, but stop %q had ended first", text, size, out, stop)
			}
		}
	})
}

// TestHeldLogprobs drives a textStream and heldLogprobs as the loop does (a
// token's entry is added, then its text pushed) and checks which entries
// each delta carries: never one ahead of its text, none for a stop string's
// tokens, and all of them when the text ends otherwise, a character left
// incomplete at the very end included (its tokens were generated).
func TestHeldLogprobs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		stops  []string
		pieces []string
		want   [][]string // the entries' texts, delta by delta; the last is the end's
	}{
		{"no stops", nil, []string{"a", "b"}, [][]string{{"a"}, {"b"}, nil}},
		{"held with a possible stop", []string{"<end>"}, []string{"x <", "e", "y"}, [][]string{{}, {}, {"x <", "e", "y"}, nil}},
		{"stop string's tokens dropped", []string{"."}, []string{"a", ".", "b"}, [][]string{{"a"}, nil}},
		{"straddling token kept", []string{"ily"}, []string{" named", " Lily", "."}, [][]string{{" named"}, {" Lily"}}},
		{"empty piece", nil, []string{"a", "", "b"}, [][]string{{"a"}, {""}, {"b"}, nil}},
		{"split character waits", nil, []string{"caf\xc3", "\xa9"}, [][]string{{}, {"caf\xc3", "\xa9"}, nil}},
		{"incomplete character at the end kept", nil, []string{"ok", "\xe2\x82"}, [][]string{{"ok"}, {}, {"\xe2\x82"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newTextStream(tc.stops)
			var h heldLogprobs
			var got [][]string
			texts := func(lps []chat.TokenLogprob) []string {
				out := []string{}
				for _, lp := range lps {
					out = append(out, string(lp.Bytes))
				}
				return out
			}
			stopped := false
			for _, p := range tc.pieces {
				h.add(chat.TokenLogprob{Bytes: []byte(p)}, ts.pushed+len(p))
				if _, stopped = ts.push(p); stopped {
					break
				}
				got = append(got, texts(h.settled(ts.emitted)))
			}
			if !stopped {
				ts.flush()
			}
			end := texts(h.final(ts.kept()))
			if len(end) == 0 {
				end = nil
			}
			got = append(got, end)
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Errorf("entries by delta %q, want %q", got, tc.want)
			}
		})
	}
}

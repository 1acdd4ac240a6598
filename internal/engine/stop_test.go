package engine

import (
	"strings"
	"testing"
	"unicode/utf8"
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

// FuzzTextStream checks that for any split of any text the emitted output is
// valid UTF-8 where the input is, never contains a stop string, and equals
// the input cut at the first stop string.
func FuzzTextStream(f *testing.F) {
	f.Add("hello <end> world", "<end>", 3)
	f.Add("caf\xc3\xa9 au lait", "lait", 1)
	f.Add("aaaaab", "aab", 2)
	f.Fuzz(func(t *testing.T, text, stop string, chunk int) {
		if chunk <= 0 || chunk > 64 {
			chunk = 1 + (chunk&63+64)%64
		}
		ts := newTextStream([]string{stop})
		var got strings.Builder
		stopped := false
		for i := 0; i < len(text) && !stopped; i += chunk {
			out, s := ts.push(text[i:min(i+chunk, len(text))])
			got.WriteString(out)
			stopped = s
		}
		if !stopped {
			got.WriteString(ts.flush())
		}
		want := text
		if stop != "" {
			if i := strings.Index(text, stop); i >= 0 {
				want = text[:i]
			}
		}
		if utf8.ValidString(text) && got.String() != want {
			t.Fatalf("text %q stop %q chunk %d: got %q want %q", text, stop, chunk, got.String(), want)
		}
		if stop != "" && strings.Contains(got.String(), stop) {
			t.Fatalf("output %q contains stop %q", got.String(), stop)
		}
	})
}

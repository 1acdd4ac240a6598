package engine

import (
	"strings"
	"unicode/utf8"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// textStream turns the pieces of text that tokens decode to into the deltas
// a client may see. It holds back two kinds of text until they are settled:
//   - an incomplete UTF-8 sequence at the end (a token may end mid-character),
//   - a tail that could still be the start of a stop string, since a stop
//     string may span token boundaries.
//
// Stop strings themselves are never emitted.
type textStream struct {
	stops   []string
	pending string // decoded but not yet emitted
	maxStop int    // length of the longest stop string
	pushed  int    // bytes pushed so far
	emitted int    // bytes emitted so far: pushed less pending and what a stop cut off
	stopped bool   // a stop string ended the text
}

func newTextStream(stops []string) *textStream {
	ts := &textStream{}
	for _, s := range stops {
		if s == "" {
			continue
		}
		ts.stops = append(ts.stops, s)
		ts.maxStop = max(ts.maxStop, len(s))
	}
	return ts
}

// push adds decoded text. It returns the text that is now safe to emit and
// whether a stop string was found; after a stop, the stream must not be used.
func (ts *textStream) push(piece string) (emit string, stopped bool) {
	ts.pending += piece
	ts.pushed += len(piece)

	// Earliest stop string wins; the text before it is the end of the output.
	cut := -1
	for _, s := range ts.stops {
		if i := strings.Index(ts.pending, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		emit = ts.pending[:cut]
		ts.pending = ""
		ts.stopped = true
		ts.emitted += len(emit)
		return emit, true
	}

	keep := ts.heldTail()
	emit = ts.pending[:len(ts.pending)-keep]
	ts.pending = ts.pending[len(ts.pending)-keep:]
	ts.emitted += len(emit)
	return emit, false
}

// flush returns what is still held back, at the end of a generation that did
// not stop on a stop string. An incomplete UTF-8 sequence left at the very end
// is dropped: it cannot be turned into a valid character.
func (ts *textStream) flush() string {
	out := ts.pending
	ts.pending = ""
	if n := incompleteUTF8Suffix(out); n > 0 {
		out = out[:len(out)-n]
	}
	ts.emitted += len(out)
	return out
}

// kept is, once the text has ended, how much of it the answer stands for:
// up to the cut after a stop string, whose text is left out; otherwise all
// that was pushed (a character left incomplete at the very end is dropped
// from the text, but its tokens were generated and are counted).
func (ts *textStream) kept() int {
	if ts.stopped {
		return ts.emitted
	}
	return ts.pushed
}

// heldTail is how many bytes at the end of pending must wait for more text.
func (ts *textStream) heldTail() int {
	keep := incompleteUTF8Suffix(ts.pending)
	// The longest suffix of pending that is a proper prefix of a stop string.
	for _, s := range ts.stops {
		for n := min(len(s)-1, len(ts.pending)); n > keep; n-- {
			if strings.HasSuffix(ts.pending, s[:n]) {
				keep = n
				break
			}
		}
	}
	return keep
}

// incompleteUTF8Suffix returns the length of a trailing UTF-8 sequence that
// has begun but is not complete yet (0 if the text ends on a boundary).
func incompleteUTF8Suffix(s string) int {
	// A UTF-8 sequence is at most 4 bytes: look at the last 3 for its start.
	for i := 1; i <= 3 && i <= len(s); i++ {
		b := s[len(s)-i]
		if b < utf8.RuneSelf {
			return 0 // ASCII: complete
		}
		if utf8.RuneStart(b) {
			if utf8.FullRuneInString(s[len(s)-i:]) {
				return 0
			}
			return i
		}
	}
	return 0
}

// heldLogprobs keeps each generated token's logprob entry until the token's
// text has been emitted, so that a delta carries the entries of its own
// text and the tokens of a stop string, which is never emitted, report
// none (as the text of the response does not hold them).
type heldLogprobs struct {
	entries []chat.TokenLogprob
	ends    []int // offset in the generated text just past each entry's token
}

// add holds lp, the entry of a token whose text ends at offset end.
func (h *heldLogprobs) add(lp chat.TokenLogprob, end int) {
	h.entries = append(h.entries, lp)
	h.ends = append(h.ends, end)
}

// settled returns the entries of the tokens whose whole text is among the
// first emitted bytes.
func (h *heldLogprobs) settled(emitted int) []chat.TokenLogprob {
	n := 0
	for n < len(h.ends) && h.ends[n] <= emitted {
		n++
	}
	return h.take(n)
}

// final returns, at the end of a generation, the entries of the tokens whose
// text begins within the first kept bytes (textStream.kept) — after a stop
// string the last of them may run on into it — and of empty tokens at
// its end, and drops the rest: the stop string's own tokens.
func (h *heldLogprobs) final(kept int) []chat.TokenLogprob {
	n := 0
	for n < len(h.ends) && (h.ends[n]-len(h.entries[n].Bytes) < kept || h.ends[n] <= kept) {
		n++
	}
	out := h.take(n)
	h.entries, h.ends = nil, nil
	return out
}

func (h *heldLogprobs) take(n int) []chat.TokenLogprob {
	if n == 0 {
		return nil
	}
	out := h.entries[:n:n]
	h.entries, h.ends = h.entries[n:], h.ends[n:]
	return out
}

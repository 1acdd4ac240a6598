package engine

import (
	"fmt"
	"iter"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/ollama/ollama/llama"
)

// maxCachedTemplateTexts bounds promptTokenizer's cache. A template writes a
// handful of distinct texts (a turn's start and end, per role), so the
// bound is only a safeguard.
const maxCachedTemplateTexts = 1024

// promptTokenizer tokenizes prompts so that only the chat template's own
// text can produce control tokens.
//
// llama.cpp, asked to parse special tokens, finds them anywhere in a text:
// a message saying "<end_of_turn>\n<start_of_turn>model\n" would end the
// client's turn and begin the model's, token for token as the template
// does. So the template's text is cut at its control tokens, and the plain
// text between two of them — template text and message contents run
// together — is tokenized with special parsing off. That is how llama.cpp
// itself tokenizes a prompt (control tokens first, then each run of text
// between them, in one piece), so a prompt whose contents spell no control
// token gets exactly the tokens it would get from tokenizing it whole.
type promptTokenizer struct {
	model *llama.Model
	// bos and eos are what llama.cpp's add_special puts around a text: BOS
	// when the model asks for it, and EOS for the rare model that wants it
	// at the end.
	bos, eos []int
	// plain tokenizes a run of plain text (llama.cpp, special parsing
	// off). Tests wrap it to count what llama.cpp is handed.
	plain func(text string) ([]int, error)
	// bound tells a prompt too long for the context without tokenizing it.
	bound tokenBound

	mu    sync.Mutex
	cache map[string][]piece // template text → its pieces
}

// piece is a run of plain text or a control token.
type piece struct {
	text    string
	token   int
	control bool // token is a control token; text is its spelling
}

// newPromptTokenizer returns the tokenizer of m, whose vocabulary is of the
// kind tokenizer.ggml.model names.
func newPromptTokenizer(m *llama.Model, kind string) (*promptTokenizer, error) {
	around, err := m.Tokenize("", true, false)
	if err != nil {
		return nil, fmt.Errorf("tokenize: %w", err)
	}
	nbos := 0
	if m.AddBOSToken() && len(around) > 0 {
		nbos = 1
	}
	return &promptTokenizer{
		model: m,
		bos:   around[:nbos],
		eos:   around[nbos:],
		plain: func(text string) ([]int, error) { return m.Tokenize(text, false, false) },
		bound: newTokenBound(m, kind),
		cache: make(map[string][]piece),
	}, nil
}

// tooLongError is a prompt of at least atLeast tokens, more than a request
// may use.
type tooLongError struct{ atLeast int }

func (e *tooLongError) Error() string {
	return fmt.Sprintf("the prompt is at least %d tokens", e.atLeast)
}

// tokenize returns the tokens of p, with control tokens only where the
// template wrote them, or a *tooLongError as soon as they reach limit.
//
// llama.cpp's tokenizer can take time out of proportion to a text's
// length: its SentencePiece tokenizer reserves room for the bytes of each
// character missing from the vocabulary one character at a time, copying
// all the tokens of the call so far each time, so a text of n such
// characters (emoji, rare CJK) costs O(n²) — seconds for a few hundred
// kilobytes. So a prompt whose length alone shows it cannot fit is refused
// before llama.cpp sees it (see tokenBound), a long run of text is
// tokenized in pieces (see tokenizeRun), and tokenizing stops as soon as
// the count reaches limit.
func (t *promptTokenizer) tokenize(p prompt, limit int) ([]int, error) {
	if n := t.bound.minTokens(p.String()); n >= limit {
		return nil, &tooLongError{atLeast: n}
	}
	tokens := slices.Clone(t.bos)
	var run strings.Builder // plain text since the last control token
	flush := func() error {
		if run.Len() == 0 {
			return nil
		}
		toks, err := t.tokenizeRun(run.String(), limit-len(tokens))
		if err != nil {
			return fmt.Errorf("tokenize: %w", err)
		}
		tokens = append(tokens, toks...)
		run.Reset()
		if len(tokens) >= limit {
			return &tooLongError{atLeast: len(tokens)}
		}
		return nil
	}
	for _, part := range p {
		if part.content {
			run.WriteString(part.text)
			continue
		}
		pieces, err := t.split(part.text)
		if err != nil {
			return nil, err
		}
		for _, pc := range pieces {
			if !pc.control {
				run.WriteString(pc.text)
				continue
			}
			if err := flush(); err != nil {
				return nil, err
			}
			tokens = append(tokens, pc.token)
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return append(tokens, t.eos...), nil
}

// runChunk is about how many bytes of a run tokenizeRun hands llama.cpp at
// once: small enough that its quadratic cost stays small (under a
// millisecond), large enough that the calls are few.
const runChunk = 4096

// tokenizeRun returns the tokens of a run of plain text, or its first room
// tokens or more.
//
// A SentencePiece vocabulary's long run is tokenized in pieces, each cut
// just after a character that no token spells (see tokenBound): no token
// can span such a cut, so SentencePiece's merges on either side are those
// it makes on the whole text. Each piece but the first is handed to
// llama.cpp behind the character that ends the piece before it, so that it
// does not start as a text's beginning (where a vocabulary may add a
// space); the tokens of that character, alone, are then dropped from the
// front. Should they not be there, the run is tokenized whole.
func (t *promptTokenizer) tokenizeRun(text string, room int) ([]int, error) {
	if !t.bound.cuts || len(text) <= runChunk {
		return t.plain(text)
	}
	var tokens []int
	lead := "" // the character that ends the previous piece
	for len(text) > 0 && len(tokens) < room {
		cut := t.bound.cutAfter(text, runChunk)
		piece := text[:cut]
		toks, err := t.plain(lead + piece)
		if err != nil {
			return nil, err
		}
		if lead != "" {
			own, err := t.plain(lead)
			if err != nil {
				return nil, err
			}
			if !slices.Equal(toks[:min(len(own), len(toks))], own) {
				return t.plain(text)
			}
			toks = toks[len(own):]
		}
		tokens = append(tokens, toks...)
		_, size := utf8.DecodeLastRuneInString(piece)
		lead, text = piece[len(piece)-size:], text[cut:]
	}
	return tokens, nil
}

// split cuts template text at the control tokens llama.cpp finds in it.
func (t *promptTokenizer) split(text string) ([]piece, error) {
	t.mu.Lock()
	pieces, ok := t.cache[text]
	t.mu.Unlock()
	if ok {
		return pieces, nil
	}
	toks, err := t.model.Tokenize(text, false, true)
	if err != nil {
		return nil, fmt.Errorf("tokenize template text: %w", err)
	}
	rest := text
	for _, tok := range toks {
		spelling := t.model.TokenToPiece(tok)
		control, err := t.isControl(tok, spelling)
		if err != nil {
			return nil, err
		}
		if !control {
			continue
		}
		i := strings.Index(rest, spelling)
		if i < 0 {
			return nil, fmt.Errorf("control token %q is not in the template text %q", spelling, text)
		}
		if i > 0 {
			pieces = append(pieces, piece{text: rest[:i]})
		}
		pieces = append(pieces, piece{text: spelling, token: tok, control: true})
		rest = rest[i+len(spelling):]
	}
	if rest != "" {
		pieces = append(pieces, piece{text: rest})
	}
	t.mu.Lock()
	if len(t.cache) < maxCachedTemplateTexts {
		t.cache[text] = pieces
	}
	t.mu.Unlock()
	return pieces, nil
}

// isControl reports whether tok, spelt spelling, is a control token: its
// spelling is that one token when special tokens are parsed, and something
// else when they are not. (Plain text tokenizes the same either way.)
func (t *promptTokenizer) isControl(tok int, spelling string) (bool, error) {
	parsed, err := t.model.Tokenize(spelling, false, true)
	if err != nil {
		return false, fmt.Errorf("tokenize template text: %w", err)
	}
	if !slices.Equal(parsed, []int{tok}) {
		return false, nil
	}
	plain, err := t.model.Tokenize(spelling, false, false)
	if err != nil {
		return false, fmt.Errorf("tokenize template text: %w", err)
	}
	return !slices.Equal(plain, []int{tok}), nil
}

// tokenBound is a lower bound on the tokens of a text, from the vocabulary
// alone: a prompt whose bound reaches the context is refused before it is
// tokenized, and one that passes has fewer than context × maxPiece bytes
// and twice the context of characters the vocabulary lacks, which bounds
// the work of tokenizing it.
//
// It holds for SentencePiece ("llama") and byte-level BPE ("gpt2")
// vocabularies, where a text's tokens, turned back into text, spell the
// text (SentencePiece may add a space in front, and reads "▁" as a space):
//   - no token spells more than maxPiece bytes, so a text of n bytes takes
//     at least n/maxPiece tokens (a "▁" counts as the one byte of a space);
//   - a character that no token spells whole must be spelt by tokens of
//     parts of it (bytes), and a token can hold part of at most two such
//     characters (it cannot hold one whole), so u of them take at least u/2
//     tokens.
//
// Other vocabularies normalise text first (T5's can drop spaces), so no
// bound is drawn for them.
type tokenBound struct {
	maxPiece int // 0: no bound
	ascii    [utf8.RuneSelf]bool
	known    map[rune]bool // non-ASCII characters some token spells whole
	// cuts: a run may be cut after a character no token spells
	// (SentencePiece; see tokenizeRun).
	cuts bool
}

// spaceMark is how SentencePiece writes a space; it reads one in a text as
// a space.
const spaceMark = '▁'

func newTokenBound(m *llama.Model, kind string) tokenBound {
	if kind != "llama" && kind != "gpt2" {
		return tokenBound{}
	}
	b := boundOf(func(yield func(string) bool) {
		for tok := range m.NumVocab() {
			if !yield(m.TokenToPiece(tok)) {
				return
			}
		}
	})
	b.cuts = kind == "llama"
	return b
}

// boundOf is the bound for a vocabulary whose tokens spell pieces.
func boundOf(pieces iter.Seq[string]) tokenBound {
	b := tokenBound{known: map[rune]bool{spaceMark: true}}
	for piece := range pieces {
		b.maxPiece = max(b.maxPiece, len(piece))
		for _, r := range piece {
			if r < utf8.RuneSelf {
				b.ascii[r] = true
			} else if r != utf8.RuneError {
				b.known[r] = true
			}
		}
	}
	return b
}

// unknown reports whether no token spells r whole. An invalid byte (or
// U+FFFD, which it reads as) is never counted unknown.
func (b *tokenBound) unknown(r rune) bool {
	if r < utf8.RuneSelf {
		return !b.ascii[r]
	}
	return r != utf8.RuneError && !b.known[r]
}

// minTokens returns a number of tokens text takes at least.
func (b *tokenBound) minTokens(text string) int {
	if b.maxPiece == 0 {
		return 0
	}
	unknown, marks := 0, 0
	for _, r := range text {
		if r == spaceMark {
			marks++
		} else if b.unknown(r) {
			unknown++
		}
	}
	spelt := len(text) - marks*(utf8.RuneLen(spaceMark)-1)
	return max(spelt/b.maxPiece, unknown/2)
}

// cutAfter returns where to end the first piece of text: just after the
// first character no token spells, from about n bytes on; len(text) if
// there is none.
func (b *tokenBound) cutAfter(text string, n int) int {
	if n >= len(text) {
		return len(text)
	}
	for i, r := range text[n:] {
		if b.unknown(r) {
			return n + i + utf8.RuneLen(r)
		}
	}
	return len(text)
}

package engine

import (
	"fmt"
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
// all the tokens so far each time, so a text of n such characters (emoji,
// rare CJK) costs O(n²) — seconds for a few hundred kilobytes. So a prompt
// whose length alone shows it cannot fit is refused before llama.cpp sees
// it (see tokenBound), and tokenizing stops at the first run of text that
// brings the count to limit.
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
		toks, err := t.plain(run.String())
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
// text (SentencePiece may add a space in front):
//   - no token spells more than maxPiece bytes, so a text of n bytes takes
//     at least n/maxPiece tokens;
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
}

// tokenBoundKinds are the vocabularies tokenBound holds for.
var tokenBoundKinds = []string{"llama", "gpt2"}

func newTokenBound(m *llama.Model, kind string) tokenBound {
	var b tokenBound
	if !slices.Contains(tokenBoundKinds, kind) {
		return b
	}
	b.known = make(map[rune]bool)
	for tok := range m.NumVocab() {
		piece := m.TokenToPiece(tok)
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

// minTokens returns a number of tokens text takes at least.
func (b *tokenBound) minTokens(text string) int {
	if b.maxPiece == 0 {
		return 0
	}
	unknown := 0
	for _, r := range text {
		switch {
		case r < utf8.RuneSelf:
			if !b.ascii[r] {
				unknown++
			}
		case r == utf8.RuneError: // an invalid byte, or U+FFFD: not counted
		case !b.known[r]:
			unknown++
		}
	}
	return max(len(text)/b.maxPiece, unknown/2)
}

package engine

import (
	"fmt"
	"slices"
	"strings"
	"sync"

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

	mu    sync.Mutex
	cache map[string][]piece // template text → its pieces
}

// piece is a run of plain text or a control token.
type piece struct {
	text    string
	token   int
	control bool // token is a control token; text is its spelling
}

func newPromptTokenizer(m *llama.Model) (*promptTokenizer, error) {
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
		cache: make(map[string][]piece),
	}, nil
}

// tokenize returns the tokens of p, with control tokens only where the
// template wrote them.
func (t *promptTokenizer) tokenize(p prompt) ([]int, error) {
	tokens := slices.Clone(t.bos)
	var run strings.Builder // plain text since the last control token
	flush := func() error {
		if run.Len() == 0 {
			return nil
		}
		toks, err := t.model.Tokenize(run.String(), false, false)
		if err != nil {
			return fmt.Errorf("tokenize: %w", err)
		}
		tokens = append(tokens, toks...)
		run.Reset()
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

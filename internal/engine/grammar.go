package engine

import (
	"math"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/ollama/ollama/llama"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// anyObjectSchema is what json_object asks for: a JSON object, any keys.
const anyObjectSchema = `{"type":"object"}`

// grammarVocab is the model's vocabulary as llama.cpp's grammar reads it:
// each token's text, or "" for a token no grammar may produce (the grammar
// refuses empty pieces), and the end-of-generation tokens, which it allows
// only where the grammar may end.
type grammarVocab struct {
	ids    []uint32
	pieces []string
	eog    []int32
	isEOG  []bool
}

// vocabOnce guards Engine.gvocab, built on the first request that needs a
// grammar: ~250,000 calls into llama.cpp for gemma3's vocabulary, which
// requests without a grammar should not pay for at startup.
type vocabOnce struct {
	once sync.Once
	v    *grammarVocab
}

func (e *Engine) grammarVocab() *grammarVocab {
	e.gvocab.once.Do(func() { e.gvocab.v = newGrammarVocab(e.model) })
	return e.gvocab.v
}

func newGrammarVocab(m *llama.Model) *grammarVocab {
	n := m.NumVocab()
	v := &grammarVocab{ids: make([]uint32, n), pieces: make([]string, n), isEOG: make([]bool, n)}
	for i := range n {
		v.ids[i] = uint32(i)
		if m.TokenIsEog(i) {
			v.eog = append(v.eog, int32(i))
			v.isEOG[i] = true
			continue
		}
		v.pieces[i] = grammarPiece(m, i)
	}
	return v
}

// grammarPiece is token i's text for the grammar, or "" to keep it out.
//
// The llama package spells control tokens (<start_of_turn>, <unused12>)
// as their names, which a grammar would take for text inside a JSON
// string; they are left out. A control token is one whose name, tokenized
// as plain text, is not the token itself. Only names in angle brackets are
// checked: that is how every vocabulary we load spells its control tokens,
// and checking the others would cost a tokenization per token.
//
// Pieces that are not whole UTF-8 (byte-fallback tokens <0x80>..<0xFF>)
// are left out too: llama.cpp's grammar accepts any byte sequence its
// UTF-8 decoder can read, invalid ones included (a random model produced
// F7 B4 B1 BE inside a string), and the API promises UTF-8. The cost: a
// character the vocabulary spells only in byte pieces cannot appear as
// itself under a grammar (JSON can still escape it as \uXXXX).
func grammarPiece(m *llama.Model, i int) string {
	piece := m.TokenToPiece(i)
	if !utf8.ValidString(piece) {
		return ""
	}
	if len(piece) > 2 && strings.HasPrefix(piece, "<") && strings.HasSuffix(piece, ">") {
		if toks, err := m.Tokenize(piece, false, false); err != nil || !slices.Equal(toks, []int{i}) {
			return ""
		}
	}
	return piece
}

// grammar constrains a sequence to a llama.cpp grammar (see constraint).
// The llama package's Grammar is safe to use after Free (it then allows
// everything and accepts nothing), so Generate frees it when the request
// ends even though the loop may still hold the sequence for a step.
type grammar struct {
	g     *llama.Grammar
	isEOG []bool
	one   [1]llama.TokenData
	buf   []llama.TokenData
}

var _ constraint = (*grammar)(nil)

// newGrammar returns the grammar a response format asks for, nil for free
// text, or an ErrInvalid *Error naming response_format when its schema
// cannot be turned into a grammar.
func (e *Engine) newGrammar(f *chat.ResponseFormat) (*grammar, error) {
	if f == nil || f.Type == chat.FormatText || f.Type == "" {
		return nil, nil
	}
	schema := []byte(anyObjectSchema)
	if f.Type == chat.FormatJSONSchema {
		schema = f.Schema
	}
	gbnf := llama.SchemaToGrammar(schema)
	if len(gbnf) == 0 {
		return nil, invalidf("response_format", "Invalid 'response_format': this server cannot enforce the JSON schema "+
			"(a keyword or $ref outside the subset llama.cpp's schema converter supports).")
	}
	v := e.grammarVocab()
	g := llama.NewGrammar(string(gbnf), v.ids, v.pieces, v.eog)
	if g == nil {
		return nil, invalidf("response_format", "Invalid 'response_format': the JSON schema gives a grammar this server cannot parse.")
	}
	return &grammar{g: g, isEOG: v.isEOG}, nil
}

// free releases the grammar's C memory; safe to call more than once and
// while the loop still uses it.
func (g *grammar) free() {
	if g != nil {
		g.g.Free()
	}
}

func (g *grammar) allows(tok int) bool {
	g.one[0] = llama.TokenData{ID: int32(tok)}
	g.g.Apply(g.one[:])
	return !math.IsInf(float64(g.one[0].Logit), -1)
}

func (g *grammar) mask(logits []float32) bool {
	buf := g.buf[:0]
	for i, l := range logits {
		if l > float32(math.Inf(-1)) { // neither −Inf nor NaN
			buf = append(buf, llama.TokenData{ID: int32(i), Logit: l})
		} else {
			logits[i] = float32(math.Inf(-1))
		}
	}
	g.buf = buf
	if len(buf) == 0 {
		return false
	}
	g.g.Apply(buf)
	allowed := false
	for _, t := range buf {
		if math.IsInf(float64(t.Logit), -1) {
			logits[t.ID] = t.Logit
		} else {
			allowed = true
		}
	}
	return allowed
}

// accept advances the grammar past tok. An end-of-generation token ends
// the sequence, so there is nothing to advance (and llama.cpp aborts the
// process on one the grammar does not allow).
func (g *grammar) accept(tok int) {
	if tok >= 0 && tok < len(g.isEOG) && !g.isEOG[tok] {
		g.g.Accept(int32(tok))
	}
}

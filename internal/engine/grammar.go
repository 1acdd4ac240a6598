package engine

import (
	"cmp"
	"math"
	"slices"
	"strconv"
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
//
// After the model's tokens come the prefix trie's probes (see prefixTrie):
// ids from len(isEOG) on, each spelling a prefix that several pieces share.
type grammarVocab struct {
	pieces []string
	eog    []int32
	isEOG  []bool
	c      *cVocab // pieces and eog as llama.cpp reads them
	cache  *grammarCache
	trie   *prefixTrie
	// unsorted are tokens with a piece that the trie leaves out (the tool
	// format's control tokens), which a mask checks one by one.
	unsorted []int32
}

// lazyVocab holds a grammar vocabulary built on the first request that
// needs it: ~250,000 calls into llama.cpp for gemma3's vocabulary, which
// requests without a grammar should not pay for at startup.
type lazyVocab struct {
	mu sync.Mutex
	v  *grammarVocab
}

// get returns the vocabulary, built by build on the first call.
func (l *lazyVocab) get(build func() *grammarVocab) *grammarVocab {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.v == nil {
		l.v = build()
	}
	return l.v
}

// close frees the grammars cached over the vocabulary, if it was built.
func (l *lazyVocab) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.v != nil {
		l.v.cache.close()
	}
}

func (e *Engine) grammarVocab() *grammarVocab {
	return e.gvocab.get(func() *grammarVocab { return newGrammarVocab(e.model) })
}

func newGrammarVocab(m *llama.Model) *grammarVocab {
	n := m.NumVocab()
	v := &grammarVocab{pieces: make([]string, n), isEOG: make([]bool, n)}
	for i := range n {
		if m.TokenIsEog(i) {
			v.eog = append(v.eog, int32(i))
			v.isEOG[i] = true
			continue
		}
		v.pieces[i] = grammarPiece(m, i)
	}
	var probes []string
	v.trie, probes = newPrefixTrie(v.pieces)
	v.pieces = append(v.pieces, probes...)
	v.c = newCVocab(v.pieces, v.eog)
	v.cache = &grammarCache{}
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
// A cGrammar is safe to use after Free (it then allows everything and
// accepts nothing), so GenerateDeltas frees it when the request ends even
// though the loop may still hold the sequence for a step.
type grammar struct {
	g     *cGrammar
	isEOG []bool
	// trie, if set, lets mask check prefixes rather than every token;
	// always lists what mask checks besides: the end-of-generation tokens,
	// the vocabulary's unsorted tokens and those the grammar names by id.
	trie   *prefixTrie
	always []int32

	one                  [1]llama.TokenData
	buf                  []llama.TokenData // reused between checks
	check, next, allowed []int32           // reused between masks
	vals                 []float32         // reused between masks
}

var _ constraint = (*grammar)(nil)

// newGrammar returns the grammar a response format asks for, nil for free
// text, or an invalid_argument *chat.Error naming response_format when its schema
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
		return nil, chat.Invalidf("response_format", "Invalid 'response_format': this server cannot enforce the JSON schema "+
			"(a keyword or $ref outside the subset llama.cpp's schema converter supports).")
	}
	g := compileGrammar(string(gbnf), e.grammarVocab())
	if g == nil {
		return nil, chat.Invalidf("response_format", "Invalid 'response_format': the JSON schema gives a grammar this server cannot parse.")
	}
	return g, nil
}

// compileGrammar returns gbnf over v in its initial state (a copy of the
// one v's cache keeps), or nil if llama.cpp cannot parse it.
func compileGrammar(gbnf string, v *grammarVocab) *grammar {
	lg := v.cache.get(gbnf, v.c)
	if lg == nil {
		return nil
	}
	g := &grammar{g: lg, isEOG: v.isEOG}
	if named, ok := namedTokens(gbnf, len(v.isEOG)); ok && v.trie != nil {
		g.trie = v.trie
		g.always = slices.Concat(v.eog, v.unsorted, named)
	}
	return g
}

// namedTokens returns the tokens gbnf names by id (<[id]>, !<[id]>),
// which llama.cpp matches by id rather than by piece, so that the trie's
// probes say nothing about them. It reports false if one may be a probe
// (an id from n on) or is not a number llama.cpp would read alike.
func namedTokens(gbnf string, n int) ([]int32, bool) {
	var ids []int32
	for rest := gbnf; ; {
		i := strings.Index(rest, "<[")
		if i < 0 {
			return ids, true
		}
		rest = rest[i+2:]
		end := strings.Index(rest, "]>")
		if end < 0 {
			return nil, false
		}
		id, err := strconv.ParseUint(rest[:end], 10, 31)
		if err != nil || id >= uint64(n) {
			return nil, false
		}
		ids = append(ids, int32(id))
	}
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

// filter keeps the candidates the grammar allows, in order, in c's
// storage.
func (g *grammar) filter(c candidates) candidates {
	buf := g.buf[:0]
	for _, x := range c {
		buf = append(buf, llama.TokenData{ID: x.id})
	}
	g.buf = buf
	g.g.Apply(buf)
	out := c[:0]
	for i, t := range buf {
		if !math.IsInf(float64(t.Logit), -1) {
			out = append(out, c[i])
		}
	}
	return out
}

func (g *grammar) mask(logits []float32, limit int) (done, any bool) {
	if g.trie == nil {
		if limit > 0 {
			return false, false // every token: never cheap
		}
		return true, g.maskEach(logits)
	}
	// Check what the trie says to, level by level: a token where it
	// stands, a probe by the tokens below it once it is allowed.
	allowed := g.allowed[:0]
	check := append(append(g.check[:0], g.always...), g.trie.root...)
	next := g.next
	checked := 0
	for len(check) > 0 {
		if checked += len(check); limit > 0 && checked > limit {
			g.check, g.next, g.allowed = check, next, allowed
			return false, false
		}
		buf := g.buf[:0]
		for _, id := range check {
			buf = append(buf, llama.TokenData{ID: id})
		}
		g.buf = buf
		g.g.Apply(buf)
		next = next[:0]
		for _, t := range buf {
			switch {
			case math.IsInf(float64(t.Logit), -1):
			case t.ID < g.trie.base:
				allowed = append(allowed, t.ID)
			default:
				next = append(next, g.trie.below[t.ID-g.trie.base]...)
			}
		}
		check, next = next, check
	}
	g.check, g.next, g.allowed = check, next, allowed

	vals := g.vals[:0]
	for _, id := range allowed {
		vals = append(vals, logits[id])
	}
	g.vals = vals
	ninf := float32(math.Inf(-1))
	for i := range logits {
		logits[i] = ninf
	}
	for i, id := range allowed {
		if l := vals[i]; l > ninf { // neither −Inf nor NaN
			logits[id], any = l, true
		}
	}
	return true, any
}

// maskEach masks by checking every token with a finite logit.
func (g *grammar) maskEach(logits []float32) bool {
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

// prefixTrie groups a grammar vocabulary's tokens by the prefixes their
// pieces share, so that a mask rules out a whole group with one check: a
// probe, an extra entry of the vocabulary whose piece is the prefix.
//
// Why that is exact: llama.cpp's grammar reads a piece code point by code
// point, each stack advancing only on a character its top element
// matches, and allows it if some stack reads it to the end. Reading the
// prefix alone takes the same steps, so a refused prefix means a refused
// piece — except where a stack's top element is a token named by id
// (<[id]>), which matches that token whatever its piece, and never a
// probe. A grammar that names tokens therefore has them checked one by
// one (grammar.always), and none may name a probe's id (namedTokens).
// The converse does not hold (the piece may go on where the grammar
// stops), so below an allowed probe every token is checked itself, the
// one spelling the prefix exactly included. Pieces are whole UTF-8
// (grammarPiece), so no read ends mid-character.
//
// On a refused draw most grammar states allow a few characters (a tag, a
// key, a digit, punctuation): the mask then checks the first level's
// probes and the few groups below the allowed ones, not the vocabulary.
// Where free text is allowed it checks about every token, as a plain
// mask would, plus the probes.
type prefixTrie struct {
	base  int32     // the first probe's id; the model's tokens are below
	root  []int32   // what a mask checks first: tokens and probes
	below [][]int32 // for probe base+i, what to check once it is allowed
}

// minProbeGroup is the fewest tokens a prefix needs to get a probe:
// checking a small group's tokens costs little more than a probe.
const minProbeGroup = 4

// newPrefixTrie returns the trie of pieces ("" for a token no grammar may
// produce) and its probes' pieces, whose ids follow the tokens'.
func newPrefixTrie(pieces []string) (*prefixTrie, []string) {
	order := make([]int32, 0, len(pieces))
	for i, p := range pieces {
		if p != "" {
			order = append(order, int32(i))
		}
	}
	// Byte order is code point order in UTF-8: the pieces sharing a
	// prefix are a run, the one equal to it first.
	slices.SortFunc(order, func(a, b int32) int {
		return cmp.Or(strings.Compare(pieces[a], pieces[b]), cmp.Compare(a, b))
	})
	t := &prefixTrie{base: int32(len(pieces))}
	var probes []string
	// group returns what to check for order[lo:hi], whose pieces share
	// their first d bytes and diverge after them (or end there).
	var group func(lo, hi, d int) []int32
	group = func(lo, hi, d int) []int32 {
		var list []int32
		i := lo
		for ; i < hi && len(pieces[order[i]]) == d; i++ {
			list = append(list, order[i])
		}
		for i < hi {
			first := pieces[order[i]]
			_, size := utf8.DecodeRuneInString(first[d:])
			j := i + 1
			for j < hi && strings.HasPrefix(pieces[order[j]], first[:d+size]) {
				j++
			}
			if j-i < minProbeGroup {
				list = append(list, order[i:j]...)
			} else {
				n := sharedPrefix(first, pieces[order[j-1]])
				p := len(probes)
				probes = append(probes, first[:n])
				t.below = append(t.below, nil)
				t.below[p] = group(i, j, n)
				list = append(list, t.base+int32(p))
			}
			i = j
		}
		return list
	}
	t.root = group(0, len(order), 0)
	return t, probes
}

// sharedPrefix is the length in bytes of the longest common prefix of
// two UTF-8 strings that ends between characters.
func sharedPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	for n > 0 && n < len(a) && !utf8.RuneStart(a[n]) {
		n--
	}
	return n
}

package engine

/*
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

// The llama package's C functions for grammars (its sampling_ext.h). Its
// Go wrapper, NewGrammar, copies the whole vocabulary into C strings on
// every call (hundreds of thousands of cgo calls, half of what a grammar
// costs to build); these take a vocabulary laid out in C once. The token
// arrays have llama.h's layout (llama_token_data, llama_token_data_array)
// at the module version go.mod pins; TestTrieMaskMatchesEveryToken checks
// them against the wrapper.
struct llama_grammar;
typedef struct { int32_t id; float logit; float p; } slm_token_data;
typedef struct { slm_token_data *data; size_t size; int64_t selected; bool sorted; } slm_token_data_array;
struct llama_grammar *grammar_init(char *grammar, uint32_t *tokens, size_t n_tokens, const char **pieces, uint32_t *eog_tokens, size_t n_eog_tokens);
void grammar_free(struct llama_grammar *g);
void grammar_apply(struct llama_grammar *g, slm_token_data_array *tokens);
void grammar_accept(struct llama_grammar *g, int32_t id);

// cgrammar.cpp
struct llama_grammar *slm_grammar_clone(const struct llama_grammar *g);
void slm_grammar_free_clone(struct llama_grammar *g);
*/
import "C"

import (
	"math"
	"runtime"
	"slices"
	"sync"
	"unsafe"

	"github.com/ollama/ollama/llama"
)

// cVocab is a grammar vocabulary in C memory, as grammar_init reads it:
// token ids 0..n-1, their pieces as C strings, the end-of-generation
// tokens. llama.cpp copies what it needs, so the memory is only read
// while a grammar is built; it is freed once the cVocab is unreachable.
type cVocab struct {
	ids    *C.uint32_t
	pieces **C.char
	n      C.size_t
	eog    *C.uint32_t
	nEOG   C.size_t
}

func newCVocab(pieces []string, eog []int32) *cVocab {
	n := len(pieces)
	size := 0
	for _, p := range pieces {
		size += len(p) + 1
	}
	text := unsafe.Slice((*byte)(C.malloc(C.size_t(size))), size)
	ptrs := unsafe.Slice((**C.char)(C.malloc(C.size_t(n)*C.size_t(unsafe.Sizeof((*C.char)(nil))))), n)
	ids := unsafe.Slice((*C.uint32_t)(C.malloc(C.size_t(n)*4)), n)
	off := 0
	for i, p := range pieces {
		ptrs[i] = (*C.char)(unsafe.Pointer(&text[off]))
		off += copy(text[off:], p)
		text[off] = 0
		off++
		ids[i] = C.uint32_t(i)
	}
	eogs := unsafe.Slice((*C.uint32_t)(C.malloc(C.size_t(max(len(eog), 1))*4)), max(len(eog), 1))
	for i, id := range eog {
		eogs[i] = C.uint32_t(id)
	}
	v := &cVocab{ids: &ids[0], pieces: &ptrs[0], n: C.size_t(n), eog: &eogs[0], nEOG: C.size_t(len(eog))}
	runtime.AddCleanup(v, func(mem [4]unsafe.Pointer) {
		for _, p := range mem {
			C.free(p)
		}
	}, [4]unsafe.Pointer{unsafe.Pointer(&text[0]), unsafe.Pointer(&ptrs[0]), unsafe.Pointer(&ids[0]), unsafe.Pointer(&eogs[0])})
	return v
}

// cGrammar is a llama.cpp grammar built over a cVocab, with the methods of
// the llama package's Grammar: like it, it is safe to use after Free (it
// then allows everything and accepts nothing), and its methods may be
// called from several goroutines.
type cGrammar struct {
	mu  sync.Mutex
	c   *C.struct_llama_grammar
	buf []C.slm_token_data // C memory, grown as needed
	// release is set on a copy (clone): Free calls it instead of freeing
	// the vocabulary the copy shares with the grammar it came from.
	release func()
}

// newCGrammar parses gbnf over v, or returns nil if llama.cpp cannot.
func newCGrammar(gbnf string, v *cVocab) *cGrammar {
	s := C.CString(gbnf)
	defer C.free(unsafe.Pointer(s))
	c := C.grammar_init(s, v.ids, v.n, v.pieces, v.eog, v.nEOG)
	runtime.KeepAlive(v)
	if c == nil {
		return nil
	}
	return &cGrammar{c: c}
}

// Free releases the grammar's C memory; safe to call more than once.
func (g *cGrammar) Free() {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.c == nil:
	case g.release != nil:
		C.slm_grammar_free_clone(g.c)
		g.release()
	default:
		C.grammar_free(g.c)
	}
	g.c = nil
	if g.buf != nil {
		C.free(unsafe.Pointer(&g.buf[0]))
		g.buf = nil
	}
}

// clone returns a copy of g in its current state, which reads g's
// vocabulary: g must not be freed before the copy, whose Free calls
// release. nil if g was freed or llama.cpp could not copy it.
func (g *cGrammar) clone(release func()) *cGrammar {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c == nil {
		return nil
	}
	c := C.slm_grammar_clone(g.c)
	if c == nil {
		return nil
	}
	return &cGrammar{c: c, release: release}
}

// Apply sets the logit of each token the grammar does not allow next to
// −Inf.
func (g *cGrammar) Apply(tokens []llama.TokenData) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c == nil || len(tokens) == 0 {
		return
	}
	if len(tokens) > len(g.buf) {
		n := max(len(tokens), 2*len(g.buf))
		var old unsafe.Pointer
		if g.buf != nil {
			old = unsafe.Pointer(&g.buf[0])
		}
		g.buf = unsafe.Slice((*C.slm_token_data)(C.realloc(old, C.size_t(n)*C.size_t(unsafe.Sizeof(C.slm_token_data{})))), n)
	}
	buf := g.buf[:len(tokens)]
	for i, t := range tokens {
		buf[i] = C.slm_token_data{id: C.int32_t(t.ID), logit: C.float(t.Logit)}
	}
	arr := C.slm_token_data_array{data: &buf[0], size: C.size_t(len(buf)), selected: -1}
	C.grammar_apply(g.c, &arr)
	for i := range tokens {
		if l := float32(buf[i].logit); math.IsInf(float64(l), -1) {
			tokens[i].Logit = l
		}
	}
}

// Accept advances the grammar past token, which it must allow.
func (g *cGrammar) Accept(token int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c != nil {
		C.grammar_accept(g.c, C.int32_t(token))
	}
}

// grammarCacheSize is how many built grammars a vocabulary keeps. Each
// holds llama.cpp's own index of every piece, ~21 MB for gemma3's
// 262,144 tokens, so few: enough for an application's tools under
// tool_choice required and one named function, or two response schemas.
const grammarCacheSize = 2

// grammarCache keeps the grammars last built over one vocabulary, in their
// initial state, by their text. A request with the same schema or tools
// as an earlier one (an agent sends the same tools every turn) gets a copy
// in microseconds rather than a new grammar: building one costs ~35 ms on
// gemma3's vocabulary, nearly all of it llama.cpp indexing every piece,
// which the copy shares with the cached grammar.
type grammarCache struct {
	mu      sync.Mutex
	entries []*cachedGrammar // most recently used first
	closed  bool
}

type cachedGrammar struct {
	gbnf    string
	g       *cGrammar // never advanced; owns the vocabulary its copies read
	copies  int       // copies not yet freed
	evicted bool      // out of the cache: freed with its last copy
}

// get returns a grammar for gbnf over v in its initial state, for one
// sequence: a copy of the cached one, built on a miss. nil if llama.cpp
// cannot parse gbnf (nothing is cached then).
func (c *grammarCache) get(gbnf string, v *cVocab) *cGrammar {
	c.mu.Lock()
	e := c.findLocked(gbnf)
	if e != nil {
		e.copies++
	}
	c.mu.Unlock()
	if e == nil {
		g := newCGrammar(gbnf, v) // outside the lock: it takes milliseconds
		if g == nil {
			return nil
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return g
		}
		if e = c.findLocked(gbnf); e != nil {
			g.Free() // another request built it meanwhile
		} else {
			e = &cachedGrammar{gbnf: gbnf, g: g}
			c.entries = append([]*cachedGrammar{e}, c.entries...)
			if len(c.entries) > grammarCacheSize {
				c.evictLocked(c.entries[grammarCacheSize])
				c.entries = c.entries[:grammarCacheSize]
			}
		}
		e.copies++
		c.mu.Unlock()
	}
	release := func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		e.copies--
		c.freeIfDoneLocked(e)
	}
	cp := e.g.clone(release)
	if cp == nil {
		release()
		return newCGrammar(gbnf, v)
	}
	return cp
}

// findLocked returns gbnf's entry, moved to the front, or nil.
func (c *grammarCache) findLocked(gbnf string) *cachedGrammar {
	i := slices.IndexFunc(c.entries, func(e *cachedGrammar) bool { return e.gbnf == gbnf })
	if i < 0 {
		return nil
	}
	e := c.entries[i]
	copy(c.entries[1:i+1], c.entries[:i])
	c.entries[0] = e
	return e
}

func (c *grammarCache) evictLocked(e *cachedGrammar) {
	e.evicted = true
	c.freeIfDoneLocked(e)
}

func (c *grammarCache) freeIfDoneLocked(e *cachedGrammar) {
	if e.evicted && e.copies == 0 {
		e.g.Free()
	}
}

// close frees the cached grammars, each once its last copy is freed;
// grammars got afterwards are not cached.
func (c *grammarCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, e := range c.entries {
		c.evictLocked(e)
	}
	c.entries = nil
}

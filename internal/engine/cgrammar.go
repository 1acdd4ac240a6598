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
*/
import "C"

import (
	"math"
	"runtime"
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
	if g.c != nil {
		C.grammar_free(g.c)
		g.c = nil
	}
	if g.buf != nil {
		C.free(unsafe.Pointer(&g.buf[0]))
		g.buf = nil
	}
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

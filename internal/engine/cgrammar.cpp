// C entry points for the two functions of llama.cpp's internal grammar API
// (src/llama-grammar.h) that the llama package's C functions leave out:
// copying a grammar, and freeing a copy without the vocabulary it shares
// with the grammar it was copied from. Declared here rather than included:
// cgo cannot point at the llama package's headers. The declarations match
// that header at the module version go.mod pins (a C++ name that no
// longer matched would fail the link, not the run).

struct llama_grammar;

llama_grammar * llama_grammar_clone_impl(const llama_grammar & grammar);
void llama_grammar_free_impl(llama_grammar * grammar);

extern "C" {

// slm_grammar_clone copies g, its current state included; the copy reads
// g's vocabulary, which must outlive it. NULL if that fails
// (out of memory: no exception may cross into Go).
llama_grammar * slm_grammar_clone(const llama_grammar * g) {
	try {
		return llama_grammar_clone_impl(*g);
	} catch (...) {
		return nullptr;
	}
}

// slm_grammar_free_clone frees a copy made by slm_grammar_clone, leaving
// the vocabulary to the grammar that owns it (grammar_free would free
// that too).
void slm_grammar_free_clone(llama_grammar * g) {
	llama_grammar_free_impl(g);
}

}

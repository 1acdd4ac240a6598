package engine

// Prompt-prefix reuse.
//
// A chat client sends the whole conversation every turn, so a turn's prompt
// starts with the previous turn's prompt and answer. A slot keeps its KV
// cache when its request ends; the next request goes to the free slot whose
// cached tokens share the longest prefix with its prompt, the rest of that
// cache is removed (llama_memory_seq_rm from the first differing position
// on) and only the remainder of the prompt is decoded.
//
// Exactness. Positions below the common prefix hold the same tokens at the
// same positions, so their keys and values are the ones a fresh prefill
// would compute, and the remainder is decoded against them as it would be.
// The one model feature that could break this is a sliding window (Gemma 3's
// local layers): llama.cpp may overwrite a cell that has slid out of the
// window, which a shorter prefix would need again. It does so only when it
// finds no empty cell. The llama package asks for full-size sliding-window
// caches (swa_full), and our context keeps one stream per sequence of
// n_ctx_seq ≥ ContextPerSeq cells, while a sequence never holds more than
// ContextPerSeq positions: cells fill in position order and none is ever
// overwritten, so reuse is exact for those layers too. TestPromptCacheExact
// checks it token for token on a model whose window is a few tokens wide.

// slotCache is what a free slot's KV cache holds: tokens at positions
// 0..len(tokens)-1 of its sequence id. A slot in use is described by its
// sequence instead.
type slotCache struct {
	tokens []int
	prompt int    // how many of tokens were the prompt of the request that left them
	used   uint64 // Engine.tick when its request ended; 0: never used, or cleared
}

// pickSlot returns the free slot for a request whose prompt is tokens, or
// -1 if none is free. In order of preference:
//
//  1. a slot holding the same conversation, the one sharing the longest
//     prefix among them: a slot does when the shared prefix covers the
//     whole prompt of the request that left it (the next turn: the client
//     re-sends that prompt, then the answer and a new message) or 3/4 of
//     its cache (the client edits its last turn, or repeats a request);
//  2. a slot holding nothing: a new conversation does not take the slot of
//     another one just because they share a system prompt — the other
//     would lose its turns and, coming back, take a third one's;
//  3. the longest shared prefix (the system prompt, say), and among equals
//     the least recently used slot: the coldest conversation is evicted.
//
// Called with e.mu held.
func (e *Engine) pickSlot(tokens []int) int {
	own, ownCommon, best, bestCommon, empty := -1, -1, -1, -1, -1
	for i, s := range e.slots {
		if s != nil {
			continue
		}
		c := e.cache[i]
		if len(c.tokens) == 0 && empty < 0 {
			empty = i
		}
		n := commonPrefix(c.tokens, tokens)
		if n > bestCommon || (n == bestCommon && c.used < e.cache[best].used) {
			best, bestCommon = i, n
		}
		// Each slot is judged on its own: a longer prefix in a slot that
		// holds another conversation must not hide this one's.
		if n > 0 && (n >= c.prompt || 4*n >= 3*len(c.tokens)) && n > ownCommon {
			own, ownCommon = i, n
		}
	}
	switch {
	case own >= 0:
		return own
	case empty >= 0:
		return empty
	}
	return best
}

// seat prepares slot s.id for s: it keeps the cached prefix s shares (at
// most all of its prompt but the last token, which is decoded again for
// the logits of the first completion token), removes the rest and sets s
// to decode from there. Called with e.mu held, from the loop.
func (e *Engine) seat(s *sequence) {
	c := &e.cache[s.id]
	n := 0
	if !e.cfg.NoPromptCache {
		n = min(commonPrefix(c.tokens, s.tokens), len(s.tokens)-1)
	}
	if n < len(c.tokens) {
		// llama.cpp refuses a partial removal only for recurrent models,
		// which have no per-position cache; those start clean.
		if n == 0 || !e.lctx.KvCacheSeqRm(s.id, n, -1) {
			e.lctx.KvCacheSeqRm(s.id, -1, -1)
			n = 0
		}
	}
	*c = slotCache{}
	s.fed, s.nPast, s.cached = n, n, n
}

// keepOrClear records what s leaves in its slot's KV cache (its prompt and
// the completion tokens it decoded), or clears the cache when it is not to
// be kept or reuse is off. Called with e.mu held, from the loop.
func (e *Engine) keepOrClear(s *sequence, keep bool) {
	c := &e.cache[s.id]
	if keep && !e.cfg.NoPromptCache {
		e.tick++
		*c = slotCache{tokens: append(s.tokens[:s.fed:s.fed], s.genFed...), prompt: s.fedPrompt(), used: e.tick}
		return
	}
	e.lctx.KvCacheSeqRm(s.id, -1, -1)
	*c = slotCache{}
}

// commonPrefix is the length of the longest common prefix of a and b.
func commonPrefix(a, b []int) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

package engine

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// embedSeqs is how many inputs an embedding model encodes in one
// llama_decode at most: its context's sequence count.
const embedSeqs = 64

// embedder is the state of an embedding model's engine. Embed calls take
// the llama context in turn (mu); the decode loop never touches it, since
// an embedding model admits no sequences.
type embedder struct {
	width int // the model's embedding size
	// pack bounds the tokens of one decode; a longer input goes alone.
	// Attention in a non-causal batch costs the square of its tokens, so
	// packing fewer, with more decodes, is faster than one huge batch.
	pack    int
	mu      sync.Mutex
	closed  bool
	running atomic.Int64 // Embed calls in progress, for Stats and Drain
}

// Embedding reports whether the model is an embedding model: Embed
// serves it, GenerateDeltas refuses it.
func (e *Engine) Embedding() bool { return e.embed != nil }

// embedsRunning is how many Embed calls are in progress.
func (e *Engine) embedsRunning() int {
	if e.embed == nil {
		return 0
	}
	return int(e.embed.running.Load())
}

// Embed computes one embedding per input with the model's pooling, each
// normalised to unit length (and, with req.Dimensions, truncated to that
// many values first). Inputs are encoded many per llama_decode. A text
// input is tokenized as plain text, with the model's BOS and EOS; token
// inputs are used as they are. ctx ends the work between two decodes.
func (e *Engine) Embed(ctx context.Context, req chat.EmbedRequest) (chat.EmbedResult, error) {
	if err := req.Validate(); err != nil {
		return chat.EmbedResult{}, err
	}
	em := e.embed
	if em == nil {
		return chat.EmbedResult{}, chat.Invalidf("model", "model %s does not support embeddings", e.name)
	}
	if req.Dimensions > em.width {
		return chat.EmbedResult{}, chat.Invalidf("dimensions",
			"Invalid 'dimensions': %d is more than model %s's %d.", req.Dimensions, e.name, em.width)
	}
	e.mu.Lock()
	draining := e.draining
	e.mu.Unlock()
	if draining {
		return chat.EmbedResult{}, closing()
	}
	inputs := make([][]int, len(req.Inputs))
	total := 0
	for i, in := range req.Inputs {
		toks, err := e.embedTokens(i, in)
		if err != nil {
			return chat.EmbedResult{}, err
		}
		inputs[i], total = toks, total+len(toks)
	}

	em.running.Add(1)
	defer em.running.Add(-1)
	em.mu.Lock()
	defer em.mu.Unlock()
	if em.closed {
		return chat.EmbedResult{}, closing()
	}
	out := make([][]float32, len(inputs))
	for start := 0; start < len(inputs); {
		if err := ctx.Err(); err != nil {
			return chat.EmbedResult{}, err
		}
		// Pack inputs while they fit; the first always goes.
		end, tokens := start, 0
		for end < len(inputs) && end-start < embedSeqs && (end == start || tokens+len(inputs[end]) <= em.pack) {
			tokens += len(inputs[end])
			end++
		}
		if err := e.encode(inputs[start:end], out[start:end]); err != nil {
			return chat.EmbedResult{}, err
		}
		start = end
	}
	for i, v := range out {
		if req.Dimensions > 0 {
			v = v[:req.Dimensions]
		}
		out[i] = normalize(v)
	}
	e.requests.Add(1)
	e.promptTokens.Add(uint64(total))
	return chat.EmbedResult{Model: e.name, Embeddings: out, PromptTokens: total}, nil
}

// embedTokens tokenizes input i, or checks its token ids, against the
// vocabulary and the context.
func (e *Engine) embedTokens(i int, in chat.EmbedInput) ([]int, error) {
	limit := e.cfg.ContextPerSeq
	tooLong := func(size string) error {
		err := chat.Invalidf("input", "Invalid 'input': input %d %s, more than the %d tokens model %s takes.", i, size, limit, e.name)
		err.Reason = chat.ReasonContextLength
		return err
	}
	if in.Tokens != nil {
		if len(in.Tokens) > limit {
			return nil, tooLong(fmt.Sprintf("is %d tokens", len(in.Tokens)))
		}
		vocab := e.model.NumVocab()
		for k, t := range in.Tokens {
			if t < 0 || t >= vocab {
				return nil, chat.Invalidf("input", "Invalid 'input': token %d of input %d is %d, not in the vocabulary of model %s (0 to %d).", k, i, t, e.name, vocab-1)
			}
		}
		return in.Tokens, nil
	}
	if n := e.tokens.bound.minTokens(in.Text); n > limit {
		return nil, tooLong(fmt.Sprintf("is at least %d tokens", n))
	}
	toks, err := e.model.Tokenize(in.Text, true, false)
	if err != nil {
		return nil, chat.Invalidf("input", "Invalid 'input': input %d: %v", i, err)
	}
	if len(toks) > limit {
		return nil, tooLong(fmt.Sprintf("is %d tokens", len(toks)))
	}
	if len(toks) == 0 {
		return nil, chat.Invalidf("input", "Invalid 'input': input %d has no tokens.", i)
	}
	return toks, nil
}

// encode runs one llama_decode over inputs, one sequence each, and
// stores their pooled embeddings in out. Called with embed.mu held.
func (e *Engine) encode(inputs [][]int, out [][]float32) error {
	e.batch.Clear()
	for seq, toks := range inputs {
		for pos, t := range toks {
			e.batch.Add(t, nil, pos, true, seq)
		}
	}
	if err := e.lctx.Decode(e.batch); err != nil {
		return chat.Errorf(chat.CodeInternal, "encode %d inputs: %w", len(inputs), err)
	}
	e.steps.Add(1)
	for seq := range inputs {
		v := e.lctx.GetEmbeddingsSeq(seq)
		if len(v) != e.embed.width {
			return chat.Errorf(chat.CodeInternal, "input of %d tokens: no pooled embedding", len(inputs[seq]))
		}
		out[seq] = v
	}
	return nil
}

// normalize scales v to unit length (L2), in place; a zero vector stays
// zero.
func normalize(v []float32) []float32 {
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	if sum == 0 {
		return v
	}
	inv := 1 / math.Sqrt(sum)
	for i, x := range v {
		v[i] = float32(float64(x) * inv)
	}
	return v
}

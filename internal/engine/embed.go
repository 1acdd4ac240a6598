package engine

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// embedSeqs is how many inputs an embedding model encodes in one
// llama_decode at most: its context's sequence count.
const embedSeqs = 64

// embedder is the state of an embedding model's engine. The decode loop
// never touches the llama context, since an embedding model admits no
// sequences: Embed calls share it a pass at a time (mu), each pass taking
// the inputs at the head of the queue, whichever calls they came from, so
// that concurrent requests fill one pass together.
type embedder struct {
	width int // the model's embedding size
	// pack bounds the tokens of one decode; a longer input goes alone.
	// Attention in a non-causal batch costs the square of its tokens, so
	// packing fewer, with more decodes, is faster than one huge batch.
	pack int
	// mu is held for one pass by whichever Embed call takes it.
	mu     sync.Mutex
	closed bool // under mu
	qmu    sync.Mutex
	queue  []*embedJob // under qmu: the calls with inputs still to encode, oldest first
	// running counts Embed calls in progress, for Stats and Drain.
	running atomic.Int64
}

// embedJob is one Embed call's inputs in the queue. Its fields are under
// the embedder's qmu until done is closed.
type embedJob struct {
	ctx    context.Context // its caller's: once it ends, no pass takes its inputs
	inputs [][]int
	out    [][]float32
	taken  int // inputs put into a pass
	left   int // inputs without an embedding yet
	err    error
	done   chan struct{} // closed once left is 0 or err is set
}

func (j *embedJob) fail(err error) {
	if j.err == nil && j.left > 0 {
		j.err = err
		close(j.done)
	}
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
// many values first). Inputs are encoded many per llama_decode, with
// those of concurrent calls (embedAll). A text input is tokenized as
// plain text, with the model's BOS and EOS; token inputs are used as they
// are. ctx ends the work between two decodes.
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
	out, err := e.embedAll(ctx, inputs)
	if err != nil {
		return chat.EmbedResult{}, err
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

// embedAll queues inputs and takes passes over the queue until they all
// have their embedding: a pass may hold inputs of other calls, and
// another call's pass may hold these. ctx ends the wait between two
// passes.
func (e *Engine) embedAll(ctx context.Context, inputs [][]int) ([][]float32, error) {
	em := e.embed
	j := &embedJob{ctx: ctx, inputs: inputs, out: make([][]float32, len(inputs)), left: len(inputs), done: make(chan struct{})}
	em.qmu.Lock()
	em.queue = append(em.queue, j)
	em.qmu.Unlock()
	for {
		em.mu.Lock()
		select {
		case <-j.done:
			em.mu.Unlock()
			return j.out, j.err
		default:
		}
		var err error
		switch {
		case em.closed:
			err = closing()
		case ctx.Err() != nil:
			err = ctx.Err()
		}
		if err != nil {
			em.qmu.Lock()
			em.queue = slices.DeleteFunc(em.queue, func(q *embedJob) bool { return q == j })
			em.qmu.Unlock()
			em.mu.Unlock()
			return nil, err
		}
		e.embedPass()
		em.mu.Unlock()
	}
}

// embedPass encodes the inputs at the head of the queue in one pass, as
// many as fit (the first always goes), and gives each call its inputs'
// embeddings. Called with em.mu held.
func (e *Engine) embedPass() {
	em := e.embed
	type seq struct {
		j *embedJob
		i int
	}
	var seqs []seq
	var inputs [][]int
	tokens := 0
	em.qmu.Lock()
	// A cancelled call's inputs are not encoded; its caller returns
	// ctx's error when it next holds mu.
	em.queue = slices.DeleteFunc(em.queue, func(j *embedJob) bool { return j.ctx.Err() != nil })
take:
	for _, j := range em.queue {
		for ; j.taken < len(j.inputs); j.taken++ {
			in := j.inputs[j.taken]
			if len(inputs) == embedSeqs || (len(inputs) > 0 && tokens+len(in) > em.pack) {
				break take
			}
			seqs, inputs, tokens = append(seqs, seq{j, j.taken}), append(inputs, in), tokens+len(in)
		}
	}
	em.qmu.Unlock()
	if len(inputs) == 0 {
		return
	}
	out := make([][]float32, len(inputs))
	err := e.encode(inputs, out)
	em.qmu.Lock()
	defer em.qmu.Unlock()
	for k, s := range seqs {
		switch {
		case s.j.err != nil:
		case err != nil:
			s.j.fail(err)
		default:
			s.j.out[s.i] = out[k]
			if s.j.left--; s.j.left == 0 {
				close(s.j.done)
			}
		}
	}
	em.queue = slices.DeleteFunc(em.queue, func(j *embedJob) bool { return j.err != nil || j.left == 0 })
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

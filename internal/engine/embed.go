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
// sequences: Embed calls share it a pass at a time (turn), each pass
// taking the inputs at the head of the queue, whichever calls they came
// from, so that concurrent requests fill one pass together.
type embedder struct {
	width int // the model's embedding size
	// pack bounds the tokens of one decode; a longer input goes alone.
	// Attention in a non-causal batch costs the square of its tokens, so
	// packing fewer, with more decodes, is faster than one huge batch.
	pack int
	// turn is the context's lock, held for one pass by whichever Embed
	// call takes it: a channel, so that a call may instead see its inputs
	// done by another's pass, or its context end.
	turn   chan struct{}
	closed bool // under turn
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
	// Counted before the draining check, so that Drain, which sets
	// draining and then waits for none to run, never misses this call.
	em.running.Add(1)
	defer em.running.Add(-1)
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
// another call's pass may hold these. When ctx ends the call returns at
// once; a pass running with its inputs finishes for the others.
func (e *Engine) embedAll(ctx context.Context, inputs [][]int) ([][]float32, error) {
	em := e.embed
	j := &embedJob{ctx: ctx, inputs: inputs, out: make([][]float32, len(inputs)), left: len(inputs), done: make(chan struct{})}
	em.qmu.Lock()
	em.queue = append(em.queue, j)
	em.qmu.Unlock()
	giveUp := func(err error) ([][]float32, error) {
		em.qmu.Lock()
		em.queue = slices.DeleteFunc(em.queue, func(q *embedJob) bool { return q == j })
		em.qmu.Unlock()
		return nil, err
	}
	for {
		select {
		case <-j.done:
			return j.out, j.err
		case <-ctx.Done():
			return giveUp(ctx.Err())
		case em.turn <- struct{}{}:
		}
		select {
		case <-j.done:
			<-em.turn
			return j.out, j.err
		default:
		}
		if em.closed {
			<-em.turn
			return giveUp(closing())
		}
		e.embedPass()
		<-em.turn
	}
}

// embedPass encodes the inputs at the head of the queue in one pass, as
// many as fit (the first always goes), and gives each call its inputs'
// embeddings. Called holding em.turn.
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
	// ctx's error.
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
	// A failed decode fails every call with an input in the pass: it says
	// nothing of one input (each was checked against the vocabulary and
	// the context before it was queued). A call's inputs in the pass have
	// no embedding yet, so its done is still open until here.
	for k, s := range seqs {
		switch {
		case s.j.err != nil: // failed by an earlier input of this pass
		case err != nil:
			s.j.err = err
			close(s.j.done)
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
// stores their pooled embeddings in out. Called holding embed.turn.
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

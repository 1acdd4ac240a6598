package engine

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ollama/ollama/llama"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// sequence is one request in the engine. Fields below "loop-owned" are only
// touched by the loop goroutine.
type sequence struct {
	tokens    []int // the prompt
	maxTokens int
	sampler   *llama.SamplingContext
	text      *textStream
	out       *outbox
	queuedAt  time.Time
	cancelled atomic.Bool

	// loop-owned
	id       int    // llama sequence id = slot index
	fed      int    // prompt tokens already decoded
	nPast    int    // tokens in the KV cache
	last     int    // last sampled token, fed at the next step
	nGen     int    // completion tokens
	batchIdx int    // index of this sequence's logits in the current batch, -1 if none
	lastStep uint64 // step at which it last decoded, for round-robin fairness
}

func (s *sequence) generating() bool { return s.fed == len(s.tokens) }

// outbox carries text and the final result from the loop to Generate. The
// loop only appends and signals; it never waits for the reader.
type outbox struct {
	notify chan struct{} // cap 1

	mu      sync.Mutex
	pending []byte
	done    bool
	res     outcome
}

type outcome struct {
	chat.Result
	err error
}

func newOutbox() *outbox { return &outbox{notify: make(chan struct{}, 1)} }

func (o *outbox) push(text string) {
	if text == "" {
		return
	}
	o.mu.Lock()
	o.pending = append(o.pending, text...)
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) finish(res outcome) {
	o.mu.Lock()
	o.done, o.res = true, res
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) signal() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// take returns the text pushed since the last call and, once finished, the
// outcome.
func (o *outbox) take() (string, outcome, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	text := string(o.pending)
	o.pending = o.pending[:0]
	return text, o.res, o.done
}

// loop is the only goroutine that calls into the llama context.
func (e *Engine) loop(quit <-chan struct{}) {
	defer close(e.loopDone)
	var step uint64
	for {
		active := e.admit()
		if active == 0 {
			select {
			case <-quit:
				e.failAll(ErrClosed)
				return
			case <-e.wake:
			}
			continue
		}
		select {
		case <-quit:
			e.failAll(ErrClosed)
			return
		default:
		}
		step++
		e.step(step)
	}
}

// admit frees the slots of cancelled sequences, moves queued requests into
// free slots and returns the number of slots in use.
func (e *Engine) admit() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	active := 0
	for i, s := range e.slots {
		if s != nil && s.cancelled.Load() {
			e.release(s)
			s = nil
		}
		if s == nil && len(e.queue) > 0 {
			s, e.queue = e.queue[0], e.queue[1:]
			s.id, s.batchIdx = i, -1
			e.slots[i] = s
		}
		if s != nil {
			active++
		}
	}
	return active
}

// release empties s's slot and clears its KV cells so the next sequence in
// the slot starts clean. Called with e.mu held, from the loop.
func (e *Engine) release(s *sequence) {
	e.lctx.KvCacheSeqRm(s.id, -1, -1)
	e.slots[s.id] = nil
	e.promptTokens.Add(uint64(s.fed))
	e.completionTokens.Add(uint64(s.nGen))
}

// step builds one batch — next tokens of (some of) the generating sequences
// plus a chunk of a waiting prompt — decodes it, samples and delivers text.
func (e *Engine) step(step uint64) {
	e.mu.Lock()
	var gen, prefill []*sequence
	for _, s := range e.slots {
		if s == nil {
			continue
		}
		s.batchIdx = -1
		if s.generating() {
			gen = append(gen, s)
		} else {
			prefill = append(prefill, s)
		}
	}
	e.mu.Unlock()

	b := e.batch
	b.Clear()

	// Decode: the planner says how many generating sequences share this
	// step; the ones that waited longest go first.
	k := e.plan.choose(len(gen), step)
	slices.SortStableFunc(gen, func(a, b *sequence) int { return cmp.Compare(a.lastStep, b.lastStep) })
	for _, s := range gen[:k] {
		s.batchIdx = b.NumTokens()
		b.Add(s.last, nil, s.nPast, true, s.id)
		s.nPast++
		s.lastStep = step
	}

	// Prefill: alone, a prompt goes in as fast as the batch allows; next to
	// generating sequences, in chunks small enough not to stall them.
	budget := e.cfg.BatchSize - k
	if k > 0 {
		budget = min(budget, e.cfg.PrefillChunk)
	}
	slices.SortStableFunc(prefill, func(a, b *sequence) int { return a.queuedAt.Compare(b.queuedAt) })
	for _, s := range prefill {
		if budget == 0 {
			break
		}
		n := min(budget, len(s.tokens)-s.fed)
		for j := range n {
			last := s.fed+j == len(s.tokens)-1
			if last {
				s.batchIdx = b.NumTokens()
			}
			b.Add(s.tokens[s.fed+j], nil, s.nPast+j, last, s.id)
		}
		s.fed += n
		s.nPast += n
		budget -= n
	}

	start := time.Now()
	err := e.lctx.Decode(b)
	elapsed := time.Since(start)
	e.steps.Add(1)
	if err != nil {
		// The KV cache state is unknown after a failed step: fail everyone
		// in a slot rather than risk wrong text.
		e.log.Error("decode step failed", "error", err, "tokens", b.NumTokens())
		e.failSlots(fmt.Errorf("decode: %w", err))
		return
	}
	if k > 0 && k == b.NumTokens() {
		e.plan.observe(k, elapsed)
	}

	for _, s := range e.slots {
		if s == nil || s.batchIdx < 0 {
			continue
		}
		e.sample(s)
	}
}

// sample draws the next token of s from this step's logits and delivers the
// text it completes.
func (e *Engine) sample(s *sequence) {
	tok := s.sampler.Sample(e.lctx, s.batchIdx)
	s.sampler.Accept(tok, false)
	if e.model.TokenIsEog(tok) {
		e.finish(s, chat.FinishStop, s.text.flush())
		return
	}
	s.nGen++
	emit, stopped := s.text.push(e.model.TokenToPiece(tok))
	switch {
	case stopped:
		e.finish(s, chat.FinishStop, emit)
	case s.nGen >= s.maxTokens || s.nPast >= e.cfg.ContextPerSeq:
		e.finish(s, chat.FinishLength, emit+s.text.flush())
	default:
		s.out.push(emit)
		s.last = tok
	}
}

// finish delivers the last text and the result of s and frees its slot.
func (e *Engine) finish(s *sequence, reason, text string) {
	s.out.push(text)
	s.out.finish(outcome{Result: chat.Result{
		FinishReason:     reason,
		PromptTokens:     len(s.tokens),
		CompletionTokens: s.nGen,
		Model:            e.name,
	}})
	e.mu.Lock()
	e.release(s)
	e.mu.Unlock()
}

// failSlots fails every sequence in a slot.
func (e *Engine) failSlots(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.slots {
		if s != nil {
			s.out.finish(outcome{err: err})
			e.release(s)
		}
	}
}

// failAll fails everything still queued or running; used when closing.
func (e *Engine) failAll(err error) {
	e.failSlots(err)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.queue {
		s.out.finish(outcome{err: err})
	}
	e.queue = nil
}

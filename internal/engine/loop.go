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
	"github.com/slm-mesh/slm-mesh/internal/chat/functiongemma"
)

// sequence is one request in the engine. Fields below "loop-owned" are only
// touched by the loop goroutine.
type sequence struct {
	tokens    []int // the prompt, then the forced tokens
	forced    int   // of tokens, the last ones: the reply's first, which its grammar fixes (callPrefix, force)
	maxTokens int
	sampling  sampling
	grammar   *grammar // sampling.Constraint if the request asks for JSON or calls; freed by GenerateDeltas
	parse     bool     // the text holds function calls (GenerateDeltas parses it)
	oneCall   bool     // the grammar makes the reply one call, then the end (endCall)
	text      *textStream
	logprobs  heldLogprobs // if sampling.Logprobs; loop-owned
	out       *outbox
	queuedAt  time.Time
	cancelled atomic.Bool

	admittedAt time.Time // when it got a slot; set under the engine's mutex
	// prefilled is when its prompt was processed (Unix ns; 0: not yet),
	// for its trace.
	prefilled atomic.Int64

	// loop-owned
	sampler  *sampler // made when the sequence gets a slot
	id       int      // llama sequence id = slot index
	fed      int      // tokens already decoded (prompt, then forced)
	nPast    int      // tokens in the KV cache
	cached   int      // tokens found in the slot's KV cache at admission (cachedPrompt: of the prompt)
	genFed   []int    // completion tokens decoded into the KV cache
	last     int      // last sampled token, fed at the next step
	nGen     int      // completion tokens
	batchIdx int      // index of this sequence's logits in the current batch
	lastStep uint64   // step at which it last decoded, for round-robin fairness
}

func (s *sequence) generating() bool { return s.fed == len(s.tokens) }

// promptTokens is the length of s's prompt, without its forced tokens.
func (s *sequence) promptTokens() int { return len(s.tokens) - s.forced }

// fedPrompt is how many of s's prompt tokens have been decoded.
func (s *sequence) fedPrompt() int { return min(s.fed, s.promptTokens()) }

// cachedPrompt is how many of s's prompt tokens were found in its slot's
// KV cache (a repeated request may find its forced tokens there too).
func (s *sequence) cachedPrompt() int { return min(s.cached, s.promptTokens()) }

// outbox carries text and the final result from the loop to GenerateDeltas. The
// loop only appends and signals; it never waits for the reader.
type outbox struct {
	notify chan struct{} // cap 1

	mu       sync.Mutex
	pending  []byte
	logprobs []chat.TokenLogprob // of the tokens generated since the last take
	done     bool
	res      outcome
}

type outcome struct {
	chat.Result
	err error
}

func newOutbox() *outbox { return &outbox{notify: make(chan struct{}, 1)} }

// push adds text, and the logprob entries of the tokens it completes, to
// the next delta.
func (o *outbox) push(text string, logprobs []chat.TokenLogprob) {
	if text == "" && len(logprobs) == 0 {
		return
	}
	o.mu.Lock()
	o.pending = append(o.pending, text...)
	o.logprobs = append(o.logprobs, logprobs...)
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

// take returns the text and logprobs pushed since the last call and, once
// finished, the outcome.
func (o *outbox) take() (chat.Delta, outcome, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	d := chat.Delta{Content: string(o.pending), Logprobs: o.logprobs}
	o.pending, o.logprobs = o.pending[:0], nil
	return d, o.res, o.done
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
				e.failAll(closing())
				return
			case <-e.wake:
			}
			continue
		}
		select {
		case <-quit:
			e.failAll(closing())
			return
		default:
		}
		step++
		e.step(step)
	}
}

// admit frees the slots of cancelled sequences, moves queued requests into
// free slots (each to the one whose cache shares most of its prompt, see
// pickSlot) and returns the number of slots in use.
func (e *Engine) admit() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.slots {
		if s != nil && s.cancelled.Load() {
			e.release(s, true) // what it decoded is still valid
		}
	}
	for len(e.queue) > 0 {
		i := e.pickSlot(e.queue[0].tokens)
		if i < 0 {
			break
		}
		s := e.queue[0]
		e.queue = e.queue[1:]
		s.sampler, s.id = newSampler(s.sampling), i
		s.admittedAt = time.Now()
		e.slots[i] = s
		e.seat(s)
	}
	active := 0
	for _, s := range e.slots {
		if s != nil {
			active++
		}
	}
	return active
}

// release empties s's slot. With keep (and prompt reuse on) the slot's KV
// cache stays as s left it, for a later request sharing its prefix;
// otherwise it is cleared. Called with e.mu held, from the loop.
func (e *Engine) release(s *sequence, keep bool) {
	e.keepOrClear(s, keep)
	e.slots[s.id] = nil
	e.hold.observe(time.Since(s.admittedAt))
	s.sampler = nil
	e.promptTokens.Add(uint64(s.fedPrompt()))
	e.cachedTokens.Add(uint64(s.cachedPrompt()))
	e.completionTokens.Add(uint64(s.nGen))
}

// step runs one round of the loop: a decode step for (some of) the
// generating sequences, then a prefill step for the oldest waiting prompt.
//
// The two are separate llama_decode calls on purpose. Our context keeps one
// KV stream per sequence, and llama.cpp then splits a batch into "equal"
// micro-batches: each takes the same number of tokens from a run of
// consecutive sequence ids, in batch order. A batch mixing one token of a
// generating sequence with 32 of a prompt would become a 2-token and a
// 31-token micro-batch — two passes over the weights, the first at the worst
// size (docs/PERFORMANCE.md). Likewise the decode step lists its sequences
// in id order, so that consecutive slots decode in one pass.
func (e *Engine) step(step uint64) {
	e.mu.Lock()
	var gen, prefill []*sequence
	for _, s := range e.slots {
		switch {
		case s == nil:
		case s.generating():
			gen = append(gen, s)
		default:
			prefill = append(prefill, s)
		}
	}
	e.mu.Unlock()

	if k := e.plan.choose(len(gen), step); k > 0 {
		// The sequences that waited longest go first.
		slices.SortStableFunc(gen, func(a, b *sequence) int { return cmp.Compare(a.lastStep, b.lastStep) })
		chosen := gen[:k]
		slices.SortFunc(chosen, func(a, b *sequence) int { return cmp.Compare(a.id, b.id) })
		if !e.decodeStep(chosen, step) {
			return
		}
	}
	if len(prefill) > 0 {
		s := slices.MinFunc(prefill, func(a, b *sequence) int { return a.queuedAt.Compare(b.queuedAt) })
		budget := e.cfg.BatchSize
		if len(gen) > 0 {
			// Next to generating sequences a prompt goes in in chunks, so
			// that their next token is at most one chunk late.
			budget = e.cfg.PrefillChunk
		}
		e.prefillStep(s, budget)
	}
}

// decodeStep decodes the next token of each of seqs, samples and delivers
// text. It reports false if the step failed (every slot has been failed).
func (e *Engine) decodeStep(seqs []*sequence, step uint64) bool {
	b := e.batch
	b.Clear()
	for _, s := range seqs {
		s.batchIdx = b.NumTokens()
		b.Add(s.last, nil, s.nPast, true, s.id)
		s.nPast++
		s.genFed = append(s.genFed, s.last)
		s.lastStep = step
	}
	start := time.Now()
	if !e.decode(b) {
		return false
	}
	e.plan.observe(len(seqs), time.Since(start))
	for _, s := range seqs {
		e.sampleAndDeliver(s)
	}
	return true
}

// prefillStep decodes up to budget tokens of s's prompt (and forced
// tokens) and, when that completes them, delivers the forced tokens and
// samples the first drawn one.
func (e *Engine) prefillStep(s *sequence, budget int) {
	b := e.batch
	b.Clear()
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
	if e.decode(b) && s.generating() {
		s.prefilled.Store(time.Now().UnixNano())
		if e.force(s) {
			e.sampleAndDeliver(s)
		}
	}
}

// force delivers s's forced tokens, decoded with its prompt, as if drawn
// (their text, the penalties; its grammar was advanced past them when it
// was prepared). It reports whether s goes on: one of them may end it (a
// stop string, max_tokens).
func (e *Engine) force(s *sequence) bool {
	for _, tok := range s.tokens[s.promptTokens():] {
		s.sampler.remember(tok)
		if !e.emit(s, tok) {
			return false
		}
	}
	return true
}

// decode runs one llama_decode. The KV cache state is unknown after a
// failed step, so on failure every sequence in a slot is failed rather than
// risk wrong text.
func (e *Engine) decode(b *llama.Batch) bool {
	err := e.lctx.Decode(b)
	e.steps.Add(1)
	if err != nil {
		e.log.Error("decode step failed", "error", err, "tokens", b.NumTokens())
		e.failSlots(fmt.Errorf("decode: %w", err))
		return false
	}
	return true
}

// sampleAndDeliver draws s's next token from this step's logits and
// delivers it.
func (e *Engine) sampleAndDeliver(s *sequence) {
	e.deliver(s, s.sampler.sample(e.lctx.GetLogitsIth(s.batchIdx)))
}

// deliver records tok as the next token of s and delivers the text it
// completes.
func (e *Engine) deliver(s *sequence, tok int) {
	if tok < 0 {
		s.out.finish(outcome{err: fmt.Errorf("no token to sample for sequence %d: no logits, or the grammar allows none", s.id)})
		e.mu.Lock()
		e.release(s, false)
		e.mu.Unlock()
		return
	}
	s.sampler.accept(tok)
	if e.model.TokenIsEog(tok) {
		e.finish(s, chat.FinishStop, s.text.flush())
		return
	}
	if e.emit(s, tok) && !(s.oneCall && e.endCall(s)) {
		s.last = tok
	}
}

// endCall ends s's call without decoding another token when its grammar
// allows <end_function_call> next: the call's arguments, always an object
// (functiongemma.Grammar), are then whole, so nothing else is allowed, and
// after it only the end of the generation (s.oneCall). It delivers the tag
// and finishes s, saving the two decode steps that would draw the tag and
// the end, and reports whether it did. (A grammar GenerateDeltas has freed,
// its request gone, allows everything: the sequence just ends sooner.)
func (e *Engine) endCall(s *sequence) bool {
	end := e.tools.ids[functiongemma.EndCall]
	if !s.grammar.allows(end) {
		return false
	}
	s.sampler.accept(end)
	if e.emit(s, end) {
		e.finish(s, chat.FinishStop, s.text.flush())
	}
	return true
}

// emit counts tok, a completion token that does not end the generation,
// and delivers the text it completes, or finishes s when that text ends
// in a stop string or s has no room left. It reports whether s goes on.
func (e *Engine) emit(s *sequence, tok int) bool {
	s.nGen++
	piece := e.model.TokenToPiece(tok)
	if s.sampling.Logprobs {
		s.logprobs.add(e.tokenLogprob(s.sampler, piece), s.text.pushed+len(piece))
	}
	emit, stopped := s.text.push(piece)
	switch {
	case stopped:
		e.finish(s, chat.FinishStop, emit)
	case s.nGen >= s.maxTokens || s.nPast >= e.cfg.ContextPerSeq:
		e.finish(s, chat.FinishLength, emit+s.text.flush())
	default:
		s.out.push(emit, s.logprobs.settled(s.text.emitted))
		return true
	}
	return false
}

// finish delivers the last text and the result of s and frees its slot.
func (e *Engine) finish(s *sequence, reason, text string) {
	s.out.push(text, s.logprobs.final(s.text.kept()))
	s.out.finish(outcome{Result: chat.Result{
		FinishReason:     reason,
		PromptTokens:     s.promptTokens(),
		CompletionTokens: s.nGen,
		CachedTokens:     s.cachedPrompt(),
		Model:            e.name,
	}})
	e.mu.Lock()
	e.release(s, true)
	e.mu.Unlock()
}

// failSlots fails every sequence in a slot.
func (e *Engine) failSlots(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.slots {
		if s != nil {
			s.out.finish(outcome{err: err})
			e.release(s, false) // the KV cache state is unknown
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

// measureStep times the step the loop repeats while n slots generate, one
// token in each of n sequences, for the queue's estimate of how long a
// request keeps its slot before any has (priorHold). The first step of a
// shape also builds its compute graph, so it runs untimed; of the two
// timed after it the longer counts. The KV cache is cleared afterwards.
// 0 if a step fails: the queue then has no prior.
func measureStep(lctx *llama.Context, b *llama.Batch, n int) time.Duration {
	defer lctx.KvCacheClear()
	var step time.Duration
	for pos := range 3 {
		b.Clear()
		for seq := range n {
			b.Add(0, nil, pos, true, seq) // any token costs the same
		}
		start := time.Now()
		if err := lctx.Decode(b); err != nil {
			return 0
		}
		if pos > 0 {
			step = max(step, time.Since(start))
		}
	}
	return step
}

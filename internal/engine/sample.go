package engine

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"slices"
)

// sampling holds a request's sampling fields, checked (see samplingParams).
type sampling struct {
	Temp           float32 // 0: the most likely token (greedy)
	TopK           int     // keep the k most likely tokens; 0: all
	TopP           float32 // keep the most likely tokens that make up this much probability
	MinP           float32 // drop tokens less likely than MinP × the most likely one
	RepeatLastN    int     // how many of the last generated tokens the penalties look at
	PenaltyRepeat  float32 // divides a recent token's positive logit (multiplies a negative one)
	PenaltyFreq    float32 // subtracted once per occurrence of a recent token
	PenaltyPresent float32 // subtracted once from every recent token
	Seed           uint64

	// Logprobs asks for the drawn token's log probability, TopLogprobs
	// for that many of the most likely tokens (see sampler.logprob).
	Logprobs    bool
	TopLogprobs int
	// Constraint, if set, limits what may be drawn (a grammar).
	Constraint constraint
}

// constraint limits the tokens a sampler may draw: a grammar (grammar.go).
// The sampler draws as if unconstrained, and only if the token is not
// allowed masks the logits and draws again, as llama.cpp's sampler does:
// most tokens a model draws are allowed, and checking one costs far less
// than masking a whole vocabulary. The result follows the constrained
// distribution: an allowed token t is drawn either at once, with
// probability p(t), or after a refusal, with probability (1−A)·p(t)/A
// where A is the allowed mass; together p(t)/A. (With top-k, top-p or
// min-p, as in llama.cpp, the first draw is from the truncated
// distribution and the second truncates the allowed tokens afresh.)
//
// The second draw masks first if that is cheap (a grammar state that
// allows a few tokens: a tag, a key, a digit), then looks at the most
// likely tokens (redraw), and masks whatever it costs only when they do
// not settle it.
type constraint interface {
	// allows reports whether tok may come next.
	allows(tok int) bool
	// filter keeps the candidates that may come next, in order, in c's
	// storage.
	filter(c candidates) candidates
	// mask sets the logits of the tokens that may not come next to −Inf
	// and reports whether any token may. With limit > 0 it gives up
	// (done false, logits as they were) rather than check more than
	// limit tokens.
	mask(logits []float32, limit int) (done, any bool)
	// accept records tok as drawn.
	accept(tok int)
}

// sampler draws the tokens of one sequence from the logits of its decode
// steps. It applies a request's fields in llama.cpp's order — penalties,
// top-k, top-p, min-p, temperature — and then draws from what is left with
// its own random source, so the same seed gives the same tokens.
//
// It is Go rather than llama.cpp's sampler for two reasons: a llama.cpp
// sampler holds ~3 MB of C memory per request (a candidate per vocabulary
// entry) that only a Go finalizer frees; and the common case (top-k) needs
// one pass over the logits with a k-entry heap, not a 262,144-entry
// candidate array.
type sampler struct {
	sampling
	rng    *rand.Rand
	recent []int32 // the last RepeatLastN generated tokens, a ring
	next   int     // where the ring writes next once full

	cand    candidates   // reused between draws
	weights []float64    // reused between draws
	counts  []tokenCount // reused between draws

	// With Logprobs, the last draw's: the log of the softmax denominator
	// of the penalised logits, the drawn token's log probability, and the
	// TopLogprobs most likely tokens, most likely first (logit in place of
	// log probability until logprob subtracts lse).
	lse     float64
	drawnLP float64
	top     candidates
}

type candidate struct {
	id    int32
	logit float32
}

type tokenCount struct {
	id int32
	n  int
}

func newSampler(p sampling) *sampler {
	return &sampler{sampling: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))}
}

// accept records a generated token for the penalties and the constraint.
func (s *sampler) accept(tok int) {
	if s.Constraint != nil {
		s.Constraint.accept(tok)
	}
	s.remember(tok)
}

// remember records a generated token for the penalties only: a token the
// constraint has already been advanced past (sequence.forced).
func (s *sampler) remember(tok int) {
	switch {
	case s.RepeatLastN <= 0:
	case len(s.recent) < s.RepeatLastN:
		s.recent = append(s.recent, int32(tok))
	default:
		s.recent[s.next] = int32(tok)
		s.next = (s.next + 1) % s.RepeatLastN
	}
}

// sample returns the next token, or -1 when there are no logits (llama.cpp
// had none for the sequence) or the constraint allows no token. It may
// change logits (the penalties and the constraint's mask are applied in
// place). NaN logits are never drawn.
func (s *sampler) sample(logits []float32) int {
	if len(logits) == 0 {
		return -1
	}
	s.penalize(logits)
	if s.Logprobs {
		s.measure(logits)
	}
	tok := s.pick(logits)
	if c := s.Constraint; c != nil && !c.allows(tok) {
		done, any := c.mask(logits, cheapMask)
		if !done {
			if tok = s.redraw(logits); tok < 0 {
				done, any = c.mask(logits, 0)
			}
		}
		if done {
			if !any {
				return -1
			}
			if tok = s.pick(logits); math.IsInf(float64(logits[tok]), -1) {
				// draw's rounding fallback may land on a masked token, which
				// the constraint must never accept.
				tok = argmax(logits)
			}
		}
	}
	if s.Logprobs {
		// The mask leaves an allowed token's logit as it was, so this is
		// the log probability before the constraint.
		s.drawnLP = float64(logits[tok]) - s.lse
	}
	return tok
}

// measure computes the log-softmax denominator of logits and their
// TopLogprobs most likely tokens, for logprob.
func (s *sampler) measure(logits []float32) {
	s.lse = logSumExp(logits)
	s.top = s.top[:0]
	if s.TopLogprobs > 0 {
		s.top = topK(s.top, logits, min(s.TopLogprobs, len(logits)))
	}
}

// logprob returns the last drawn token's log probability and the most
// likely tokens with theirs; only with Logprobs. The probabilities are the
// softmax of the logits after the penalties, at temperature 1, before
// top-k, top-p, min-p and any constraint: the model's distribution as
// the request's penalties shape it. Log probabilities are finite: −Inf
// (and NaN) become minLogprob, as OpenAI reports impossible tokens.
func (s *sampler) logprob() (float64, []candidate) {
	return finiteLogprob(s.drawnLP), s.top
}

// topLogprob is the log probability of an entry of logprob's list.
func (s *sampler) topLogprob(c candidate) float64 {
	return finiteLogprob(float64(c.logit) - s.lse)
}

// minLogprob stands for a log probability of −Inf, which JSON cannot
// carry; OpenAI uses the same value.
const minLogprob = -9999.0

func finiteLogprob(lp float64) float64 {
	if math.IsNaN(lp) || lp < minLogprob {
		return minLogprob
	}
	return lp
}

// pick draws a token from penalised logits with the request's
// truncation and temperature.
func (s *sampler) pick(logits []float32) int {
	if s.Temp <= 0 {
		return argmax(logits)
	}
	c, mass := s.candidates(logits)
	if c = s.nucleus(c, mass); len(c) == 0 {
		return argmax(logits) // nothing but NaN and -Inf: no distribution
	}
	return int(s.draw(c))
}

// cheapMask is the most tokens a mask may check before redraw is tried:
// about what redraw itself checks, the 256 most likely tokens and what
// filtering them costs.
const cheapMask = 512

// shortlist is the fewest most likely tokens redraw checks.
const shortlist = 256

// redraw draws again after the constraint refused the first draw, from
// the most likely tokens alone when they settle the draw, as pick would
// from the logits masked by the constraint; otherwise it returns -1 and
// the caller masks.
//
// Why that is exact: the n most likely tokens (n ≥ shortlist) hold every
// token whose logit is above the n-th's, the floor; every token left
// unchecked is at or below it. pick on masked logits reads only the best
// allowed token when greedy, and only the top-k allowed ones with top-k
// (top-p measures its mass against those, min-p against the best of
// them). So once that many allowed tokens are found above the floor,
// they are the ones pick would read, in the same order, and the draw
// from them is pick's. (Which of several equal logits top-k keeps may
// differ, as it may between any two top-k implementations.) Without
// top-k, top-p and the temperature read every allowed token's mass: that
// is left to the mask.
//
// When the shortlist holds some allowed tokens but too few, it is
// widened once, to about what the share allowed in it says will do: a
// grammar state that allows a few percent of the vocabulary (the first
// characters of a bounded string) would otherwise cost a mask checking
// tens of thousands of tokens, each against many grammar stacks. None
// allowed says the state is narrow (a tag, a key, a digit), where the
// mask is cheap.
func (s *sampler) redraw(logits []float32) int {
	need := 1
	if s.Temp > 0 {
		if s.TopK <= 0 || s.TopK >= len(logits) {
			return -1
		}
		need = s.TopK
	}
	n := max(shortlist, 4*need)
	if n >= len(logits) {
		return -1 // no cheaper than the mask
	}
	for widened := false; ; widened = true {
		c := topK(s.cand, logits, n)
		s.cand = c
		floor := c[n-1].logit
		c = s.Constraint.filter(c)
		above := 0
		for above < len(c) && c[above].logit > floor {
			above++
		}
		if above >= need {
			c = c[:need]
			if s.Temp <= 0 {
				return int(c[0].id)
			}
			return int(s.draw(s.nucleus(c, mass(c, c[0].logit))))
		}
		if above == 0 || widened {
			return -1
		}
		// Twice what the share found suggests, so that a share a little
		// lower further down still settles it.
		if n = max(2*n, 2*need*n/above); n >= len(logits)/2 {
			return -1 // no cheaper than the mask
		}
	}
}

// penalize lowers the logits of recently generated tokens.
func (s *sampler) penalize(logits []float32) {
	if len(s.recent) == 0 || (s.PenaltyRepeat == 1 && s.PenaltyFreq == 0 && s.PenaltyPresent == 0) {
		return
	}
	s.counts = s.counts[:0]
	for _, tok := range s.recent {
		i := slices.IndexFunc(s.counts, func(c tokenCount) bool { return c.id == tok })
		if i < 0 {
			s.counts = append(s.counts, tokenCount{id: tok})
			i = len(s.counts) - 1
		}
		s.counts[i].n++
	}
	for _, c := range s.counts {
		l := logits[c.id]
		if l <= 0 {
			l *= s.PenaltyRepeat
		} else {
			l /= s.PenaltyRepeat
		}
		logits[c.id] = l - float32(c.n)*s.PenaltyFreq - s.PenaltyPresent
	}
}

// candidates returns the tokens top-k keeps, most likely first, and the
// probability mass top-p is measured against: Σ exp(logit − best) over what
// top-k kept. Without top-k every token counts in the mass, but only those
// min-p keeps become candidates (top-p and min-p both keep a prefix of the
// sorted tokens, so the shorter wins whichever goes first), and they are
// sorted only if top-p needs the order: sorting the whole vocabulary takes
// tens of milliseconds.
func (s *sampler) candidates(logits []float32) (candidates, float64) {
	k := s.TopK
	if k > 0 && k < len(logits) {
		c := s.topK(logits, k)
		return c, mass(c, c[0].logit)
	}
	best := logits[argmax(logits)]
	floor := float32(math.Inf(-1))
	if s.MinP > 0 {
		floor = best + float32(math.Log(float64(s.MinP)))
	}
	c := s.cand[:0]
	var total float64
	for i, l := range logits {
		if l != l {
			continue // NaN
		}
		total += math.Exp(float64(l - best))
		if l >= floor {
			c = append(c, candidate{int32(i), l})
		}
	}
	if s.TopP < 1 {
		slices.SortFunc(c, byLogitDesc)
	}
	s.cand = c
	return c, total
}

// topK selects the k largest logits into s.cand.
func (s *sampler) topK(logits []float32, k int) candidates {
	s.cand = topK(s.cand, logits, k)
	return s.cand
}

// topK selects the k largest logits (0 < k ≤ len(logits)), most likely
// first, into h's storage, with a min-heap in one pass: most entries are
// compared with the heap's smallest and skipped.
func topK(h candidates, logits []float32, k int) candidates {
	h = h[:0]
	for i, l := range logits[:k] {
		if l != l { // NaN would stick at the root: nothing compares above it
			l = float32(math.Inf(-1))
		}
		h = append(h, candidate{int32(i), l})
	}
	heap.Init(&h)
	floor := h[0].logit // in a register: the loop is mostly this comparison
	for i, l := range logits[k:] {
		if l > floor {
			h[0] = candidate{int32(k + i), l}
			heap.Fix(&h, 0)
			floor = h[0].logit
		}
	}
	slices.SortFunc(h, byLogitDesc)
	return h
}

// nucleus applies top-p (against total, see candidates) then min-p to
// candidates sorted most likely first; both keep a prefix, and at least one
// token.
func (s *sampler) nucleus(c candidates, total float64) candidates {
	if len(c) == 0 || (s.TopP >= 1 && s.MinP <= 0) {
		return c
	}
	top := c[0].logit
	if s.TopP < 1 {
		want, sum := float64(s.TopP)*total, 0.0
		for i, x := range c {
			if sum += math.Exp(float64(x.logit - top)); sum >= want {
				c = c[:i+1]
				break
			}
		}
	}
	if s.MinP > 0 {
		floor := top + float32(math.Log(float64(s.MinP)))
		n := 1
		for n < len(c) && c[n].logit >= floor {
			n++
		}
		c = c[:n]
	}
	return c
}

// mass is Σ exp(logit − top) over c.
func mass(c candidates, top float32) float64 {
	var m float64
	for _, x := range c {
		m += math.Exp(float64(x.logit - top))
	}
	return m
}

// draw picks a candidate with probability softmax(logit / Temp).
func (s *sampler) draw(c candidates) int32 {
	top := c[0].logit
	for _, x := range c[1:] {
		top = max(top, x.logit)
	}
	if math.IsInf(float64(top), 1) { // the others weigh nothing next to it
		return c[slices.IndexFunc(c, func(x candidate) bool { return x.logit == top })].id
	}
	inv := 1 / float64(s.Temp)
	w := s.weights[:0]
	var total float64
	for _, x := range c {
		w = append(w, math.Exp(float64(x.logit-top)*inv))
		total += w[len(w)-1]
	}
	s.weights = w
	u := s.rng.Float64() * total
	for i, x := range w {
		if u -= x; u < 0 {
			return c[i].id
		}
	}
	return c[len(c)-1].id // rounding left u a hair above 0
}

// logSumExp is log Σ exp(l) over logits, the log-softmax denominator,
// computed stably; NaN entries are left out. With an infinite largest logit
// there is no distribution and it is that logit (logprob then reports
// minLogprob).
func logSumExp(logits []float32) float64 {
	best := logits[argmax(logits)]
	if math.IsInf(float64(best), 0) {
		return float64(best)
	}
	var sum float64
	for _, l := range logits {
		if l == l { // not NaN
			sum += math.Exp(float64(l - best))
		}
	}
	return float64(best) + math.Log(sum)
}

// argmax is the index of the largest logit, the first of equals; NaN is
// never largest, and all NaN gives 0.
func argmax(logits []float32) int {
	best, top := 0, float32(math.Inf(-1))
	for i, l := range logits {
		if l > top {
			best, top = i, l
		}
	}
	return best
}

func byLogitDesc(a, b candidate) int {
	if a.logit != b.logit {
		if a.logit > b.logit {
			return -1
		}
		return 1
	}
	return int(a.id - b.id)
}

// candidates is a min-heap by logit while topK selects.
type candidates []candidate

func (h candidates) Len() int           { return len(h) }
func (h candidates) Less(i, j int) bool { return h[i].logit < h[j].logit }
func (h candidates) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *candidates) Push(x any)        { *h = append(*h, x.(candidate)) }
func (h *candidates) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

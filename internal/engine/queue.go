package engine

import "time"

// Bounds of the RetryAfter of an overloaded refusal: HTTP's Retry-After
// counts whole seconds, and a client told to wait minutes had better try
// another server.
const (
	minRetryAfter = time.Second
	maxRetryAfter = 60 * time.Second
)

// holdTime is how long requests keep a slot, from admission to release: an
// exponentially weighted mean over the last few dozen, so that it follows
// the load (a slot is held longer when more sequences share each step).
// Until it has holdWeight's worth of observations it is their plain mean,
// so that the first one, usually the shortest of a burst, does not stand for
// the next dozen.
type holdTime struct {
	mean time.Duration // 0 until a slot has been released
	n    int           // observations
}

// holdWeight is the weight of the newest observation.
const holdWeight = 1.0 / 16

func (h *holdTime) observe(held time.Duration) {
	h.n++
	w := max(1/float64(h.n), holdWeight)
	h.mean += time.Duration(w * float64(held-h.mean))
	h.mean = max(h.mean, time.Nanosecond)
}

// priorMargin is how much longer than its tokens' worth of decode steps a
// request is assumed to keep its slot, before any has been measured (see
// priorHold): the step is timed once, at Open, at the start of the context
// on an idle engine; under load the steps lengthen (other processes take
// the CPUs, attention grows with the context, prompts are prefilled between
// steps), and an estimate that errs short lets in requests that then wait
// past the bound. On 2 busy CPUs with a gemma-3-270m-sized model, a flood's
// requests held their slots 0.5 to 1.05 times their tokens' worth of the
// step timed at Open; twice is on the safe side, and lasts one round of
// slots (see holdEstimate).
const priorMargin = 2

// priorHold is how long a request of tokens tokens, prompt and max_tokens,
// is expected to keep its slot before any request has: one decode step per
// completion token, steps taking step (every slot generating). Its prompt
// counts as many steps as it has tokens, an overcount: a prompt is prefilled
// many tokens at a time, but while it is, the other slots wait, so each
// request also waits for the others' prompts; at step/slots or less a
// prompt token, that sums to about a step per token of its own. The
// request's max_tokens bounds what it generates, so this errs long for
// requests that stop sooner, as a prior should. 0 when step is unknown.
func priorHold(step time.Duration, tokens int) time.Duration {
	return time.Duration(priorMargin * float64(tokens) * float64(step))
}

// holdEstimate is how long a request is expected to keep its slot, from
// the mean measured so far (h) and the request's own prior (priorHold).
//
// Until a round of slots (slots releases) has been measured, the larger of
// the two: the first requests to leave a burst are its shortest, so their
// mean can only argue for a longer hold, never a shorter one, and a prior
// that turns out short is corrected by the first release that outlasts it.
// After that the measure replaces the prior rather than blending with it:
// it is the quantity itself, with the machine's real contention and the
// requests' real lengths (most stop before max_tokens), and a blend would
// keep the prior's margin, refusing requests that would have waited within
// the bound, for as long as the engine runs.
func holdEstimate(h holdTime, slots int, prior time.Duration) time.Duration {
	if h.n >= slots {
		return h.mean
	}
	return max(h.mean, prior)
}

// admission decides whether a request may wait for a slot.
//
// It follows the slots: a busy one frees when its request has kept it for
// its expected hold, and is then taken by the next queued request for that
// one's hold, and so on; the newcomer gets the slot handed out after all
// those in front of it have one. Following each slot matters after a burst:
// requests that took their slots together leave together, so the first one
// queued behind them waits a whole hold, not the hold/slots of slots freeing
// one by one.
//
// That walk trusts each request to leave when expected, and one that has
// outlasted its hold is taken to leave at once; so the wait is also at least
// that of slots freeing steadily, one every hold/slots (the mean hold of the
// requests in slots and queue): with ahead requests in front of it,
// (ahead+1)·hold/slots.
//
// A request is refused when its wait is past maxWait or ahead is queueSize
// or more. It is told to retry when enough slots have freed, by the same
// estimate, for its place to be within both bounds.
type admission struct {
	slots     int
	queueSize int           // ahead must stay below it
	maxWait   time.Duration // negative: no bound
	// known: the holds below are; otherwise only the count decides.
	known  bool
	busy   []slotUse       // the requests in slots
	queued []time.Duration // the expected holds of the queued requests, oldest first
}

// slotUse is a request in a slot as admission sees it.
type slotUse struct {
	hold time.Duration // how long it is expected to keep the slot
	held time.Duration // how long it has had it
}

// judge says whether a request arriving now may join the queue; if not,
// how long it would have waited (0 when a slot is free or nothing is known)
// and when to retry (0 when nothing is known).
func (a admission) judge() (ok bool, wait, retryAfter time.Duration) {
	ahead := len(a.queued) - (a.slots - len(a.busy)) // fewer than 0: a slot is free for it
	if ahead < 0 {
		return true, 0, 0
	}
	if !a.known {
		return ahead < a.queueSize, 0, 0
	}
	at := a.handouts()
	var sum time.Duration
	for _, u := range a.busy {
		sum += u.hold
	}
	for _, h := range a.queued {
		sum += h
	}
	every := sum / time.Duration(len(a.busy)+len(a.queued)) / time.Duration(a.slots)
	wait = max(at[len(a.queued)], time.Duration(ahead+1)*every)
	if ahead < a.queueSize && (a.maxWait < 0 || wait <= a.maxWait) {
		return true, wait, 0
	}
	// Retry when both bounds would let it in: its wait shortens as time
	// passes, and its place moves up as slots are handed out.
	var retry time.Duration
	if a.maxWait >= 0 {
		retry = wait - a.maxWait
	}
	if n := ahead - a.queueSize + 1; n > 0 { // hand-outs it must wait for
		retry = max(retry, at[len(a.queued)-a.queueSize], time.Duration(n)*every)
	}
	return false, wait, min(max(retry, minRetryAfter), maxRetryAfter)
}

// handouts is when the slots are expected to be handed out: the i-th to
// the i-th queued request, the last to a newcomer.
func (a admission) handouts() []time.Duration {
	frees := make([]time.Duration, a.slots) // when each slot is next free; a free one is now
	for i, u := range a.busy {
		frees[i] = max(u.hold-u.held, 0)
	}
	at := make([]time.Duration, 0, len(a.queued)+1)
	for i := range len(a.queued) + 1 {
		next := 0
		for j, f := range frees {
			if f < frees[next] {
				next = j
			}
		}
		at = append(at, frees[next])
		if i < len(a.queued) {
			frees[next] += a.queued[i]
		}
	}
	return at
}

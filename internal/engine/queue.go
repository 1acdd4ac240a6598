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
type holdTime struct {
	mean time.Duration // 0 until a slot has been released
}

// holdWeight is the weight of the newest observation.
const holdWeight = 1.0 / 16

func (h *holdTime) observe(held time.Duration) {
	if h.mean == 0 {
		h.mean = max(held, time.Nanosecond)
		return
	}
	h.mean += time.Duration(holdWeight * float64(held-h.mean))
	h.mean = max(h.mean, time.Nanosecond)
}

// admission decides whether a request may wait for a slot.
//
// With every slot busy, slots free one after another, on average every
// hold/slots; a request with ahead requests in front of it gets a slot
// after ahead+1 of them have freed, so it expects to wait
// (ahead+1)·hold/slots. It is refused when that is past maxWait, or when
// ahead is QueueSize or more. A refused request is told to retry when
// enough slots have freed for its place to be within both bounds.
type admission struct {
	slots     int
	queueSize int           // ahead must stay below it
	maxWait   time.Duration // negative: no bound
	hold      time.Duration // mean time a request keeps a slot; 0: not known yet
}

// judge says whether a request with ahead requests in front of it (fewer
// than 0: a slot is free for it) may join the queue; if not, how long it
// would have waited (0 when not known) and when to retry (0 when not
// known).
func (a admission) judge(ahead int) (ok bool, wait, retryAfter time.Duration) {
	if ahead < 0 {
		return true, 0, 0
	}
	last := a.queueSize - 1 // the last place a request may take
	var every time.Duration // between two slots freeing
	if a.hold > 0 && a.slots > 0 {
		every = a.hold / time.Duration(a.slots)
		wait = time.Duration(ahead+1) * every
		if a.maxWait >= 0 {
			last = min(last, int(a.maxWait/max(every, 1))-1)
		}
	}
	if ahead <= last {
		return true, wait, 0
	}
	if every == 0 {
		return false, 0, 0
	}
	retryAfter = time.Duration(ahead-last) * every
	return false, wait, min(max(retryAfter, minRetryAfter), maxRetryAfter)
}

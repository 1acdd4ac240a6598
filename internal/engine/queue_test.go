package engine

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// staggered is n busy slots whose requests hold hold each and took their
// slots hold/n apart: one frees every hold/n, the first in hold/n.
func staggered(n int, hold time.Duration) []slotUse {
	u := make([]slotUse, n)
	for i := range u {
		u[i] = slotUse{hold: hold, held: time.Duration(i) * hold / time.Duration(n)}
	}
	return u
}

// together is n busy slots whose requests took them at once, held ago.
func together(n int, hold, held time.Duration) []slotUse {
	u := make([]slotUse, n)
	for i := range u {
		u[i] = slotUse{hold: hold, held: held}
	}
	return u
}

// holds is n queued requests expected to hold hold each.
func holds(n int, hold time.Duration) []time.Duration {
	h := make([]time.Duration, n)
	for i := range h {
		h[i] = hold
	}
	return h
}

func TestAdmission(t *testing.T) {
	t.Parallel()
	const s, ms = time.Second, time.Millisecond
	tests := []struct {
		name  string
		a     admission
		ok    bool
		wait  time.Duration
		retry time.Duration
	}{
		{"a slot is free", admission{slots: 8, queueSize: 32, maxWait: 30 * s, known: true, busy: staggered(7, 8*s)}, true, 0, 0},
		{"queued requests take the free slots first", admission{slots: 8, queueSize: 32, maxWait: 30 * s, known: true, busy: together(6, 8*s, 6*s), queued: holds(2, 8*s)}, true, 2 * s, 0},
		{"nothing known: the count decides", admission{slots: 8, queueSize: 32, maxWait: 30 * s, busy: make([]slotUse, 8), queued: make([]time.Duration, 31)}, true, 0, 0},
		{"nothing known, queue full: retry unknown", admission{slots: 8, queueSize: 32, maxWait: 30 * s, busy: make([]slotUse, 8), queued: make([]time.Duration, 32)}, false, 0, 0},
		// Slots held 8 s each, taken a second apart: one frees every second.
		{"first in line", admission{slots: 8, queueSize: 32, maxWait: 30 * s, known: true, busy: staggered(8, 8*s)}, true, 1 * s, 0},
		{"last within the budget", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: staggered(8, 8*s), queued: holds(29, 8*s)}, true, 30 * s, 0},
		{"one past the budget: retry when one slot frees", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: staggered(8, 8*s), queued: holds(30, 8*s)}, false, 31 * s, 1 * s},
		{"far past the budget", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: staggered(8, 8*s), queued: holds(49, 8*s)}, false, 50 * s, 20 * s},
		{"the count bound comes first", admission{slots: 8, queueSize: 32, maxWait: 60 * s, known: true, busy: staggered(8, 8*s), queued: holds(35, 8*s)}, false, 36 * s, 4 * s},
		{"no time bound", admission{slots: 8, queueSize: 32, maxWait: -1, known: true, busy: staggered(8, 80*s), queued: holds(31, 80*s)}, true, 320 * s, 0},
		{"no time bound, queue full", admission{slots: 8, queueSize: 32, maxWait: -1, known: true, busy: staggered(8, 80*s), queued: holds(32, 80*s)}, false, 330 * s, 10 * s},
		{"retry at least a second", admission{slots: 8, queueSize: 32, maxWait: 30 * s, known: true, busy: staggered(8, 80*ms), queued: holds(32, 80*ms)}, false, 330 * ms, 1 * s},
		{"retry at most a minute", admission{slots: 1, queueSize: 4, maxWait: 30 * s, known: true, busy: together(1, 10*time.Minute, 0)}, false, 10 * time.Minute, 60 * s},
		{"even the first waits too long", admission{slots: 2, queueSize: 8, maxWait: 1 * s, known: true, busy: staggered(2, 4*s)}, false, 2 * s, 1 * s},
		{"no queue", admission{slots: 2, queueSize: 0, maxWait: 30 * s, known: true, busy: staggered(2, 4*s)}, false, 2 * s, 2 * s},
		// Slots taken together leave together: a whole hold for the first
		// behind them, where one every hold/slots would say an eighth.
		{"behind a burst: a whole hold", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: together(8, 8*s, 0), queued: holds(7, 8*s)}, true, 8 * s, 0},
		{"behind a burst: the next round", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: together(8, 8*s, 0), queued: holds(8, 8*s)}, true, 16 * s, 0},
		{"behind a burst: the last round within the budget", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: together(8, 8*s, 0), queued: holds(23, 8*s)}, true, 24 * s, 0},
		{"behind a burst, a second into it", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: together(8, 8*s, 1*s)}, true, 7 * s, 0},
		{"behind a burst: one round past the budget", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: together(8, 8*s, 0), queued: holds(24, 8*s)}, false, 32 * s, 2 * s},
		{"behind a burst of long requests", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: together(8, 40*s, 0)}, false, 40 * s, 10 * s},
		// Requests past their hold are taken to leave now; the steady rate
		// still bounds the wait.
		{"overdue: one every hold/slots", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: together(8, 8*s, 10*s), queued: holds(29, 8*s)}, true, 30 * s, 0},
		{"overdue: one past", admission{slots: 8, queueSize: 64, maxWait: 30 * s, known: true, busy: together(8, 8*s, 10*s), queued: holds(30, 8*s)}, false, 31 * s, 1 * s},
	}
	for _, tc := range tests {
		ok, wait, retry := tc.a.judge()
		if ok != tc.ok || wait != tc.wait || retry != tc.retry {
			t.Errorf("%s: judge() = %v, %v, %v; want %v, %v, %v", tc.name, ok, wait, retry, tc.ok, tc.wait, tc.retry)
		}
	}
}

func TestHoldTime(t *testing.T) {
	t.Parallel()
	var h holdTime
	for _, d := range []time.Duration{4 * time.Second, 1 * time.Second, 1 * time.Second} {
		h.observe(d)
	}
	if h.mean != 2*time.Second || h.n != 3 {
		t.Fatalf("after 4s, 1s, 1s: mean %v of %d, want their mean, 2s of 3", h.mean, h.n)
	}
	for range 200 {
		h.observe(time.Second)
	}
	if h.mean < time.Second || h.mean > 1100*time.Millisecond {
		t.Fatalf("after 200 × 1s the mean is %v, want it to have followed to about 1s", h.mean)
	}
}

func TestHoldEstimate(t *testing.T) {
	t.Parallel()
	const s = time.Second
	tests := []struct {
		name  string
		h     holdTime
		prior time.Duration
		want  time.Duration
	}{
		{"nothing measured: the prior", holdTime{}, 20 * s, 20 * s},
		{"nothing measured, no prior", holdTime{}, 0, 0},
		{"the first releases cannot shorten the prior", holdTime{mean: 3 * s, n: 7}, 20 * s, 20 * s},
		{"but can lengthen it", holdTime{mean: 30 * s, n: 1}, 20 * s, 30 * s},
		{"a round measured replaces the prior", holdTime{mean: 3 * s, n: 8}, 20 * s, 3 * s},
	}
	for _, tc := range tests {
		if got := holdEstimate(tc.h, 8, tc.prior); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if got, want := priorHold(50*time.Millisecond, 210), time.Duration(priorMargin*210)*50*time.Millisecond; got != want {
		t.Errorf("prior of 210 tokens at 50ms a step: %v, want %v", got, want)
	}
}

// busySlot fills e's only slot with a long generation until the test ends.
func busySlot(t *testing.T, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Generate(ctx, userMsg("Once", 500), func(string) error { once.Do(func() { close(started) }); return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the long generation never started")
	}
}

// TestQueueWaitBound: once the engine has measured how long requests keep
// a slot, a request that would wait longer than MaxQueueWait is refused
// with overloaded and a RetryAfter from that measure, though the queue
// has room; without the bound it waits.
func TestQueueWaitBound(t *testing.T) {
	e := openStories(t, Config{Parallel: 1, QueueSize: 8, MaxQueueWait: time.Nanosecond, ContextPerSeq: 512})
	generate(t, e, userMsg("Once", 8)) // a measure of the hold time
	busySlot(t, e)
	_, err := e.Generate(context.Background(), userMsg("Once", 4), nil)
	var ee *chat.Error
	if !errors.As(err, &ee) || chat.Code(err) != chat.CodeOverloaded {
		t.Fatalf("got %v, want overloaded", err)
	}
	if ee.RetryAfter < minRetryAfter || ee.RetryAfter > maxRetryAfter || !strings.Contains(ee.Message, "limit") {
		t.Fatalf("refusal %+v: want a RetryAfter within [%v, %v] and a message naming the wait limit", ee, minRetryAfter, maxRetryAfter)
	}

	e = openStories(t, Config{Parallel: 1, QueueSize: 8, MaxQueueWait: -1, ContextPerSeq: 512})
	generate(t, e, userMsg("Once", 8))
	busySlot(t, e)
	if st := e.Stats(); st.QueueWait <= 0 {
		t.Fatalf("stats %+v: with the only slot busy a request would wait, want a QueueWait", st)
	}
	if _, err := e.Generate(context.Background(), userMsg("Once", 4), nil); err != nil {
		t.Fatalf("without a wait bound: %v", err)
	}
}

// TestFreshFloodBoundedByPrior: a flood on an engine that has finished no
// request yet is admitted by the prior (priorHold): as many as wait within
// MaxQueueWait by its estimate, the rest refused with a RetryAfter from the
// same estimate — not up to the count bound with no retry time, as when
// nothing had been measured. Once a round of slots has been measured, the
// measure takes over.
//
// stories260K decodes a step in a millisecond or two, so every estimate
// from its own step would round to Retry-After's floor of 1 s. The prior
// is given a step as long as a gemma-3-270m-sized model takes on a couple
// of CPUs, so that the decisions show the figures they follow; the step
// Open measured is checked apart.
func TestFreshFloodBoundedByPrior(t *testing.T) {
	const (
		parallel  = 8
		flood     = 60
		maxTokens = 200
		maxWait   = 30 * time.Second
		step      = 50 * time.Millisecond
	)
	e := openStories(t, Config{Parallel: parallel, QueueSize: 4 * flood, MaxQueueWait: maxWait})
	req := userMsg("Once", maxTokens)
	s, err := e.prepare(req)
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	measured := e.stepTime
	e.stepTime = step
	e.mu.Unlock()
	if measured <= 0 {
		t.Fatalf("Open measured no decode step (%v): a fresh engine has no prior", measured)
	}
	t.Logf("Open timed a step of %d sequences at %v", parallel, measured)

	// The prior: each request keeps its slot for hold. The first parallel
	// take the slots together and leave together, so the queued ones get
	// slots in rounds of parallel, a hold apart: those of the rounds that
	// end within maxWait are let in.
	hold := time.Duration(priorMargin * float64(len(s.tokens)+maxTokens) * float64(step))
	rounds := int(maxWait / hold)
	allowed := rounds * parallel
	if rounds < 1 || parallel+allowed >= flood {
		t.Fatalf("a hold of %v lets %d queue: the test wants some but not all of %d", hold, allowed, flood)
	}
	// A refused request would get a slot rounds+1 holds from when the
	// slots were taken: it may come back when that is within maxWait.
	retry := time.Duration(rounds+1)*hold - maxWait

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		refused []*chat.Error
		other   []error
	)
	start := make(chan struct{})
	for range flood {
		wg.Go(func() {
			<-start
			_, err := e.Generate(ctx, req, nil)
			var ee *chat.Error
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.As(err, &ee) && ee.Code == chat.CodeOverloaded:
				refused = append(refused, ee)
			case err != nil && !errors.Is(err, context.Canceled):
				other = append(other, err)
			}
		})
	}
	began := time.Now()
	close(start)

	// Every request judged: refused, or in a slot, queued or finished.
	judged := func() int {
		st := e.Stats()
		mu.Lock()
		defer mu.Unlock()
		return len(refused) + st.Busy + st.Queued + int(st.Requests)
	}
	deadline := time.Now().Add(30 * time.Second)
	for n := judged(); n < flood; n = judged() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s %d of %d requests judged", n, flood)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(began) // the most any slot had been held at a refusal
	e.mu.Lock()
	finished := e.hold.n
	e.mu.Unlock()
	if finished >= parallel {
		t.Fatalf("%d requests finished before the flood was judged: the measure, not the prior, judged part of it", finished)
	}

	mu.Lock()
	admitted := flood - len(refused)
	// A request that finished during the flood freed its slot for one more.
	if admitted < parallel+allowed || admitted > parallel+allowed+finished {
		t.Errorf("%d of %d admitted (%d finished meanwhile); the prior (a hold of %v) lets %d into the slots and %d wait within %v",
			admitted, flood, finished, hold, parallel, allowed, maxWait)
	}
	for _, ee := range refused {
		if ee.RetryAfter > retry || ee.RetryAfter < retry-elapsed || !strings.Contains(ee.Message, "limit") {
			t.Errorf("refusal %q, RetryAfter %v; want the wait limit named and RetryAfter %v less the time the slots had been held (at most %v)",
				ee.Message, ee.RetryAfter, retry, elapsed)
			break
		}
	}
	t.Logf("a hold of %v: %d of %d admitted, %d refused with RetryAfter %v less at most %v", hold, admitted, flood, len(refused), retry, elapsed)
	mu.Unlock()

	// The admitted finish; their holds, a round and more, replace the prior.
	wg.Wait()
	if len(other) > 0 {
		t.Fatalf("admitted requests failed: %v", other)
	}
	e.mu.Lock()
	h, got := e.hold, e.expectedHold(s)
	e.mu.Unlock()
	if h.n < parallel || got != h.mean {
		t.Fatalf("after %d releases a request is expected to hold %v, want the measured mean %v", h.n, got, h.mean)
	}
}

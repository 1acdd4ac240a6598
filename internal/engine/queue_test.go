package engine

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAdmission(t *testing.T) {
	t.Parallel()
	const s = time.Second
	tests := []struct {
		name  string
		a     admission
		ahead int
		ok    bool
		wait  time.Duration
		retry time.Duration
	}{
		{"a slot is free", admission{slots: 8, queueSize: 32, maxWait: 30 * s, hold: 10 * s}, -1, true, 0, 0},
		{"nothing measured: the count decides", admission{slots: 8, queueSize: 32, maxWait: 30 * s}, 31, true, 0, 0},
		{"nothing measured, queue full: retry unknown", admission{slots: 8, queueSize: 32, maxWait: 30 * s}, 32, false, 0, 0},
		// 8 slots held 8 s each: one frees every second.
		{"first in line", admission{slots: 8, queueSize: 32, maxWait: 30 * s, hold: 8 * s}, 0, true, 1 * s, 0},
		{"last within the budget", admission{slots: 8, queueSize: 64, maxWait: 30 * s, hold: 8 * s}, 29, true, 30 * s, 0},
		{"one past the budget: retry when one slot frees", admission{slots: 8, queueSize: 64, maxWait: 30 * s, hold: 8 * s}, 30, false, 31 * s, 1 * s},
		{"far past the budget", admission{slots: 8, queueSize: 64, maxWait: 30 * s, hold: 8 * s}, 49, false, 50 * s, 20 * s},
		{"the count bound comes first", admission{slots: 8, queueSize: 32, maxWait: 60 * s, hold: 8 * s}, 35, false, 36 * s, 4 * s},
		{"no time bound", admission{slots: 8, queueSize: 32, maxWait: -1, hold: 80 * s}, 31, true, 320 * s, 0},
		{"no time bound, queue full", admission{slots: 8, queueSize: 32, maxWait: -1, hold: 80 * s}, 32, false, 330 * s, 10 * s},
		{"retry at least a second", admission{slots: 8, queueSize: 32, maxWait: 30 * s, hold: 80 * time.Millisecond}, 32, false, 330 * time.Millisecond, 1 * s},
		{"retry at most a minute", admission{slots: 1, queueSize: 4, maxWait: 30 * s, hold: 10 * time.Minute}, 0, false, 10 * time.Minute, 60 * s},
		{"even the first waits too long", admission{slots: 2, queueSize: 8, maxWait: 1 * s, hold: 4 * s}, 0, false, 2 * s, 2 * s},
		{"no queue", admission{slots: 2, queueSize: 0, maxWait: 30 * s, hold: 4 * s}, 0, false, 2 * s, 2 * s},
	}
	for _, tc := range tests {
		ok, wait, retry := tc.a.judge(tc.ahead)
		if ok != tc.ok || wait != tc.wait || retry != tc.retry {
			t.Errorf("%s: judge(%d) = %v, %v, %v; want %v, %v, %v", tc.name, tc.ahead, ok, wait, retry, tc.ok, tc.wait, tc.retry)
		}
	}
}

func TestHoldTime(t *testing.T) {
	t.Parallel()
	var h holdTime
	h.observe(4 * time.Second)
	if h.mean != 4*time.Second {
		t.Fatalf("first observation: mean %v, want 4s", h.mean)
	}
	for range 200 {
		h.observe(time.Second)
	}
	if h.mean < time.Second || h.mean > 1100*time.Millisecond {
		t.Fatalf("after 200 × 1s the mean is %v, want it to have followed to about 1s", h.mean)
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
// with ErrOverloaded and a RetryAfter from that measure, though the queue
// has room; without the bound it waits.
func TestQueueWaitBound(t *testing.T) {
	e := openStories(t, Config{Parallel: 1, QueueSize: 8, MaxQueueWait: time.Nanosecond, ContextPerSeq: 512})
	generate(t, e, userMsg("Once", 8)) // a measure of the hold time
	busySlot(t, e)
	_, err := e.Generate(context.Background(), userMsg("Once", 4), nil)
	var ee *Error
	if !errors.As(err, &ee) || !errors.Is(err, ErrOverloaded) {
		t.Fatalf("got %v, want ErrOverloaded", err)
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

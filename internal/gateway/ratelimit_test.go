package gateway

import (
	"testing"
	"time"
)

func TestRateLimiter(t *testing.T) {
	t.Parallel()
	l := newRateLimiter(2, 3) // 2/s, bursts of 3
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.allow("a", now); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.allow("a", now)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("4th request: ok=%v wait=%v, want refused with 500ms", ok, wait)
	}
	if ok, _ := l.allow("b", now); !ok {
		t.Fatal("another key shares the bucket")
	}
	if ok, _ := l.allow("a", now.Add(500*time.Millisecond)); !ok {
		t.Fatal("no token after the refill time (a refused request took one)")
	}
	if ok, wait := l.allow("a", now.Add(500*time.Millisecond)); ok || wait != 500*time.Millisecond {
		t.Fatalf("after the refill: ok=%v wait=%v, want refused with 500ms", ok, wait)
	}
	l.allow("c", now)
	for range 3 { // e empties its bucket just before the sweep
		l.allow("e", now.Add(2*time.Minute-time.Millisecond))
	}
	l.allow("a", now.Add(2*time.Minute)) // sweeps the full buckets
	if _, kept := l.limiters["c"]; kept {
		t.Fatal("full bucket of an idle key was not swept")
	}
	if _, kept := l.limiters["e"]; !kept {
		t.Fatal("the bucket of a busy key was swept")
	}
}

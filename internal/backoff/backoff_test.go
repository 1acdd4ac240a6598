package backoff

import (
	"math"
	"testing"
	"time"
)

// ceilings returns the ceiling of each of n delays from lo doubling to hi.
func ceilings(lo, hi time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	d := lo
	for i := range out {
		out[i] = min(d, hi)
		d = min(2*d, hi)
	}
	return out
}

func TestSequence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		lo, hi time.Duration
		want   []time.Duration // ceilings of the delays
	}{
		{"doubles to the cap", 100 * time.Millisecond, time.Second,
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}},
		{"cap not a power of two of lo", 3 * time.Second, 10 * time.Second,
			[]time.Duration{3 * time.Second, 6 * time.Second, 10 * time.Second, 10 * time.Second}},
		{"cap below lo is raised to lo", time.Second, time.Millisecond,
			[]time.Duration{time.Second, time.Second, time.Second}},
		{"zero", 0, 0, []time.Duration{0, 0}},
	}
	for _, tt := range tests {
		// The draw at each end of its range gives the bounds of each delay.
		for _, end := range []struct {
			name  string
			randN func(time.Duration) time.Duration
			want  func(ceiling time.Duration) time.Duration
		}{
			{"lowest", func(time.Duration) time.Duration { return 0 }, func(c time.Duration) time.Duration { return c / 2 }},
			{"highest", func(n time.Duration) time.Duration { return n - 1 }, func(c time.Duration) time.Duration { return c/2 + c/2 }},
		} {
			b := New(tt.lo, tt.hi)
			b.randN = end.randN
			for i, c := range tt.want {
				if got := b.Next(); got != end.want(c) {
					t.Errorf("%s, %s draw: delay %d = %v, want %v", tt.name, end.name, i, got, end.want(c))
				}
			}
		}
	}
}

func TestDrawCoversUpperHalf(t *testing.T) {
	t.Parallel()
	b := New(100*time.Millisecond, time.Second)
	var asked []time.Duration
	b.randN = func(n time.Duration) time.Duration { asked = append(asked, n); return 0 }
	for range 3 {
		b.Next()
	}
	want := []time.Duration{50*time.Millisecond + 1, 100*time.Millisecond + 1, 200*time.Millisecond + 1}
	for i := range want {
		if asked[i] != want[i] {
			t.Errorf("draw %d from [0, %v), want [0, %v)", i, asked[i], want[i])
		}
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	b := New(100*time.Millisecond, 10*time.Second)
	b.randN = func(n time.Duration) time.Duration { return n - 1 }
	for range 5 {
		b.Next()
	}
	b.Reset()
	if got := b.Next(); got != 100*time.Millisecond {
		t.Errorf("first delay after Reset = %v, want 100ms", got)
	}
	if got := b.Next(); got != 200*time.Millisecond {
		t.Errorf("second delay after Reset = %v, want 200ms", got)
	}
}

func TestNoOverflow(t *testing.T) {
	t.Parallel()
	b := New(time.Second, math.MaxInt64)
	b.randN = func(n time.Duration) time.Duration { return n - 1 }
	prev := time.Duration(0)
	for i := range 100 {
		d := b.Next()
		if d < prev {
			t.Fatalf("delay %d = %v, below the one before (%v): overflow", i, d, prev)
		}
		prev = d
	}
	if prev < math.MaxInt64-1 {
		t.Errorf("delay after 100 doublings = %v, want the cap", prev)
	}
}

// TestRandomStaysWithinBounds draws with the real random source.
func TestRandomStaysWithinBounds(t *testing.T) {
	t.Parallel()
	lo, hi := 100*time.Millisecond, 10*time.Second
	for range 20 {
		b := New(lo, hi)
		for i, c := range ceilings(lo, hi, 40) {
			if d := b.Next(); d < c/2 || d > c {
				t.Fatalf("delay %d = %v, want within [%v, %v]", i, d, c/2, c)
			}
		}
	}
}

package engine

import (
	"testing"
	"time"
)

// TestPlannerPicksFastestBatch feeds the planner the step times measured on
// a 2-core CPU (docs/PERFORMANCE.md) and checks that it chooses the batch
// size with the most tokens per second, after trying each size first.
func TestPlannerPicksFastestBatch(t *testing.T) {
	t.Parallel()
	stepMS := map[int]float64{1: 15, 2: 33, 3: 46, 4: 42, 5: 80, 6: 68, 7: 62, 8: 43}
	tests := []struct{ n, want int }{{1, 1}, {2, 1}, {3, 1}, {4, 4}, {5, 4}, {6, 4}, {7, 7}, {8, 8}}
	for _, tc := range tests {
		var p planner
		var step uint64 = 1
		// Exploration: every size up to n is tried minSamples times.
		for range tc.n * minSamples {
			k := p.choose(tc.n, step)
			p.observe(k, time.Duration(stepMS[k]*float64(time.Millisecond)))
			step++
		}
		for k := 1; k <= tc.n; k++ {
			if p.samples[k] < minSamples {
				t.Fatalf("n=%d: size %d measured %d times during exploration", tc.n, k, p.samples[k])
			}
		}
		if step%refreshEvery == 0 {
			step++
		}
		if got := p.choose(tc.n, step); got != tc.want {
			t.Errorf("n=%d: chose %d, want %d", tc.n, got, tc.want)
		}
	}
}

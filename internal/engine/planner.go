package engine

import "time"

// planner decides how many of the generating sequences share a decode step.
//
// Batching is not free on a CPU: with llama.cpp a step of 2 or 3 tokens can
// take longer than 2 or 3 single-token steps, while 4 or more usually gain.
// So the planner measures the time of a decode step for each batch size it
// uses (an exponential moving average) and picks the size with the most
// tokens per second; sizes it has not measured are tried first, and every
// so often a size is re-measured so that the choice follows the machine.
// Sequences left out of a step go first in the next one.
type planner struct {
	est     [maxPlanned + 1]float64 // seconds per step, by batch size
	samples [maxPlanned + 1]int
}

const (
	maxPlanned = 64 // batch sizes above this are not planned, just used
	// emaWeight of a new observation.
	emaWeight = 0.1
	// Every refreshEvery-th step re-measures one batch size in turn.
	refreshEvery = 64
	// A smaller batch must beat the full one by this factor to be chosen.
	// Near a tie batching everyone would be fairer, but on CPUs where 2
	// tokens cost twice 1 (measured: docs/PERFORMANCE.md) any margin lets
	// aggregate throughput fall below a single stream's; so only a clear
	// measurement tie (1%) goes to the full batch.
	preferFull = 1.01
	// minSamples before an estimate is trusted (the first step of a new
	// size also pays for building its compute graph).
	minSamples = 3
)

// choose returns how many of n generating sequences to decode at step.
func (p *planner) choose(n int, step uint64) int {
	if n <= 1 || n > maxPlanned {
		return n
	}
	for k := n; k >= 1; k-- {
		if p.samples[k] < minSamples {
			return k
		}
	}
	if step%refreshEvery == 0 {
		return 1 + int(step/refreshEvery)%n
	}
	best, bestRate := n, float64(n)/p.est[n]
	for k := n - 1; k >= 1; k-- {
		if rate := float64(k) / p.est[k]; rate > bestRate*preferFull {
			best, bestRate = k, rate
		}
	}
	return best
}

// observe records the duration of a step that decoded k tokens and nothing
// else.
func (p *planner) observe(k int, d time.Duration) {
	if k < 1 || k > maxPlanned {
		return
	}
	sec := d.Seconds()
	if p.samples[k] == 0 {
		p.est[k] = sec
	} else {
		p.est[k] += emaWeight * (sec - p.est[k])
	}
	p.samples[k]++
}

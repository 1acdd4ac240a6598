// Package backoff spaces out the retries of an operation that keeps
// failing: the delay doubles after each failure up to a cap, and each
// delay is drawn at random from the upper half of its range so that many
// clients that failed together do not retry in step.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is the sequence of delays between the retries of one operation.
// Build it with New; it is not safe for concurrent use (each retry loop
// holds its own).
type Backoff struct {
	lo, hi  time.Duration // the first delay's ceiling, and the cap
	ceiling time.Duration // of the next delay: lo doubled per Next, capped at hi
	// randN returns a random duration in [0, n); rand.N unless a test
	// needs to know the draw.
	randN func(n time.Duration) time.Duration
}

// New returns a Backoff whose first delay is at most lo and whose delays
// never exceed hi; a hi below lo is raised to lo.
func New(lo, hi time.Duration) *Backoff {
	lo = max(lo, 0)
	b := &Backoff{lo: lo, hi: max(hi, lo), randN: rand.N[time.Duration]}
	b.Reset()
	return b
}

// Next returns the delay before the next retry, a random point in [d/2, d]
// where d is lo doubled once per earlier Next since New or Reset, capped
// at hi.
func (b *Backoff) Next() time.Duration {
	d := b.ceiling
	if b.ceiling > b.hi/2 {
		b.ceiling = b.hi // doubling would pass hi, or overflow
	} else {
		b.ceiling *= 2
	}
	return d/2 + b.randN(d/2+1)
}

// Reset starts the sequence again from lo, after a success.
func (b *Backoff) Reset() { b.ceiling = b.lo }

package rpc

import (
	"context"
	"errors"
)

// Candidate is an instance a Pool call may go to: connected, and not tried
// yet for this call.
type Candidate struct {
	ID, Addr string
	// InFlight is how many calls the pool has sent there and not finished.
	InFlight int
	// Capacity is how many calls it said it serves at once
	// (PoolConfig.Describe); 0 while not known.
	Capacity int
	// Model is the model it serves (PoolConfig.Describe, else discovery);
	// empty while not known.
	Model string
}

// Picker chooses the instance each Pool call goes to, as a picker does in
// gRPC's balancer: the pool keeps the connections and their load, the
// picker only chooses, so routing policy (least busy, affinity) lives with
// the service that has one. Pick returns an index into candidates, which
// is never empty and comes in turn order: the pool rotates it from call to
// call, so that the first among equals takes equals in turn. It may
// return -1 when none of them may take the call (they serve another
// model): the pool then does as with none connected. Pick runs under the
// pool's lock: it must be quick and must not call the pool.
type Picker interface {
	Pick(ctx context.Context, candidates []Candidate) int
}

// LeastBusy is the Pool's default Picker: the candidate with the fewest
// calls in flight, the first among equals.
type LeastBusy struct{}

var _ Picker = LeastBusy{}

// Pick implements Picker.
func (LeastBusy) Pick(_ context.Context, candidates []Candidate) int {
	best := 0
	for i, c := range candidates {
		if c.InFlight < candidates[best].InFlight {
			best = i
		}
	}
	return best
}

// ErrNotConnected is the error of a Broadcast result for an instance the
// pool is still connecting to.
var ErrNotConnected = errors.New("not connected")

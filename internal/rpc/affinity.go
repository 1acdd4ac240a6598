package rpc

import (
	"context"
	"hash/fnv"
)

// Affinity routing: a call whose context carries a key (WithAffinity) goes
// to the instance that rendezvous hashing (highest random weight) gives
// that key among the connected instances, so that calls with the same key
// meet on the same instance — one holding what an earlier call left there,
// such as a conversation's KV cache. Every pool computes the same choice
// from the same instance ids, and when an instance joins or leaves only the
// keys it wins or held move.
//
// Load is bounded: an instance is passed over while its calls in flight
// reach PoolConfig.AffinityLoad times the mean over the connected
// instances, plus one; the call then goes to the next instance in the
// key's rendezvous order under the bound (consistent hashing with bounded
// loads), so one hot key cannot pile its calls on one instance, and the
// calls it spills still go to the same second choice. The least busy
// instance is always under the bound, so a call always finds one.
//
// When every instance has told its capacity (PoolConfig.Capacity), room
// comes first: a call goes to the first instance in the key's order with
// fewer calls in flight than its capacity, since a free slot elsewhere
// beats queueing behind the key's instance, and an instance with room is
// never passed over however loaded the others are. Only when none has
// room does the load bound choose.

type affinityKey struct{}

// WithAffinity returns a context whose Pool calls go to the instance that
// key hashes to (see above). An empty key means none: the least busy
// instance.
func WithAffinity(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, affinityKey{}, key)
}

// Affinity returns the affinity key carried by ctx, or "".
func Affinity(ctx context.Context) string {
	k, _ := ctx.Value(affinityKey{}).(string)
	return k
}

// rendezvous is the weight of instance id for key: the highest wins.
func rendezvous(key, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return mix64(h.Sum64())
}

// mix64 is splitmix64's finaliser: FNV's low bits alone spread poorly
// between ids that differ in a character or two (host:port).
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// pickAffine chooses among candidates (connected, not excluded; not
// empty) for key: the first in rendezvous order whose calls in flight are
// under the bound. It reports whether that is the key's first choice.
// Called with p.mu held.
func (p *Pool) pickAffine(key string, candidates []*poolInstance) (*poolInstance, bool) {
	total := 0
	known := true
	for _, pi := range candidates {
		total += pi.inFlight
		known = known && pi.capacity > 0
	}
	bound := p.cfg.AffinityLoad*float64(total)/float64(len(candidates)) + 1
	var first, roomy, bounded *poolInstance
	var firstW, roomyW, boundedW uint64
	for _, pi := range candidates {
		w := rendezvous(key, pi.inst.ID)
		if first == nil || w > firstW {
			first, firstW = pi, w
		}
		if known && pi.inFlight < pi.capacity && (roomy == nil || w > roomyW) {
			roomy, roomyW = pi, w
		}
		if float64(pi.inFlight) < bound && (bounded == nil || w > boundedW) {
			bounded, boundedW = pi, w
		}
	}
	if roomy != nil {
		return roomy, roomy == first
	}
	return bounded, bounded == first
}

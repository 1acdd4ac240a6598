package caller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"sync/atomic"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Routing policies (Config.Routing, the caller's -routing flag). Each is
// an rpc.Picker of the caller's pool over inference instances.
const (
	// RoutingPrefix sends the turns of one conversation to the same
	// inference instance, which holds their prefix in its KV cache (see
	// PrefixKey), while it has a free slot (Describe), else within a load
	// bound (prefixPicker).
	RoutingPrefix = "prefix"
	// RoutingLeastBusy sends each request to the instance with the fewest
	// requests in flight (rpc.LeastBusy).
	RoutingLeastBusy = "least-busy"
)

// prefixLoad bounds prefix routing: an instance whose calls in flight
// reach prefixLoad × the mean + 1 is passed over for the key's next
// choice.
const prefixLoad = 1.25

// PrefixKey is the affinity key of a request under prefix routing: a hash
// of its messages up to and including the first user message (and of the
// model it names). A chat client re-sends the whole conversation every
// turn, so every turn of a conversation starts with the same system prompt
// and first user message and gets the same key, while two conversations
// that share only a system prompt get different keys and spread over the
// instances (each instance then caches that system prompt once, a small
// cost). Hashing more of the prompt would move a conversation when it
// grows; hashing only the system prompt would send every conversation of
// an application to one instance. Empty for a request without messages.
func PrefixKey(req chat.Request) string {
	h := sha256.New()
	h.Write([]byte(req.Model))
	n := 0
	for _, m := range req.Messages {
		// Lengths first, so that no two different message lists write
		// the same bytes.
		fmt.Fprintf(h, "\x00%d:%s%d:", len(m.Role), m.Role, len(m.Content))
		h.Write([]byte(m.Content))
		n++
		if m.Role == chat.RoleUser {
			break
		}
	}
	if n == 0 {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

type prefixKeyContext struct{}

// withPrefixKey returns a context whose inference call prefix routing
// sends by key (PrefixKey); an empty key means none: the least busy.
func withPrefixKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, prefixKeyContext{}, key)
}

// prefixPicker is the rpc.Picker of RoutingPrefix. A call whose context
// carries a key (withPrefixKey) goes to the instance that rendezvous
// hashing (highest random weight) gives that key among the candidates, so
// that the turns of a conversation meet on the instance that holds their
// prefix in its KV cache. Every caller computes the same choice from the
// same instance ids, and when an instance joins or leaves only the keys it
// wins or held move.
//
// When every candidate has told its capacity (Describe), room comes first: a
// call goes to the first candidate in the key's order with fewer calls in
// flight than its capacity, since a free slot elsewhere beats queueing
// behind the key's instance, and an instance with room is never passed
// over however loaded the others are. Otherwise load is bounded: an
// instance is passed over while its calls in flight reach prefixLoad times
// the mean over the candidates, plus one, and the call goes to the next
// instance in the key's order under the bound (consistent hashing with
// bounded loads), so one hot key cannot pile its calls on one instance,
// and the calls it spills still go to the same second choice. The least
// busy candidate is always under the bound, so a call always finds one.
type prefixPicker struct {
	// routed counts the calls (and retries) routed by a key; spilled, of
	// those, the ones not sent to the key's first choice.
	routed, spilled atomic.Uint64
}

var _ rpc.Picker = (*prefixPicker)(nil)

// Pick implements rpc.Picker.
func (p *prefixPicker) Pick(ctx context.Context, candidates []rpc.Candidate) int {
	key, _ := ctx.Value(prefixKeyContext{}).(string)
	if key == "" {
		return rpc.LeastBusy{}.Pick(ctx, candidates)
	}
	i, first := pickByKey(key, candidates)
	p.routed.Add(1)
	if !first {
		p.spilled.Add(1)
	}
	return i
}

// pickByKey chooses among candidates (not empty) for key, as prefixPicker
// says, and reports whether that is the key's first choice.
func pickByKey(key string, candidates []rpc.Candidate) (int, bool) {
	total := 0
	known := true
	for _, c := range candidates {
		total += c.InFlight
		known = known && c.Capacity > 0
	}
	bound := prefixLoad*float64(total)/float64(len(candidates)) + 1
	first, roomy, bounded := -1, -1, -1
	var firstW, roomyW, boundedW uint64
	for i, c := range candidates {
		w := rendezvous(key, c.ID)
		if first < 0 || w > firstW {
			first, firstW = i, w
		}
		if known && c.InFlight < c.Capacity && (roomy < 0 || w > roomyW) {
			roomy, roomyW = i, w
		}
		if float64(c.InFlight) < bound && (bounded < 0 || w > boundedW) {
			bounded, boundedW = i, w
		}
	}
	if roomy >= 0 {
		return roomy, roomy == first
	}
	return bounded, bounded == first
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

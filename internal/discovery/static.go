package discovery

import (
	"context"
	"sync"
)

// Static is a Resolver over a fixed list of addresses per service. It is the
// default when the mesh runs on one machine. Set may replace a list at run
// time, which is how tests and the local runner add or remove instances.
type Static struct {
	mu       sync.Mutex
	services map[string][]Instance
	watchers map[string][]chan []Instance
}

var _ Resolver = (*Static)(nil)

// NewStatic returns a resolver that knows no service yet.
func NewStatic() *Static {
	return &Static{
		services: make(map[string][]Instance),
		watchers: make(map[string][]chan []Instance),
	}
}

// Set replaces the instances of service with addrs and tells its watchers.
func (s *Static) Set(service string, addrs ...string) {
	insts := make([]Instance, 0, len(addrs))
	for _, a := range addrs {
		insts = append(insts, Instance{ID: a, Addr: a})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.services[service] = insts
	for _, ch := range s.watchers[service] {
		sendLatest(ch, insts)
	}
}

// Watch implements Resolver.
func (s *Static) Watch(ctx context.Context, service string) <-chan []Instance {
	// Capacity 1 plus sendLatest: a slow watcher sees the newest set, never
	// a backlog of old ones.
	ch := make(chan []Instance, 1)
	s.mu.Lock()
	s.watchers[service] = append(s.watchers[service], ch)
	ch <- s.services[service]
	s.mu.Unlock()

	go func() {
		<-ctx.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		ws := s.watchers[service]
		for i, w := range ws {
			if w == ch {
				s.watchers[service] = append(ws[:i:i], ws[i+1:]...)
				break
			}
		}
		close(ch)
	}()
	return ch
}

// sendLatest puts set on ch, replacing a value the watcher has not read yet.
func sendLatest(ch chan []Instance, set []Instance) {
	select {
	case <-ch:
	default:
	}
	ch <- set
}

package rpc

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/backoff"
	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
)

// PoolConfig configures a Pool. Zero fields take the defaults named in each
// comment.
type PoolConfig struct {
	// Client configures every connection. Its Logger is replaced by Logger.
	Client ClientConfig
	// Logger receives the pool's logs. Default: no logs.
	Logger hclog.Logger
	// ConnectWait is how long a call waits for a first connection when no
	// instance is connected (at start-up, or while all are reconnecting)
	// before it fails with chat.CodeUnavailable. Default 1s.
	ConnectWait time.Duration
	// MinBackoff and MaxBackoff bound the delay between reconnection
	// attempts to one instance; it doubles after each failure. Defaults
	// 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// DrainTimeout bounds how long the calls on an instance that left the
	// discovered set may run before its connection is closed. Default 5m.
	DrainTimeout time.Duration
	// Retries is how many times Call tries another instance when one fails
	// with chat.CodeUnavailable or chat.CodeOverloaded before any chunk. Default 0:
	// retry in one tier only (the caller's pool, with 1), or the attempts
	// multiply with each tier that retries.
	Retries int
	// Picker chooses the instance of each call among the connected ones.
	// Default: LeastBusy.
	Picker Picker
	// Describe, if set, asks each newly connected instance how many calls
	// it serves at once and what model it serves, again with backoff while
	// it fails (an instance still loading): the Candidate.Capacity and
	// Candidate.Model a Picker sees.
	Describe func(ctx context.Context, c *Conn) (Description, error)
	// Described, if set, reads a Broadcast answer as what the instance
	// says of itself, when the answer to that method tells what Describe
	// asks (a status call): an instance not yet described over that
	// connection is described by it at once, not at Describe's next try,
	// so that a health report that counts it ready and the Picker agree.
	Described func(method string, result json.RawMessage) (Description, bool)
}

// Description is what an instance says of itself (PoolConfig.Describe).
type Description struct {
	// Capacity is how many calls it serves at once; 0: unknown.
	Capacity int
	// Model is the model it serves; empty: the one its discovery.Instance
	// names, if any.
	Model string
}

// describeTimeout bounds one PoolConfig.Describe question.
const describeTimeout = 5 * time.Second

func (c *PoolConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	c.Client.Logger = c.Logger
	if c.ConnectWait <= 0 {
		c.ConnectWait = time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(5*time.Second, c.MinBackoff)
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 5 * time.Minute
	}
	if c.Picker == nil {
		c.Picker = LeastBusy{}
	}
}

// Pool calls one service over a connection to each of its instances. It
// follows a discovery.Resolver, sends each call to the connected instance
// its Picker chooses (by default the one with the fewest calls in flight),
// reconnects lost connections with backoff, drains instances that leave
// the set, and retries a call elsewhere (up to PoolConfig.Retries times) if
// it failed before any chunk reached the caller.
type Pool struct {
	service string
	cfg     PoolConfig
	log     hclog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // watch, connect and drain goroutines

	mu        sync.Mutex
	instances map[string]*poolInstance // by instance id
	order     []*poolInstance          // sorted by id, for fair tie-breaking
	next      int                      // where the next pick starts looking
	changed   chan struct{}            // closed and replaced when a connection is made or an instance described
}

// poolInstance is one discovered instance and its connection, if any.
type poolInstance struct {
	inst     discovery.Instance
	cancel   context.CancelFunc // stops its connect loop
	conn     *Conn              // nil while not connected
	inFlight int                // calls the pool has routed here and not finished
	capacity int                // calls it serves at once (PoolConfig.Describe); 0: unknown
	model    string             // what it serves: what it said (Describe), else its discovery.Instance's
	removed  bool
}

// InstanceStatus describes one instance of a Pool, for health reports and
// metrics.
type InstanceStatus struct {
	ID        string
	Addr      string
	Connected bool
	InFlight  int
	// Capacity is what the instance said it serves at once
	// (PoolConfig.Describe); 0 until it has.
	Capacity int
	// Model is the model it serves, as it said (PoolConfig.Describe) or,
	// until it has, as discovery said; empty when neither has.
	Model string
}

// NewPool starts a pool for service, following resolver until Close.
func NewPool(resolver discovery.Resolver, service string, cfg PoolConfig) *Pool {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		service:   service,
		cfg:       cfg,
		log:       cfg.Logger.Named("rpc-pool").With("service", service),
		ctx:       ctx,
		cancel:    cancel,
		instances: make(map[string]*poolInstance),
		changed:   make(chan struct{}),
	}
	sets := resolver.Watch(ctx, service)
	p.wg.Go(func() {
		for set := range sets {
			p.update(set)
		}
	})
	return p
}

// update makes the pool's instances match set.
func (p *Pool) update(set []discovery.Instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return
	}
	want := make(map[string]discovery.Instance, len(set))
	for _, in := range set {
		want[in.ID] = in
	}
	for id, pi := range p.instances {
		if in, ok := want[id]; !ok || in.Addr != pi.inst.Addr {
			p.removeLocked(pi)
		}
	}
	for id, in := range want {
		if _, ok := p.instances[id]; !ok {
			p.addLocked(in)
		}
	}
	p.order = p.order[:0]
	for _, pi := range p.instances {
		p.order = append(p.order, pi)
	}
	slices.SortFunc(p.order, func(a, b *poolInstance) int {
		switch {
		case a.inst.ID < b.inst.ID:
			return -1
		case a.inst.ID > b.inst.ID:
			return 1
		}
		return 0
	})
}

func (p *Pool) addLocked(in discovery.Instance) {
	ctx, cancel := context.WithCancel(p.ctx)
	pi := &poolInstance{inst: in, cancel: cancel, model: in.Model}
	p.instances[in.ID] = pi
	p.log.Info("instance added", "id", in.ID, "addr", in.Addr)
	p.wg.Go(func() { p.connectLoop(ctx, pi) })
}

// removeLocked drops pi from routing. Its calls in flight go on; its
// connection closes when they are done or DrainTimeout passes.
func (p *Pool) removeLocked(pi *poolInstance) {
	delete(p.instances, pi.inst.ID)
	pi.removed = true
	pi.cancel()
	p.log.Info("instance removed; draining", "id", pi.inst.ID, "addr", pi.inst.Addr, "in_flight", pi.inFlight)
	if conn := pi.conn; conn != nil {
		pi.conn = nil
		p.wg.Go(func() {
			// Bounded by Close too, which must not wait for a long drain.
			ctx, cancel := context.WithTimeout(p.ctx, p.cfg.DrainTimeout)
			defer cancel()
			if err := conn.Shutdown(ctx); err != nil {
				p.log.Warn("drain timed out; closed with calls in flight", "id", pi.inst.ID)
			}
		})
	}
}

// connectLoop keeps pi connected until ctx ends.
func (p *Pool) connectLoop(ctx context.Context, pi *poolInstance) {
	retry := backoff.New(p.cfg.MinBackoff, p.cfg.MaxBackoff)
	for ctx.Err() == nil {
		conn, err := Dial(ctx, pi.inst.Addr, p.cfg.Client)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := retry.Next()
			p.log.Warn("connect failed", "id", pi.inst.ID, "addr", pi.inst.Addr, "retry_in", wait, "error", err)
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		retry.Reset()

		p.mu.Lock()
		if pi.removed || ctx.Err() != nil {
			// Removed or closed while dialing; nobody else will close it.
			p.mu.Unlock()
			conn.Close()
			return
		}
		pi.conn = conn
		pi.capacity = 0
		p.wakeLocked()
		p.mu.Unlock()
		p.log.Info("connected", "id", pi.inst.ID, "addr", pi.inst.Addr)
		if p.cfg.Describe != nil {
			go p.learn(ctx, pi, conn)
		}

		select {
		case <-conn.Done():
		case <-ctx.Done():
			// Removed (removeLocked drains the connection) or pool closed
			// (Close closes it).
			return
		}
		p.mu.Lock()
		if pi.conn == conn {
			pi.conn = nil
		}
		p.mu.Unlock()
		p.log.Warn("connection lost; reconnecting", "id", pi.inst.ID, "addr", pi.inst.Addr, "error", conn.Err())
		if !sleep(ctx, p.cfg.MinBackoff) {
			return
		}
	}
}

// wakeLocked wakes the calls waiting in pick for an instance to take
// them: one connected, or described itself. p.mu must be held.
func (p *Pool) wakeLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// learnMaxBackoff bounds the pause between two questions to an instance
// that cannot describe itself yet (its model still loading): a call the
// Picker could not place waits for the answer (ConnectWait), so the
// answer must come soon after the instance is ready.
const learnMaxBackoff = 250 * time.Millisecond

// learn asks conn's instance to describe itself (PoolConfig.Describe)
// until it answers with its capacity or the connection ends, records the
// answer for the Picker and wakes the calls waiting for an instance.
func (p *Pool) learn(ctx context.Context, pi *poolInstance, conn *Conn) {
	retry := backoff.New(p.cfg.MinBackoff, max(p.cfg.MinBackoff, min(p.cfg.MaxBackoff, learnMaxBackoff)))
	for {
		actx, cancel := context.WithTimeout(ctx, describeTimeout)
		d, err := p.cfg.Describe(actx, conn)
		cancel()
		if err == nil && d.Capacity > 0 {
			p.mu.Lock()
			if pi.conn == conn {
				p.describedLocked(pi, d)
			}
			p.mu.Unlock()
			p.log.Debug("instance described", "id", pi.inst.ID, "addr", pi.inst.Addr, "capacity", d.Capacity, "model", d.Model)
			return
		}
		p.log.Debug("instance not described yet", "id", pi.inst.ID, "addr", pi.inst.Addr, "capacity", d.Capacity, "error", err)
		if !sleep(ctx, retry.Next()) || conn.Err() != nil {
			return
		}
	}
}

// describedLocked records d as pi's description and wakes the calls
// waiting for an instance to take them. p.mu must be held.
func (p *Pool) describedLocked(pi *poolInstance, d Description) {
	pi.capacity = d.Capacity
	if d.Model != "" {
		pi.model = d.Model
	}
	p.wakeLocked()
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Call calls method on one instance of the service; see Conn.Call for the
// arguments and errors. The call goes to the connected instance the Picker
// chooses, with ctx (which may carry what the Picker routes by). If it fails with chat.CodeUnavailable or
// chat.CodeOverloaded before any chunk reached onChunk, it is retried on another
// connected instance, up to PoolConfig.Retries times, each time on one not
// tried yet; after a chunk it never is, because the caller has already
// passed text on. With no instance connected, Call waits up to ConnectWait
// for one, then fails with chat.CodeUnavailable. A call that ran out of
// instances or retries returns the first instance's error.
func (p *Pool) Call(ctx context.Context, method string, req any, onChunk func(json.RawMessage) error) (json.RawMessage, error) {
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, chat.Errorf(chat.CodeInvalidArgument, "encode request for %s: %w", method, err)
	}
	var (
		firstErr error
		tried    []*poolInstance
	)
	for range p.cfg.Retries + 1 {
		pi, conn, err := p.pick(ctx, tried, method)
		if err != nil {
			if firstErr != nil {
				return nil, firstErr // nowhere else to retry
			}
			return nil, err
		}
		delivered := false
		res, err := conn.Call(ctx, method, compactJSON(payload), func(chunk json.RawMessage) error {
			delivered = true
			if onChunk == nil {
				return nil
			}
			return onChunk(chunk)
		})
		p.done(pi)
		code := chat.Code(err)
		if err == nil || delivered || ctx.Err() != nil || (code != chat.CodeUnavailable && code != chat.CodeOverloaded) {
			return res, err
		}
		RequestLogger(ctx, p.log).Debug("call failed before any chunk; retrying on another instance", "method", method, "id", pi.inst.ID, "error", err)
		if firstErr == nil {
			firstErr = err
		}
		tried = append(tried, pi)
	}
	return nil, firstErr
}

// pick reserves the connected instance the Picker chooses among those not
// in exclude. With none connected, or none the Picker takes, it waits up
// to ConnectWait, unless this is a retry (exclude not empty), which only
// takes what is there.
func (p *Pool) pick(ctx context.Context, exclude []*poolInstance, method string) (*poolInstance, *Conn, error) {
	var timeout <-chan time.Time
	for {
		p.mu.Lock()
		var found []*poolInstance
		var candidates []Candidate
		n := len(p.order)
		for i := range n {
			pi := p.order[(p.next+i)%n]
			if pi.conn == nil || slices.Contains(exclude, pi) {
				continue
			}
			found = append(found, pi)
			candidates = append(candidates, Candidate{ID: pi.inst.ID, Addr: pi.inst.Addr, InFlight: pi.inFlight, Capacity: pi.capacity, Model: pi.model})
		}
		i := -1
		if len(found) > 0 {
			i = p.cfg.Picker.Pick(ctx, candidates)
		}
		if i >= 0 {
			best := found[i]
			p.next = (p.next + 1) % max(n, 1)
			best.inFlight++
			conn := best.conn
			p.mu.Unlock()
			return best, conn, nil
		}
		changed := p.changed
		p.mu.Unlock()

		if len(exclude) > 0 || p.ctx.Err() != nil {
			return nil, nil, chat.Errorf(chat.CodeUnavailable, "%s: no other connected instance of %s", method, p.service)
		}
		if timeout == nil {
			t := time.NewTimer(p.cfg.ConnectWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-changed:
		case <-timeout:
			return nil, nil, chat.Errorf(chat.CodeUnavailable, "%s: no connected instance of %s", method, p.service)
		case <-ctx.Done():
			return nil, nil, contextError(method, ctx.Err())
		}
	}
}

func (p *Pool) done(pi *poolInstance) {
	p.mu.Lock()
	pi.inFlight--
	p.mu.Unlock()
}

// BroadcastResult is one instance's answer to Broadcast.
type BroadcastResult struct {
	Addr   string
	Result json.RawMessage
	Err    error
}

// Broadcast calls method on every connected instance at once, without
// retries, and returns each answer in the order of Instances, followed by
// a result with ErrNotConnected for each instance it is still connecting
// to. It is for small status calls, not for work.
func (p *Pool) Broadcast(ctx context.Context, method string, req any) []BroadcastResult {
	payload, err := json.Marshal(req)
	if err != nil {
		return []BroadcastResult{{Err: chat.Errorf(chat.CodeInvalidArgument, "encode request for %s: %w", method, err)}}
	}
	type target struct {
		pi   *poolInstance
		conn *Conn
	}
	p.mu.Lock()
	var targets []target
	var unconnected []BroadcastResult
	for _, pi := range p.order {
		if pi.conn != nil {
			pi.inFlight++
			targets = append(targets, target{pi, pi.conn})
		} else {
			unconnected = append(unconnected, BroadcastResult{Addr: pi.inst.Addr, Err: ErrNotConnected})
		}
	}
	p.mu.Unlock()
	out := make([]BroadcastResult, len(targets), len(targets)+len(unconnected))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			defer p.done(t.pi)
			res, err := t.conn.Call(ctx, method, compactJSON(payload), nil)
			out[i] = BroadcastResult{Addr: t.pi.inst.Addr, Result: res, Err: err}
			if err == nil && p.cfg.Described != nil {
				if d, ok := p.cfg.Described(method, res); ok && d.Capacity > 0 {
					p.mu.Lock()
					if t.pi.conn == t.conn && t.pi.capacity == 0 {
						p.describedLocked(t.pi, d)
					}
					p.mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return append(out, unconnected...)
}

// Healthy is the number of connected instances.
func (p *Pool) Healthy() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pi := range p.order {
		if pi.conn != nil {
			n++
		}
	}
	return n
}

// Instances describes the instances the pool routes to, sorted by id.
// Instances being drained are not listed.
func (p *Pool) Instances() []InstanceStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]InstanceStatus, 0, len(p.order))
	for _, pi := range p.order {
		out = append(out, InstanceStatus{ID: pi.inst.ID, Addr: pi.inst.Addr, Connected: pi.conn != nil, InFlight: pi.inFlight, Capacity: pi.capacity, Model: pi.model})
	}
	return out
}

// Close stops following the resolver and closes every connection; calls
// in flight fail with chat.CodeUnavailable. To let calls finish, shut down the
// service's own server (which waits for its handlers, and so for their
// calls through this pool) before closing the pool.
func (p *Pool) Close() error {
	p.cancel()
	p.mu.Lock()
	var conns []*Conn
	for _, pi := range p.instances {
		if pi.conn != nil {
			conns = append(conns, pi.conn)
			pi.conn = nil
		}
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
	return nil
}

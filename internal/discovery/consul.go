package discovery

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/backoff"
)

// Defaults of the Consul resolver's tunables; see the fields of Consul.
const (
	DefaultWaitTime   = time.Minute
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 10 * time.Second
)

// minQueryInterval is the least time between two successful blocking
// queries of one watch. Consul's blocking-query guide asks clients to rate
// limit, because an index that changes often (or a Consul bug that returns
// at once) would otherwise turn the watch into a busy loop.
const minQueryInterval = 50 * time.Millisecond

// Consul is a Resolver over Consul's health API: it watches the instances of
// a service whose checks all pass, with blocking queries.
//
// Set the exported fields, if at all, before the first call to Watch.
type Consul struct {
	client *api.Client
	logger hclog.Logger

	// WaitTime is how long one blocking query may wait in Consul for a
	// change before it returns unchanged. Longer means fewer requests;
	// shorter means a silently dead connection is noticed sooner, because a
	// query is abandoned a little after WaitTime.
	WaitTime time.Duration

	// AllowStale lets any Consul server answer, not only the leader. It
	// spreads the load and, more importantly here, keeps answers coming while
	// the servers elect a new leader. Results may lag the leader by a little.
	AllowStale bool

	// MinBackoff and MaxBackoff bound the wait between retries after a failed
	// query. The wait doubles on each failure, with jitter, and starts again
	// from MinBackoff after a success.
	MinBackoff time.Duration
	MaxBackoff time.Duration
}

var _ Resolver = (*Consul)(nil)

// NewConsul returns a resolver that asks Consul through client and logs
// through logger as given (name it at the call site); nil discards the logs.
func NewConsul(client *api.Client, logger hclog.Logger) *Consul {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Consul{
		client:     client,
		logger:     logger,
		WaitTime:   DefaultWaitTime,
		AllowStale: true,
		MinBackoff: DefaultMinBackoff,
		MaxBackoff: DefaultMaxBackoff,
	}
}

// NewConsulClient returns a Consul API client configured the way Consul's
// own tools are: api.DefaultConfig reads CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
// CONSUL_CACERT and the other CONSUL_* variables, and a non-empty addr (from
// a flag) overrides the address. addr may be host:port or a URL with an
// http, https or unix scheme.
func NewConsulClient(addr string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if addr != "" {
		cfg.Address = addr
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery: consul client for %q: %w", cfg.Address, err)
	}
	return client, nil
}

// Watch implements Resolver. The first set is sent once Consul has answered;
// while Consul cannot be reached nothing is sent, so a watcher keeps what it
// had. An empty set is sent only when Consul says no instance passes.
func (c *Consul) Watch(ctx context.Context, service string) <-chan []Instance {
	// Capacity 1 plus sendLatest, as in Static: a slow reader gets the newest
	// set, never a backlog.
	ch := make(chan []Instance, 1)
	go c.watch(ctx, service, ch)
	return ch
}

// watch runs one blocking-query loop until ctx is done, then closes ch.
func (c *Consul) watch(ctx context.Context, service string, ch chan []Instance) {
	defer close(ch)
	log := c.logger.With("service", service)

	var (
		index    uint64     // Consul's X-Consul-Index of the last answer
		last     []Instance // the set the reader was last given
		sent     bool       // whether last has been sent at all
		failures int        // consecutive failed queries
	)
	minBackoff := c.MinBackoff
	if minBackoff <= 0 {
		minBackoff = DefaultMinBackoff
	}
	retry := backoff.New(minBackoff, c.MaxBackoff)
	for {
		start := time.Now()
		entries, meta, err := c.query(ctx, service, index)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			delay := retry.Next()
			failures++
			log.Warn("consul health query failed, keeping the last known instances",
				"error", err, "failures", failures, "retry_in", delay, "instances", len(last))
			// The agent we reach next may be another one, or a restarted
			// one whose index started again from scratch; an old index
			// could then block for a whole WaitTime before the "went
			// backwards" rule applies. One cheap non-blocking query instead.
			index = 0
			if !sleep(ctx, delay) {
				return
			}
			continue
		}
		if failures > 0 {
			log.Info("consul health query succeeded again", "after_failures", failures)
			failures = 0
			retry.Reset()
		}
		index = nextIndex(index, meta.LastIndex)

		set := instancesFrom(entries)
		if !sent || !slices.Equal(set, last) {
			log.Debug("instances changed", "count", len(set), "index", index)
			sendLatest(ch, set)
			last, sent = set, true
		}

		if !sleep(ctx, minQueryInterval-time.Since(start)) {
			return
		}
	}
}

// query runs one blocking query for the passing instances of service.
func (c *Consul) query(ctx context.Context, service string, index uint64) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	wait := c.WaitTime
	if wait <= 0 {
		wait = DefaultWaitTime
	}
	// Consul may hold a query up to wait plus wait/16 of jitter. Past that
	// (and a margin for the network) the connection is presumed dead, which
	// a peer that vanished without a TCP reset would otherwise make us wait
	// for forever.
	qctx, cancel := context.WithTimeout(ctx, wait+wait/16+5*time.Second)
	defer cancel()

	q := &api.QueryOptions{
		WaitIndex:  index,
		WaitTime:   wait,
		AllowStale: c.AllowStale,
	}
	entries, meta, err := c.client.Health().Service(service, "", true, q.WithContext(qctx))
	if err != nil {
		return nil, nil, fmt.Errorf("discovery: consul health of %q: %w", service, err)
	}
	return entries, meta, nil
}

// nextIndex applies Consul's rules for the index of the next blocking query,
// given the index sent (prev) and the one Consul answered with (got).
func nextIndex(prev, got uint64) uint64 {
	switch {
	case got < prev:
		// The index went backwards (a snapshot restore, another server, a
		// restarted agent): start again with a non-blocking query.
		return 0
	case got == 0:
		// A zero index would make every query return at once. Consul
		// should never answer with it; if it does, wait for any change.
		return 1
	default:
		return got
	}
}

// instancesFrom turns Consul's health entries into instances, sorted by ID so
// two answers with the same instances compare equal.
func instancesFrom(entries []*api.ServiceEntry) []Instance {
	out := make([]Instance, 0, len(entries))
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		// A service registered without an address lives at its node's
		// address; this is Consul's own rule (and its DNS interface's).
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" {
			continue
		}
		out = append(out, Instance{
			ID:    e.Service.ID,
			Addr:  net.JoinHostPort(host, strconv.Itoa(e.Service.Port)),
			Model: e.Service.Meta[MetaModel],
		})
	}
	slices.SortFunc(out, func(a, b Instance) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Addr, b.Addr))
	})
	return out
}

// sleep waits for d or until ctx is done, and reports whether ctx is still
// live. A non-positive d returns at once.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

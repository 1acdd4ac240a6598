package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
)

// Defaults of a Registration's check.
const (
	DefaultCheckPath     = "/health"
	DefaultCheckInterval = 10 * time.Second
	DefaultCheckTimeout  = 2 * time.Second
)

// deregisterTimeout bounds the deregistration call, which usually runs
// while the process shuts down and must not hang it.
const deregisterTimeout = 5 * time.Second

// ErrInvalidRegistration is wrapped by the errors Register returns for a
// Registration it cannot use; check it with errors.Is.
var ErrInvalidRegistration = errors.New("invalid registration")

// Registration describes one instance that registers itself with its local
// Consul agent. Under Nomad the job's service block does this instead; this
// is for running outside Nomad.
type Registration struct {
	// Service is the Consul service name, such as ServiceCaller. Required.
	Service string
	// ID is unique per instance on the agent. Defaults to Service-host-port.
	ID string
	// Addr is host:port where the instance serves RPC and its health
	// endpoint. The host must be an address peers (and the agent, which
	// runs the check) can reach, so not empty and not 0.0.0.0 or [::].
	Addr string
	// Tags are Consul tags of the instance.
	Tags []string
	// Meta is the instance's Consul service metadata; an inference
	// instance puts its model under MetaModel (ModelRegistration).
	Meta map[string]string

	// TLS says the instance serves its port over TLS (-tls-cert): the
	// check asks https, without verifying the certificate, which comes
	// from the cluster's RPC CA, not one the agent holds. The check only
	// reads health; the peers that call the instance verify it.
	TLS bool

	// CheckPath is the HTTP path the agent polls; any 2xx passes, 429 warns,
	// anything else fails. Defaults to DefaultCheckPath.
	CheckPath string
	// Interval between checks. Defaults to DefaultCheckInterval.
	Interval time.Duration
	// Timeout of one check. Defaults to DefaultCheckTimeout.
	Timeout time.Duration
	// DeregisterCriticalAfter makes Consul remove the instance once its
	// check has failed for this long, which cleans up after a process that
	// died without deregistering. Zero keeps it (failing, so not resolved)
	// until deregistered. Consul reaps at most every 30s, and its minimum
	// is one minute.
	DeregisterCriticalAfter time.Duration
}

// Register registers r with the Consul agent behind client, with an HTTP
// check on the instance's health endpoint. The instance is resolved only
// once that check has passed. The returned deregister removes it again; it
// may be called more than once and does not depend on ctx, so it can run
// during shutdown.
//
// A Consul agent in -dev mode forgets registrations when it restarts;
// an agent with a data directory keeps them.
func Register(ctx context.Context, client *api.Client, r Registration) (deregister func() error, err error) {
	reg, err := r.agentRegistration()
	if err != nil {
		return nil, err
	}
	// ReplaceExistingChecks: a restarted instance with the same ID must not
	// inherit checks from an earlier registration.
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := client.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return nil, fmt.Errorf("discovery: register %s (%s): %w", reg.ID, r.Addr, err)
	}

	var once sync.Once
	var derr error
	deregister = func() error {
		once.Do(func() {
			dctx, cancel := context.WithTimeout(context.Background(), deregisterTimeout)
			defer cancel()
			q := (&api.QueryOptions{}).WithContext(dctx)
			if err := client.Agent().ServiceDeregisterOpts(reg.ID, q); err != nil {
				derr = fmt.Errorf("discovery: deregister %s: %w", reg.ID, err)
			}
		})
		return derr
	}
	return deregister, nil
}

// agentRegistration validates r, fills in defaults and builds the agent's
// registration request.
func (r Registration) agentRegistration() (*api.AgentServiceRegistration, error) {
	if r.Service == "" {
		return nil, fmt.Errorf("discovery: %w: no service name", ErrInvalidRegistration)
	}
	host, portStr, err := net.SplitHostPort(r.Addr)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w: address %q: %v", ErrInvalidRegistration, r.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("discovery: %w: address %q: bad port", ErrInvalidRegistration, r.Addr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return nil, fmt.Errorf("discovery: %w: address %q: host must be reachable by peers, not a wildcard", ErrInvalidRegistration, r.Addr)
	}

	id := r.ID
	if id == "" {
		id = fmt.Sprintf("%s-%s-%d", r.Service, host, port)
	}
	path := r.CheckPath
	if path == "" {
		path = DefaultCheckPath
	}
	if path[0] != '/' {
		path = "/" + path
	}
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultCheckInterval
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}

	scheme := "http://"
	if r.TLS {
		scheme = "https://"
	}
	check := &api.AgentServiceCheck{
		Name:          r.Service + " health",
		HTTP:          scheme + net.JoinHostPort(host, portStr) + path,
		TLSSkipVerify: r.TLS,
		Method:        "GET",
		Interval:      interval.String(),
		Timeout:       timeout.String(),
	}
	if r.DeregisterCriticalAfter > 0 {
		check.DeregisterCriticalServiceAfter = r.DeregisterCriticalAfter.String()
	}
	return &api.AgentServiceRegistration{
		ID:      id,
		Name:    r.Service,
		Address: host,
		Port:    port,
		Tags:    r.Tags,
		Meta:    r.Meta,
		Check:   check,
	}, nil
}

// keepRegistered checks every interval, until stop is called, that the
// agent behind client still holds r, and registers it again when the agent
// answers that it does not: an agent in -dev mode (or one whose data
// directory was lost) forgets every registration when it restarts, and
// the instance would otherwise stay out of discovery for good. While the
// agent cannot be reached it keeps trying. stop waits for the loop to end,
// so that a deregistration after it cannot be undone by a late register.
func keepRegistered(client *api.Client, r Registration, interval time.Duration, log hclog.Logger) (stop func()) {
	reg, err := r.agentRegistration()
	if err != nil {
		return func() {} // Register already refused it
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			qctx, qcancel := context.WithTimeout(ctx, interval)
			_, _, err := client.Agent().Service(reg.ID, (&api.QueryOptions{}).WithContext(qctx))
			var se api.StatusError
			if errors.As(err, &se) && se.Code == http.StatusNotFound {
				opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(qctx)
				if err := client.Agent().ServiceRegisterOpts(reg, opts); err != nil {
					log.Warn("consul lost the registration; registering again failed", "id", reg.ID, "error", err)
				} else {
					log.Info("consul had lost the registration; registered again", "id", reg.ID, "addr", r.Addr)
				}
			}
			qcancel()
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
}

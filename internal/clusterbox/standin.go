package clusterbox

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// LoadBalancer is a stand-in for the AWS load balancer in front of the
// gateways, which cannot run here: a reverse proxy on loopback that
// forwards each request, round robin, to a gateway instance Nomad lists as
// running and meant to run, and healthy where it belongs to a deployment.
// It reads the list every refresh interval, so an instance Nomad is
// stopping (its desired status "stop", set before its shutdown_delay and
// kill_timeout begin) gets no new request after at most that long, as an
// ALB target that deregisters. It does not retry a failed request (an ALB
// does not retry a POST either).
type LoadBalancer struct {
	// URL is the proxy's base URL, on loopback.
	URL string

	srv      *http.Server
	cancel   context.CancelFunc
	backends atomic.Pointer[[]*url.URL]
	next     atomic.Uint64
	done     chan struct{}
}

// loadBalancerRefresh is how often the stand-in reads Nomad's allocations.
const loadBalancerRefresh = 500 * time.Millisecond

// StartLoadBalancer starts the stand-in load balancer; Close stops it. It
// returns once it knows at least one gateway.
// Its errors (a gateway unreachable, a response body cut while it was
// forwarded) go to the box's log.
func (b *Box) StartLoadBalancer(ctx context.Context) (*LoadBalancer, error) {
	c, err := b.Nomad(b.state.NomadManagement)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	lb := &LoadBalancer{URL: "http://" + ln.Addr().String(), done: make(chan struct{})}
	lb.backends.Store(&[]*url.URL{})
	lb.srv = &http.Server{Handler: lb.handler(log.New(b.cfg.Log, "stand-in load balancer: ", log.Lmicroseconds))}
	go func() { _ = lb.srv.Serve(ln) }()
	rctx, cancel := context.WithCancel(context.Background())
	lb.cancel = cancel
	cache := map[string]*url.URL{}
	refresh := func() {
		if list, err := gatewayTargets(rctx, c, cache); err == nil {
			lb.backends.Store(&list)
		}
	}
	refresh()
	go func() {
		defer close(lb.done)
		t := time.NewTicker(loadBalancerRefresh)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				refresh()
			}
		}
	}()
	err = Poll(ctx, 2*time.Minute, func() error {
		if len(*lb.backends.Load()) == 0 {
			return fmt.Errorf("no gateway running")
		}
		return nil
	})
	if err != nil {
		lb.Close()
		return nil, err
	}
	return lb, nil
}

// handler forwards each request to the next gateway, round robin.
func (lb *LoadBalancer) handler(errLog *log.Logger) http.Handler {
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			if u := lb.pick(); u != nil {
				r.SetURL(u)
			}
		},
		FlushInterval: -1, // streamed answers pass as they come
		ErrorLog:      errLog,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(*lb.backends.Load()) == 0 {
			http.Error(w, "no healthy gateway", http.StatusServiceUnavailable)
			return
		}
		// Without full duplex, net/http drains and closes the request
		// body as soon as the response headers are written here. A
		// gateway that answers before the transport has finished with
		// that body (it reads once more past Content-Length to check the
		// length) then has its connection torn down by the transport, and
		// its streamed answer is cut short (golang/go#40747). An ALB
		// forwards both directions at once.
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		proxy.ServeHTTP(w, r)
	})
}

// Targets are the gateways the stand-in forwards to now.
func (lb *LoadBalancer) Targets() []string {
	var out []string
	for _, u := range *lb.backends.Load() {
		out = append(out, u.String())
	}
	return out
}

func (lb *LoadBalancer) pick() *url.URL {
	list := *lb.backends.Load()
	if len(list) == 0 {
		return nil
	}
	return list[lb.next.Add(1)%uint64(len(list))]
}

// Close stops the stand-in.
func (lb *LoadBalancer) Close() {
	lb.cancel()
	<-lb.done
	_ = lb.srv.Close()
}

// gatewayTargets lists the gateway allocations to forward to: running,
// desired to run, and healthy when their deployment has judged them;
// cache keeps each allocation's address by id.
func gatewayTargets(ctx context.Context, c *nomad.Client, cache map[string]*url.URL) ([]*url.URL, error) {
	allocs, _, err := c.Jobs().Allocations("slm-gateway", false, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	var out []*url.URL
	for _, a := range allocs {
		if a.ClientStatus != nomad.AllocClientStatusRunning || a.DesiredStatus != nomad.AllocDesiredStatusRun {
			continue
		}
		if d := a.DeploymentStatus; d != nil && (d.Healthy == nil || !*d.Healthy) {
			continue
		}
		u, ok := cache[a.ID]
		if !ok {
			full, _, err := c.Allocations().Info(a.ID, (&nomad.QueryOptions{}).WithContext(ctx))
			if err != nil || full.AllocatedResources == nil {
				continue
			}
			for _, p := range full.AllocatedResources.Shared.Ports {
				if p.Label == "http" {
					u = &url.URL{Scheme: "http", Host: net.JoinHostPort(p.HostIP, fmt.Sprint(p.Value))}
				}
			}
			if u == nil {
				continue
			}
			cache[a.ID] = u
		}
		out = append(out, u)
	}
	return out, nil
}

// Bump submits the three jobs again, as Deploy did, with the variable
// version set: each job rolls out a new deployment (canaries first). It
// returns when tools/submit has seen every deployment succeed.
func (b *Box) Bump(ctx context.Context, version string) error {
	vars := filepath.Join(b.cfg.Dir, "version.vars.hcl")
	if err := os.WriteFile(vars, []byte(fmt.Sprintf("version = %q\n", version)), 0o644); err != nil {
		return err
	}
	return b.Submit(ctx, filepath.Join(b.cfg.Dir, "box.vars.hcl"), filepath.Join(b.cfg.Dir, "release-box.vars.hcl"), vars)
}

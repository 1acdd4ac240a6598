package discovery_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/internal/consultest"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
)

// settle bounds every wait for Consul to reflect a change: the agent's check
// interval in these tests is 1s, anti-entropy and -race add a little.
const settle = 20 * time.Second

func TestConsulWatchSeesRegisterAndDeregister(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	ch := watch(t, discovery.NewConsul(agent.Client(), testLogger(t)), discovery.ServiceCaller)

	// Consul really has no instance yet, so an empty set is the truth.
	waitFor(t, ch, "no instances", ids())

	h1, h2 := newHealthServer(t), newHealthServer(t)
	deregister1 := register(t, agent.Client(), discovery.ServiceCaller, "caller-1", h1)
	register(t, agent.Client(), discovery.ServiceCaller, "caller-2", h2)

	set := waitFor(t, ch, "both instances", ids("caller-1", "caller-2"))
	if set[0].Addr != h1.addr || set[1].Addr != h2.addr {
		t.Errorf("addresses = %v, want %s and %s", set, h1.addr, h2.addr)
	}

	if err := deregister1(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, "caller-1 gone", ids("caller-2"))
}

func TestConsulWatchFollowsHealthCheck(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	ch := watch(t, discovery.NewConsul(agent.Client(), testLogger(t)), discovery.ServiceInference)

	h := newHealthServer(t)
	register(t, agent.Client(), discovery.ServiceInference, "inference-1", h)
	waitFor(t, ch, "healthy instance", ids("inference-1"))

	h.status.Store(http.StatusServiceUnavailable)
	waitFor(t, ch, "failing instance dropped", ids())

	h.status.Store(http.StatusOK)
	waitFor(t, ch, "recovered instance back", ids("inference-1"))
}

func TestConsulWatchKeepsLastSetWhileConsulIsDown(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	resolver := discovery.NewConsul(agent.Client(), testLogger(t))
	// Short retries so that the watch finds the restarted agent soon.
	resolver.MaxBackoff = time.Second
	ch := watch(t, resolver, discovery.ServiceCaller)

	h := newHealthServer(t)
	register(t, agent.Client(), discovery.ServiceCaller, "caller-1", h)
	waitFor(t, ch, "instance before the outage", ids("caller-1"))

	agent.Stop()
	// Several failed queries and retries fit in this window; none of them
	// may reach the reader, least of all as an empty set.
	outage := time.NewTimer(3 * time.Second)
	defer outage.Stop()
	for waiting := true; waiting; {
		select {
		case set, ok := <-ch:
			if !ok {
				t.Fatal("watch closed while Consul was down")
			}
			t.Fatalf("watch sent %v while Consul was down, want nothing", set)
		case <-outage.C:
			waiting = false
		}
	}

	// A dev agent forgets its registrations, so a new one proves the watch
	// is reading the restarted agent.
	agent.Restart()
	register(t, agent.Client(), discovery.ServiceCaller, "caller-2", h)
	waitFor(t, ch, "instance registered after the restart", ids("caller-2"))
}

func TestNewConsulClientReadsEnvAndFlagOverrides(t *testing.T) {
	// Not parallel: t.Setenv changes the process environment.
	agent := consultest.Start(t)

	t.Setenv(api.HTTPAddrEnvName, agent.HTTPAddr())
	t.Setenv(api.HTTPTokenEnvName, "")
	fromEnv, err := discovery.NewConsulClient("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fromEnv.Status().Leader(); err != nil {
		t.Errorf("client from %s: %v", api.HTTPAddrEnvName, err)
	}

	// Nothing listens on port 1; the flag value must win over it.
	t.Setenv(api.HTTPAddrEnvName, "127.0.0.1:1")
	fromFlag, err := discovery.NewConsulClient("http://" + agent.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fromFlag.Status().Leader(); err != nil {
		t.Errorf("client from flag: %v", err)
	}
}

func TestStaticSetAndWatch(t *testing.T) {
	t.Parallel()
	s := discovery.NewStatic()
	s.Set(discovery.ServiceInference, "127.0.0.1:7001")

	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Watch(ctx, discovery.ServiceInference)
	if got := <-ch; len(got) != 1 || got[0].Addr != "127.0.0.1:7001" || got[0].ID != "127.0.0.1:7001" {
		t.Fatalf("first set = %v", got)
	}

	s.Set(discovery.ServiceCaller, "127.0.0.1:9999") // another service: not ours
	s.Set(discovery.ServiceInference, cli.SplitList(" 127.0.0.1:7001, ,127.0.0.1:7002")...)
	waitFor(t, ch, "two static instances", ids("127.0.0.1:7001", "127.0.0.1:7002"))

	s.Set(discovery.ServiceInference)
	waitFor(t, ch, "empty static list", ids())

	cancel()
	deadline := time.After(settle)
	for {
		select {
		case _, open := <-ch:
			if !open {
				return
			}
		case <-deadline:
			t.Fatal("watch not closed after its context was cancelled")
		}
	}
}

// watch starts a watch that lasts until the test ends. The cleanup drains
// the channel until it is closed, so the resolver's goroutine has finished
// (and logged its last line) before the test is over.
func watch(t *testing.T, r discovery.Resolver, service string) <-chan []discovery.Instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := r.Watch(ctx, service)
	t.Cleanup(func() {
		cancel()
		for range ch {
		}
	})
	return ch
}

// waitFor reads sets from ch until one satisfies ok, and returns it; it
// fails the test after settle.
func waitFor(t *testing.T, ch <-chan []discovery.Instance, what string, ok func([]discovery.Instance) bool) []discovery.Instance {
	t.Helper()
	timeout := time.NewTimer(settle)
	defer timeout.Stop()
	var last []discovery.Instance
	for {
		select {
		case set, open := <-ch:
			if !open {
				t.Fatalf("waiting for %s: watch closed", what)
			}
			if ok(set) {
				return set
			}
			last = set
		case <-timeout.C:
			t.Fatalf("waiting for %s: not seen within %v; last set %v", what, settle, last)
		}
	}
}

// ids matches a set whose instance IDs are exactly want, in order (resolvers
// sort by ID).
func ids(want ...string) func([]discovery.Instance) bool {
	return func(set []discovery.Instance) bool {
		got := make([]string, len(set))
		for i, in := range set {
			got[i] = in.ID
		}
		return slices.Equal(got, want)
	}
}

// healthServer is an instance's /health endpoint whose answer the test sets.
type healthServer struct {
	status atomic.Int32
	addr   string // host:port
}

func newHealthServer(t *testing.T) *healthServer {
	return startHealthServer(t, false)
}

// startHealthServer is newHealthServer, over TLS (a certificate of
// httptest's own) if withTLS.
func startHealthServer(t *testing.T, withTLS bool) *healthServer {
	t.Helper()
	h := &healthServer{}
	h.status.Store(http.StatusOK)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != discovery.DefaultCheckPath {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(h.status.Load()))
	}))
	if withTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	h.addr = srv.Listener.Addr().String()
	return h
}

// register registers h as instance id of service, with a 1s check, and
// deregisters it when the test ends (harmlessly failing if Consul is gone).
func register(t *testing.T, client *api.Client, service, id string, h *healthServer) func() error {
	t.Helper()
	deregister, err := discovery.Register(context.Background(), client, discovery.Registration{
		Service:  service,
		ID:       id,
		Addr:     h.addr,
		Tags:     []string{"test"},
		Interval: time.Second,
		Timeout:  time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deregister() })
	return deregister
}

// testLogger sends the resolver's logs to the test log, shown on failure
// or with -v.
func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   "discovery",
		Level:  hclog.Debug,
		Output: testWriter{t},
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestFromFlags(t *testing.T) {
	t.Parallel()
	static, err := discovery.FromFlags("static", discovery.ServiceCaller, "127.0.0.1:7002,127.0.0.1:7003", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := watch(t, static, discovery.ServiceCaller)
	waitFor(t, ch, "the static flag's addresses", ids("127.0.0.1:7002", "127.0.0.1:7003"))

	if _, err := discovery.FromFlags("etcd", discovery.ServiceCaller, "", "", nil); err == nil {
		t.Error("FromFlags(etcd) succeeded, want an error")
	}

	consul, err := discovery.FromFlags("consul", discovery.ServiceCaller, "", "127.0.0.1:8500", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := consul.(*discovery.Consul); !ok {
		t.Errorf("FromFlags(consul) = %T, want *discovery.Consul", consul)
	}
}

func TestRegisterSelf(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	ch := watch(t, discovery.NewConsul(agent.Client(), testLogger(t)), discovery.ServiceGateway)
	h := newHealthServer(t)
	ctx := context.Background()

	// Listening on every interface says nothing about where peers reach us.
	_, err := discovery.RegisterSelf(ctx, agent.HTTPAddr(), discovery.ServiceGateway, "0.0.0.0:3111", "", testLogger(t))
	if !errors.Is(err, discovery.ErrInvalidRegistration) {
		t.Fatalf("RegisterSelf on a wildcard without advertise: %v, want ErrInvalidRegistration", err)
	}

	deregister, err := discovery.RegisterSelf(ctx, agent.HTTPAddr(), discovery.ServiceGateway, "0.0.0.0:3111", h.addr, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	set := waitFor(t, ch, "the advertised instance", func(set []discovery.Instance) bool { return len(set) == 1 })
	if set[0].Addr != h.addr {
		t.Errorf("registered address = %s, want the advertised %s", set[0].Addr, h.addr)
	}
	if err := deregister(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, "the instance deregistered", ids())
}

// A -dev agent forgets every registration when it restarts; an instance
// registered by RegisterSelf registers again by itself (within
// ReregisterInterval), and only until it deregisters.
func TestRegisterSelfAfterAgentRestart(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	resolver := discovery.NewConsul(agent.Client(), testLogger(t))
	// Short retries so that the watch finds the restarted agent soon.
	resolver.MaxBackoff = time.Second
	ch := watch(t, resolver, discovery.ServiceCaller)
	h := newHealthServer(t)

	deregister, err := discovery.RegisterSelf(context.Background(), agent.HTTPAddr(), discovery.ServiceCaller, h.addr, "", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deregister() })
	one := func(set []discovery.Instance) bool { return len(set) == 1 && set[0].Addr == h.addr }
	waitFor(t, ch, "the registered instance", one)

	agent.Restart()
	waitFor(t, ch, "the instance registered again after the agent's restart", one)

	if err := deregister(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, "the instance deregistered", ids())
	// It stays deregistered: nothing registers it again.
	time.Sleep(discovery.ReregisterInterval + time.Second)
	client := agent.Client()
	if entries, _, err := client.Health().Service(discovery.ServiceCaller, "", false, nil); err != nil || len(entries) != 0 {
		t.Errorf("after deregistering: %d instances in Consul (%v), want none", len(entries), err)
	}
}

// An instance that serves over TLS registers an https check, which
// passes although the agent does not know the certificate's CA; the same
// instance registered with a plain http check fails it.
func TestRegisterTLS(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	client := agent.Client()
	ch := watch(t, discovery.NewConsul(client, testLogger(t)), discovery.ServiceCaller)
	h := startHealthServer(t, true)
	ctx := context.Background()
	for _, r := range []discovery.Registration{
		{Service: discovery.ServiceCaller, ID: "tls", Addr: h.addr, TLS: true, Interval: time.Second},
		{Service: discovery.ServiceCaller, ID: "plain", Addr: h.addr, Interval: time.Second},
	} {
		deregister, err := discovery.Register(ctx, client, r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = deregister() })
	}
	waitFor(t, ch, "the instance with the https check", ids("tls"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		checks, err := client.Agent().ChecksWithFilter(`ServiceID == "plain"`)
		if err != nil {
			t.Fatal(err)
		}
		var status, output string
		for _, c := range checks {
			status, output = c.Status, c.Output
		}
		if status == api.HealthCritical && output != "" {
			break // checked, and failed
		}
		if status == api.HealthPassing || time.Now().After(deadline) {
			t.Fatalf("the plain http check of a TLS instance: %q (%s), want critical", status, output)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// An inference instance registers its model (ModelRegistration): the
// resolver reports it on the instance, and the tag is there for operators.
func TestRegisterSelfModel(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	ch := watch(t, discovery.NewConsul(agent.Client(), testLogger(t)), discovery.ServiceInference)
	h := newHealthServer(t)
	deregister, err := discovery.RegisterSelfAs(context.Background(), agent.HTTPAddr(), discovery.ModelRegistration("stories260K"), h.addr, "", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deregister() })
	set := waitFor(t, ch, "the registered instance", func(set []discovery.Instance) bool { return len(set) == 1 })
	if set[0].Model != "stories260K" || set[0].Addr != h.addr {
		t.Errorf("resolved %+v, want model stories260K at %s", set[0], h.addr)
	}
	entries, _, err := agent.Client().Health().Service(discovery.ServiceInference, discovery.TagModel("stories260K"), true, nil)
	if err != nil || len(entries) != 1 {
		t.Errorf("by tag %s: %d instances (%v), want 1", discovery.TagModel("stories260K"), len(entries), err)
	}
}

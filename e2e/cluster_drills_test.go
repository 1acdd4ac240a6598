package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/slm-mesh/slm-mesh/internal/clusterbox"
	"github.com/slm-mesh/slm-mesh/internal/load"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// TestClusterDrills runs the reliability drills (runDrills) on a box that
// is already up, deployed by `go run ./tools/box up`: SLM_BOX_DIR names its
// directory (.cache/box). TestClusterInABox runs the same drills on the
// box it brings up. The drills leave the box running but changed (a new
// version deployed, every agent restarted).
func TestClusterDrills(t *testing.T) {
	box := boxUp(t, "the drills")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	runDrills(ctx, t, box)
}

// boxUp opens the box that is up in the directory SLM_BOX_DIR names, for
// a test that runs what TestClusterInABox runs on its own box; without
// SLM_BOX_DIR the test is skipped.
func boxUp(t *testing.T, what string) *clusterbox.Box {
	t.Helper()
	dir := os.Getenv("SLM_BOX_DIR")
	if dir == "" {
		t.Skipf("TestClusterInABox runs %s; SLM_BOX_DIR=<a running box's directory> runs them on a box that is up", what)
	}
	box, err := clusterbox.Open(clusterbox.Config{Root: modeltest.RepoRoot(), Dir: dir, Log: &lineLogger{t: t}})
	if err != nil {
		t.Fatal(err)
	}
	return box
}

// drillBound is the generous bound on every recovery the drills wait for;
// the times measured are logged (docs/RELIABILITY.md, "Drills"), not
// asserted.
const drillBound = 5 * time.Minute

// runDrills puts the box under steady load through a stand-in for the
// load balancer (clusterbox.LoadBalancer) and, one after the other: kills
// the Nomad leader's server, stops and restarts a server with its data,
// kills an inference host, rolls out a new version of every job, and
// boots a client before the servers.
func runDrills(ctx context.Context, t *testing.T, box *clusterbox.Box) {
	lb, err := box.StartLoadBalancer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	t.Logf("stand-in load balancer %s → %v", lb.URL, lb.Targets())
	mgmt, err := box.Nomad(box.ManagementToken())
	if err != nil {
		t.Fatal(err)
	}
	nomadWith := func(h *clusterbox.Host) *nomadapi.Client {
		cfg := nomadapi.DefaultConfig()
		cfg.Address = "https://" + h.IP + ":4646"
		cfg.Region, cfg.Namespace = "", ""
		cfg.SecretID = box.ManagementToken()
		name := clusterbox.NomadServerName
		if h.Kind != "server" {
			name = "client.global.nomad" // a client's certificate
		}
		cfg.TLSConfig = box.NomadTLS(name)
		c, err := nomadapi.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// The control: the same load for a minute with nothing done to the
	// box; what fails here fails without any drill.
	t.Run("baseline", func(t *testing.T) {
		run := startLoad(ctx, t, box, lb)
		time.Sleep(time.Minute)
		rep := run.stop(t)
		t.Logf("DRILL baseline: no fault for a minute; %s", summary(rep))
		if failed(rep) > 0 {
			t.Errorf("%d requests failed with no fault: %s", failed(rep), examples(rep))
		}
	})

	t.Run("leader", func(t *testing.T) {
		leaderAddr, err := mgmt.Status().Leader()
		if err != nil {
			t.Fatal(err)
		}
		leader := box.ServerOf(leaderAddr)
		if leader == nil {
			t.Fatalf("no server has the leader's address %s", leaderAddr)
		}
		other := otherServer(box, leader)
		consulLeader, err := box.ConsulLeader(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		if box.ServerOf(consulLeader) != leader {
			// One kill takes both leaders, as when one instance leads both.
			// A transfer Consul accepts may still not stick (the target's
			// election can be lost), so it is asked again until it does,
			// for a while: a run where it never sticks kills Nomad's
			// leader alone, and says so, rather than failing on a
			// precondition (Nomad 1.6 cannot move its own leader).
			transfers := 0
			if err := clusterbox.Poll(ctx, 90*time.Second, func() error {
				if consulLeader, err = box.ConsulLeader(ctx, other); err == nil && box.ServerOf(consulLeader) == leader {
					return nil
				}
				transfers++
				if err := box.ConsulTransferLeader(ctx, other, leader); err != nil {
					return fmt.Errorf("Consul's leader is %q, not %s: transfer: %v", consulLeader, leader.Name, err)
				}
				time.Sleep(5 * time.Second)
				return fmt.Errorf("Consul's leader is %q, not %s, after %d transfers", consulLeader, leader.Name, transfers)
			}); err != nil {
				peers, perr := box.ConsulRaftPeers(ctx, other)
				t.Logf("DRILL leader: %v; Consul's Raft peers %+v (%v): this run kills Nomad's leader only", err, peers, perr)
			}
		}
		t.Logf("Nomad's leader is %s (%s), Consul's %s", leader.Name, leaderAddr, consulLeader)
		run := startLoad(ctx, t, box, lb)
		start := time.Now()
		box.KillHost(ctx, leader)
		survivor := nomadWith(other)
		var newNomad, newConsul string
		err = clusterbox.Poll(ctx, drillBound, func() error {
			if newNomad, err = survivor.Status().Leader(); err != nil || box.ServerOf(newNomad) == leader {
				return fmt.Errorf("no new Nomad leader (%q, %v)", newNomad, err)
			}
			if newConsul, err = box.ConsulLeader(ctx, other); err != nil || newConsul == "" || box.ServerOf(newConsul) == leader {
				return fmt.Errorf("no new Consul leader (%q, %v)", newConsul, err)
			}
			return nil
		})
		elected := time.Since(start)
		if err != nil {
			t.Fatalf("quorum lost: %v", err)
		}
		time.Sleep(15 * time.Second) // load after the election too
		rep := run.stop(t)
		t.Logf("DRILL leader: killed %s; new leaders Nomad %s, Consul %s after %s; %s",
			leader.Name, newNomad, newConsul, elected.Round(100*time.Millisecond), summary(rep))
		// Losing the leader of both Raft clusters must cost no request:
		// the services hold their peers' connections, not the servers'.
		if failed(rep) > 0 {
			t.Errorf("%d requests failed while the leader was lost: %s", failed(rep), examples(rep))
		}
		boot(ctx, t, box, leader)
		waitPeers(ctx, t, box, survivor, other, 3)
	})

	t.Run("restart server", func(t *testing.T) {
		leaderAddr, err := mgmt.Status().Leader()
		if err != nil {
			t.Fatal(err)
		}
		h := otherServer(box, box.ServerOf(leaderAddr))
		watcher := otherServer(box, h)
		before := nomadPeers(t, nomadWith(watcher))
		consulBefore, err := box.ConsulRaftPeers(ctx, watcher)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		box.StopHost(ctx, h, 30*time.Second)
		boot(ctx, t, box, h)
		after := waitPeers(ctx, t, box, nomadWith(watcher), watcher, 3)
		took := time.Since(start)
		consulAfter, err := box.ConsulRaftPeers(ctx, watcher)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(before, after) {
			t.Errorf("Nomad's Raft peers changed across the restart of %s:\n before %v\n after  %v", h.Name, before, after)
		}
		if ids(consulBefore) != ids(consulAfter) {
			t.Errorf("Consul's Raft peers changed across the restart of %s:\n before %v\n after  %v", h.Name, consulBefore, consulAfter)
		}
		t.Logf("DRILL restart server: %s stopped and booted with its data; back among 3 Raft peers of both after %s; Nomad peers %v; Consul peers %v",
			h.Name, took.Round(100*time.Millisecond), after, consulAfter)
	})

	t.Run("kill inference host", func(t *testing.T) {
		h := hostRunning(ctx, t, mgmt, box, "slm-inference")
		count := runningAllocs(t, mgmt, "slm-inference")
		run := startLoad(ctx, t, box, lb)
		start := time.Now()
		box.KillHost(ctx, h)
		var lostAt time.Duration
		err := clusterbox.Poll(ctx, drillBound, func() error {
			allocs, _, err := mgmt.Jobs().Allocations("slm-inference", false, nil)
			if err != nil {
				return err
			}
			n := 0
			for _, a := range allocs {
				if a.NodeName == h.Name && a.ClientStatus == nomadapi.AllocClientStatusLost && lostAt == 0 {
					lostAt = time.Since(start)
				}
				if a.NodeName != h.Name && a.ClientStatus == nomadapi.AllocClientStatusRunning && a.DesiredStatus == nomadapi.AllocDesiredStatusRun &&
					(a.DeploymentStatus == nil || a.DeploymentStatus.Healthy == nil || *a.DeploymentStatus.Healthy) {
					n++
				}
			}
			if n < count {
				return fmt.Errorf("%d of %d inference instances running off %s", n, count, h.Name)
			}
			return nil
		})
		recovered := time.Since(start)
		if err != nil {
			t.Errorf("the inference did not come back: %v", err)
		}
		time.Sleep(15 * time.Second)
		rep := run.stop(t)
		t.Logf("DRILL kill inference host: killed %s; its allocations lost after %s; %d inference instances running on the other host after %s; %s",
			h.Name, lostAt.Round(100*time.Millisecond), count, recovered.Round(100*time.Millisecond), summary(rep))
		if rep.Counts[load.OK] == 0 {
			t.Errorf("no request succeeded while an inference host was down")
		}
		boot(ctx, t, box, h)
		waitNodeReady(ctx, t, mgmt, h)
	})

	// An Auto Scaling group terminates an inference node: its lifecycle
	// hook holds the instance while the node's drain unit (drain.sh, as
	// rendered for AWS) sees the state in the instance metadata, drains
	// its Nomad node with the node's own token and completes the lifecycle
	// action. The metadata service and the one Auto Scaling call moto
	// lacks are the box's stand-ins; the drain, the token, the move of the
	// allocations and the load are real.
	t.Run("drain on termination", func(t *testing.T) {
		imds, err := box.StartIMDS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer imds.Close()
		asg, err := box.StartAutoScaling(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer asg.Close()
		h := hostRunning(ctx, t, mgmt, box, "slm-inference")
		instance := "i-box" + strings.ReplaceAll(h.Name, "-", "")
		imds.Set(h, "instance-id", instance)
		count := runningAllocs(t, mgmt, "slm-inference")
		run := startLoad(ctx, t, box, lb)
		start := time.Now()
		imds.Set(h, "autoscaling/target-lifecycle-state", "Terminated")
		var node *nomadapi.Node
		var drainedAt time.Duration
		err = clusterbox.Poll(ctx, drillBound, func() error {
			nodes, _, err := mgmt.Nodes().List(nil)
			if err != nil {
				return err
			}
			for _, n := range nodes {
				if n.Name == h.Name {
					if node, _, err = mgmt.Nodes().Info(n.ID, nil); err != nil {
						return err
					}
				}
			}
			if node == nil || node.SchedulingEligibility != nomadapi.NodeSchedulingIneligible {
				return fmt.Errorf("%s not marked for drain", h.Name)
			}
			if node.DrainStrategy != nil {
				return fmt.Errorf("%s still draining", h.Name)
			}
			if drainedAt == 0 {
				drainedAt = time.Since(start)
			}
			allocs, _, err := mgmt.Jobs().Allocations("slm-inference", false, nil)
			if err != nil {
				return err
			}
			n := 0
			for _, a := range allocs {
				running := a.ClientStatus == nomadapi.AllocClientStatusRunning && a.DesiredStatus == nomadapi.AllocDesiredStatusRun
				if running && a.NodeName == h.Name {
					return fmt.Errorf("an inference instance still runs on the drained %s", h.Name)
				}
				if running {
					n++
				}
			}
			if n < count {
				return fmt.Errorf("%d of %d inference instances running off %s", n, count, h.Name)
			}
			if len(asg.Completed()) == 0 {
				return errors.New("the lifecycle action is not completed yet")
			}
			return nil
		})
		took := time.Since(start)
		time.Sleep(10 * time.Second)
		rep := run.stop(t)
		if err != nil {
			t.Fatalf("the node did not drain and complete its lifecycle action: %v", err)
		}
		t.Logf("DRILL drain on termination: %s drained after %s, its inference moved and the lifecycle action completed after %s (%+v); %s",
			h.Name, drainedAt.Round(100*time.Millisecond), took.Round(100*time.Millisecond), asg.Completed(), summary(rep))
		if got := asg.Completed(); len(got) != 1 || got[0].Instance != instance || got[0].Result != "CONTINUE" ||
			!strings.HasSuffix(got[0].Group, "-inference") || got[0].Hook == "" {
			t.Errorf("lifecycle actions completed: %+v; want one, CONTINUE, for %s in the inference group", got, instance)
		}
		if failed(rep) > 0 {
			t.Errorf("%d requests failed while the node drained: %s", failed(rep), examples(rep))
		}
		// The box keeps the host: it takes allocations again, as a
		// replacement instance would.
		imds.Reset(h)
		if _, err := mgmt.Nodes().ToggleEligibility(node.ID, true, nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("version bump", func(t *testing.T) {
		run := startLoad(ctx, t, box, lb)
		start := time.Now()
		err := box.Bump(ctx, "drill-"+time.Now().UTC().Format("150405"))
		took := time.Since(start)
		time.Sleep(10 * time.Second)
		rep := run.stop(t)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("DRILL version bump: all three jobs rolled out with canaries in %s; %s", took.Round(time.Second), summary(rep))
		// A rollout drains each old instance before it stops (the
		// gateways behind the load balancer included): no request fails.
		if failed(rep) > 0 {
			t.Errorf("%d requests failed during the rollout: %s", failed(rep), examples(rep))
		}
	})

	t.Run("client before servers", func(t *testing.T) {
		client := box.Host("gateway-3")
		servers := box.HostsOf("server")
		for _, h := range append([]*clusterbox.Host{client}, servers...) {
			box.KillHost(ctx, h)
		}
		start := time.Now()
		clientBooted := make(chan error, 1)
		go func() { clientBooted <- box.Boot(ctx, client) }()
		time.Sleep(30 * time.Second) // the client's units run with no server up
		var wg sync.WaitGroup
		for _, h := range servers {
			wg.Go(func() { boot(ctx, t, box, h) })
		}
		wg.Wait()
		if err := <-clientBooted; err != nil {
			t.Fatalf("%s: %v", client.Name, err)
		}
		waitNodeReady(ctx, t, mgmt, client)
		// The node's status may be the one the servers' Raft kept: the
		// client's own agent must say it runs and reaches its servers.
		agent := nomadWith(client)
		err := clusterbox.Poll(ctx, drillBound, func() error {
			h, err := agent.Agent().Health()
			if err != nil {
				return err
			}
			if h.Client == nil || !h.Client.Ok {
				return fmt.Errorf("client health %+v", h.Client)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Nomad on %s: %v", client.Name, err)
		}
		t.Logf("DRILL client before servers: %s booted 30s before the servers; Nomad ready on it %s after its boot began",
			client.Name, time.Since(start).Round(time.Second))
	})
}

// loadRun is the load generator running against the stand-in.
type loadRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	rep    *load.Report
	err    error
}

// startLoad starts internal/load against lb and returns once its load
// phase has begun (after the golden answers).
func startLoad(ctx context.Context, t *testing.T, box *clusterbox.Box, lb *clusterbox.LoadBalancer) *loadRun {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	started := make(chan struct{})
	r := &loadRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.rep, r.err = load.Run(ctx, load.Config{
			Client: &load.Client{
				BaseURL: lb.URL, APIKey: box.APIKey(), Timeout: time.Minute,
				HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}},
			},
			// Two clients without pause still go over the gateways'
			// per-key rate limit (5/s each) at times with the tiny
			// model's short answers: those 429s are the gateway's
			// correct answer and are counted apart, never as failed.
			Clients:   2,
			Duration:  30 * time.Minute, // until stop
			Prompts:   load.Prompts(3),
			MaxTokens: []int{24, 64},
			Progress:  &startWatch{started: started},
		})
	}()
	select {
	case <-started:
	case <-r.done:
		t.Fatalf("load: %v", r.err)
	}
	time.Sleep(5 * time.Second) // load before the drill too
	return r
}

// stop ends the load: requests in flight then are cut off and not counted.
func (r *loadRun) stop(t *testing.T) *load.Report {
	t.Helper()
	r.cancel()
	<-r.done
	if r.err != nil {
		t.Fatalf("load: %v", r.err)
	}
	return r.rep
}

// startWatch closes started when load.Run reports its load phase.
type startWatch struct {
	once    sync.Once
	started chan struct{}
}

func (w *startWatch) Write(p []byte) (int, error) {
	if strings.Contains(string(p), " clients for ") {
		w.once.Do(func() { close(w.started) })
	}
	return len(p), nil
}

// failed counts the requests without a correct answer, 503 included, but
// for 429 with a Retry-After: the load generator has one API key and no
// pacing, so it goes over the gateways' per-key rate limit whatever the
// drill does, and a 429 telling when to come back is the gateway's correct
// answer to that (load.Outcome.Failure).
func failed(rep *load.Report) int {
	return rep.Requests() - rep.Counts[load.OK] - rep.Counts[load.RateLimited]
}

func summary(rep *load.Report) string {
	s := fmt.Sprintf("%d of %d requests failed (%d more answered 429 for the per-key rate limit)",
		failed(rep), rep.Requests(), rep.Counts[load.RateLimited])
	if failed(rep) > 0 {
		s += ": " + examples(rep)
	}
	return s
}

func examples(rep *load.Report) string {
	var out []string
	for o, n := range rep.Counts {
		if n > 0 && load.Outcome(o) != load.OK && load.Outcome(o) != load.RateLimited {
			out = append(out, fmt.Sprintf("%d %s (e.g. %s)", n, load.Outcome(o), rep.Examples[o]))
		}
	}
	return strings.Join(out, "; ")
}

func otherServer(box *clusterbox.Box, not *clusterbox.Host) *clusterbox.Host {
	for _, h := range box.HostsOf("server") {
		if h != not {
			return h
		}
	}
	return nil
}

func boot(ctx context.Context, t *testing.T, box *clusterbox.Box, h *clusterbox.Host) {
	t.Helper()
	bctx, cancel := context.WithTimeout(ctx, drillBound)
	defer cancel()
	if err := box.Boot(bctx, h); err != nil {
		t.Fatalf("boot %s: %v", h.Name, err)
	}
}

// nomadPeers is Nomad's Raft configuration as "node id address voter".
func nomadPeers(t *testing.T, c *nomadapi.Client) []string {
	t.Helper()
	cfg, err := c.Operator().RaftGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range cfg.Servers {
		out = append(out, fmt.Sprintf("%s %s %s voter=%t", s.Node, s.ID, s.Address, s.Voter))
	}
	slices.Sort(out)
	return out
}

func ids(peers []clusterbox.RaftPeer) string {
	var out []string
	for _, p := range peers {
		out = append(out, p.Node+" "+p.ID+" "+p.Address)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// waitPeers waits until Nomad's and Consul's Raft have n voters, a leader,
// and returns Nomad's.
func waitPeers(ctx context.Context, t *testing.T, box *clusterbox.Box, c *nomadapi.Client, h *clusterbox.Host, n int) []string {
	t.Helper()
	var peers []string
	err := clusterbox.Poll(ctx, drillBound, func() error {
		cfg, err := c.Operator().RaftGetConfiguration(nil)
		if err != nil {
			return err
		}
		voters, leader := 0, false
		for _, s := range cfg.Servers {
			if s.Voter {
				voters++
			}
			leader = leader || s.Leader
		}
		if voters != n || !leader {
			return fmt.Errorf("Nomad: %d voters (leader %t), want %d", voters, leader, n)
		}
		cp, err := box.ConsulRaftPeers(ctx, h)
		if err != nil {
			return err
		}
		if len(cp) != n {
			return fmt.Errorf("Consul: %d peers, want %d", len(cp), n)
		}
		if _, err := box.ConsulLeader(ctx, h); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	peers = nomadPeers(t, c)
	return peers
}

// hostRunning is the host of a running allocation of job.
func hostRunning(ctx context.Context, t *testing.T, c *nomadapi.Client, box *clusterbox.Box, job string) *clusterbox.Host {
	t.Helper()
	allocs, _, err := c.Jobs().Allocations(job, false, (&nomadapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range allocs {
		if a.ClientStatus == nomadapi.AllocClientStatusRunning {
			if h := box.Host(a.NodeName); h != nil {
				return h
			}
		}
	}
	t.Fatalf("no running allocation of %s", job)
	return nil
}

func runningAllocs(t *testing.T, c *nomadapi.Client, job string) int {
	t.Helper()
	allocs, _, err := c.Jobs().Allocations(job, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range allocs {
		if a.ClientStatus == nomadapi.AllocClientStatusRunning && a.DesiredStatus == nomadapi.AllocDesiredStatusRun {
			n++
		}
	}
	return n
}

// waitNodeReady waits until h's Nomad client is ready.
func waitNodeReady(ctx context.Context, t *testing.T, c *nomadapi.Client, h *clusterbox.Host) {
	t.Helper()
	err := clusterbox.Poll(ctx, drillBound, func() error {
		nodes, _, err := c.Nodes().List(nil)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.Name == h.Name && n.Status == nomadapi.NodeStatusReady {
				return nil
			}
		}
		return errors.New(h.Name + " not ready")
	})
	if err != nil {
		t.Fatal(err)
	}
}

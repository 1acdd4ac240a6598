package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
)

// TestPartition runs the inference instance in a network namespace of its
// own, reached by the caller over a veth pair, and cuts the link while a
// stream is being generated: no packet gets through, and no connection is
// closed, so only the RPC keepalive can notice.
//
// Bounds, from the keepalive (ping every 5s, dead after 10s without a
// frame) and the pool (a call waits ConnectWait, 1s, for a connection):
//   - the stream in flight ends with an error event at most keepalive
//     (10s) after the cut, plus slack;
//   - a request sent before the dead connection is noticed fails with 503
//     and Retry-After once it is, so within keepalive + ConnectWait;
//   - one sent after that fails within ConnectWait, plus slack;
//   - after the link is back, requests succeed within 20s: a reconnection
//     attempt under way retransmits its SYN at 1, 3 and 7s and gives up at
//     the 10s dial timeout, and the next one comes at most MaxBackoff (5s)
//     later.
func TestPartition(t *testing.T) {
	t.Parallel()
	ns := newTestNetns(t)
	m := startMesh(t, localmesh.Config{
		Parallel:       2,
		Ctx:            2048,
		InferenceHosts: []string{ns.innerIP},
		Wrap:           map[string][]string{"inference-1": ns.exec()},
	})
	if addr := m.Addr("inference-1"); !strings.HasPrefix(addr, ns.innerIP+":") {
		t.Fatalf("inference-1 listens on %s, want %s", addr, ns.innerIP)
	}
	if o := m.call(16); o.err != nil {
		t.Fatalf("a request over the veth: %v", o.err)
	}

	// A long stream is being generated when the link goes down.
	inflight := make(chan timed, 1)
	first := make(chan struct{})
	go func() { inflight <- m.timedCall(1500, func() { close(first) }) }()
	select {
	case <-first:
	case <-time.After(30 * time.Second):
		t.Fatal("the stream did not start within 30s")
	}
	ns.setLink(t, "down")
	cutAt := time.Now()
	healed := false
	defer func() {
		if !healed { // let the mesh stop cleanly
			_ = exec.Command("ip", "-n", ns.name, "link", "set", ns.inner, "up").Run()
		}
	}()

	// Requests one after another until the stream has ended and three
	// more were refused, bounded in time and count.
	var (
		probes     []probe
		stream     timed
		streamDone bool
	)
	deadline := cutAt.Add(keepalive + 15*time.Second)
	for len(probes) < 60 && time.Now().Before(deadline) {
		if !streamDone {
			select {
			case stream = <-inflight:
				streamDone = true
			default:
			}
		}
		if streamDone && countAfter(probes, stream.end) >= 3 {
			break
		}
		probes = append(probes, m.sendProbe())
	}
	if !streamDone {
		t.Fatalf("the stream in flight at the cut had not ended %s after it", time.Since(cutAt).Round(time.Millisecond))
	}
	detected := stream.end.Sub(cutAt)
	t.Logf("the stream in flight ended %s after the cut, after %d characters: %v", detected.Round(time.Millisecond), len(stream.text), stream.err)
	switch {
	case stream.hung:
		t.Errorf("the stream in flight at the cut hung: %v", stream.err)
	case !unavailable(stream.err):
		t.Errorf("the stream in flight at the cut ended with %v, want an error event with a 503 code", stream.err)
	}
	if detected > keepalive+3*time.Second {
		t.Errorf("the dead connection was noticed %s after the cut, want within the keepalive (%s) and 3s", detected, keepalive)
	}

	var before, after []string
	for _, p := range probes {
		if bad := p.not503(); bad != "" {
			t.Errorf("a request %s after the cut: %s, want 503 with Retry-After", p.start.Sub(cutAt).Round(time.Millisecond), bad)
		}
		took := p.took.Round(time.Millisecond).String()
		if p.start.After(stream.end) {
			after = append(after, took)
			if p.took > connectWait+2*time.Second {
				t.Errorf("a request sent after the dead connection was noticed took %s to fail, want within ConnectWait (%s) and 2s", p.took, connectWait)
			}
		} else {
			before = append(before, took)
			if p.took > keepalive+connectWait+3*time.Second {
				t.Errorf("a request sent during the cut took %s to fail, want within keepalive + ConnectWait (%s) and 3s", p.took, keepalive+connectWait)
			}
		}
	}
	t.Logf("requests during the cut failed with 503 after %v (sent before it was noticed) and %v (after)", before, after)
	if len(after) < 3 {
		t.Errorf("only %d requests were sent after the dead connection was noticed", len(after))
	}

	// /health says the inference hop fails, and which instance.
	var (
		code int
		h    healthReport
	)
	if !eventually(10*time.Second, 100*time.Millisecond, func() bool {
		code, h = m.gatewayHealth(t)
		return code == http.StatusServiceUnavailable && h.Failing == "inference" && instanceDown(h, m.Addr("inference-1"))
	}) {
		t.Errorf("/health during the cut: %d %+v, want 503 failing at inference, naming %s", code, h, m.Addr("inference-1"))
	}

	ns.setLink(t, "up")
	healed = true
	healAt := time.Now()
	recoveredAt, ok := recovery(t, m, 30*time.Second)
	if !ok {
		t.Fatal("requests did not succeed again within 30s of the link coming back")
	}
	recovered := recoveredAt.Sub(healAt)
	t.Logf("requests succeed again %s after the link came back", recovered.Round(time.Millisecond))
	if recovered > 20*time.Second {
		t.Errorf("requests succeeded again %s after the link came back, want within 20s", recovered)
	}
	// The inference side noticed the dead connection too, and stopped
	// generating for it.
	if !eventually(5*time.Second, 50*time.Millisecond, func() bool { return m.inferenceHealth(t, "inference-1").Busy == 0 }) {
		t.Error("an inference slot is still busy after the partition healed")
	}
	waitLive(t, m, 1)
}

// countAfter is the number of probes sent after t.
func countAfter(probes []probe, t time.Time) int {
	n := 0
	for _, p := range probes {
		if p.start.After(t) {
			n++
		}
	}
	return n
}

// testNetns is a network namespace of a test's own, joined to the root
// namespace by a veth pair on a /30 of 10.231.0.0/16 (a private range no
// one here routes).
type testNetns struct {
	name             string // the namespace
	outer, inner     string // the veth ends: root namespace, name
	outerIP, innerIP string
}

var netnsSeq atomic.Int32

// newTestNetns creates a namespace and its veth pair, with names and a
// subnet no other test (or test run) uses, and removes them when t ends,
// after the mesh's processes have stopped (cleanups run last first). It
// needs root and iproute2: without them the test is skipped, except under
// CI, where it fails.
func newTestNetns(t *testing.T) *testNetns {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf(format+" (CI is set, so this is a failure)", args...)
		}
		t.Skipf(format, args...)
	}
	if os.Geteuid() != 0 {
		skip("network namespaces need root; running as uid %d", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skip("no ip command (iproute2): %v", err)
	}
	n := netnsSeq.Add(1)
	pid := os.Getpid()
	ns := &testNetns{
		name:  fmt.Sprintf("slm-e2e-%d-%d", pid, n),
		outer: fmt.Sprintf("slm%do%d", pid%1000000, n), // at most 15 characters
		inner: fmt.Sprintf("slm%di%d", pid%1000000, n),
	}
	used, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		t.Fatalf("ip addr show: %v", err)
	}
	for i := range 254 {
		x := (pid+int(n)*37+i)%254 + 1
		prefix := "10.231." + strconv.Itoa(x) + "."
		if !strings.Contains(string(used), " "+prefix) {
			ns.outerIP, ns.innerIP = prefix+"1", prefix+"2"
			break
		}
	}
	if ns.outerIP == "" {
		t.Fatal("every /24 of 10.231.0.0/16 is in use")
	}

	if out, err := exec.Command("ip", "netns", "add", ns.name).CombinedOutput(); err != nil {
		skip("cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		// Deleting one end of a veth deletes both.
		_ = exec.Command("ip", "link", "del", ns.outer).Run()
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	for _, args := range [][]string{
		{"link", "add", ns.outer, "type", "veth", "peer", "name", ns.inner, "netns", ns.name},
		{"addr", "add", ns.outerIP + "/30", "dev", ns.outer},
		{"link", "set", ns.outer, "up"},
		{"-n", ns.name, "addr", "add", ns.innerIP + "/30", "dev", ns.inner},
		{"-n", ns.name, "link", "set", ns.inner, "up"},
		{"-n", ns.name, "link", "set", "lo", "up"},
	} {
		ip(t, args...)
	}
	t.Logf("network namespace %s: %s (%s) <-> %s (%s)", ns.name, ns.outer, ns.outerIP, ns.inner, ns.innerIP)
	return ns
}

// exec is the command prefix that runs a process in the namespace; ip
// execs the process, so it keeps its pid and gets signals directly.
func (ns *testNetns) exec() []string { return []string{"ip", "netns", "exec", ns.name} }

// setLink sets the namespace's end of the veth "down" (a partition: every
// packet either way is dropped, silently) or "up".
func (ns *testNetns) setLink(t *testing.T, state string) {
	t.Helper()
	ip(t, "-n", ns.name, "link", "set", ns.inner, state)
}

// ip runs the ip command with args and fails t if it fails.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
)

// leastBusy runs the caller with -routing least-busy: the tests of
// failover and draining send the same prompt over and over and count on
// the pool spreading it over the instances, which prefix routing (the
// default, TestPrefixRouting) would rather keep on one.
var leastBusy = map[string][]string{"caller": {"-routing", "least-busy"}}

// TestFailover runs a mesh with two inference instances: requests are
// spread over both; one is killed under load and the mesh goes on; it
// rejoins when restarted; then the caller is restarted under load and the
// gateway recovers by itself.
func TestFailover(t *testing.T) {
	t.Parallel()
	m := startMesh(t, localmesh.Config{Inference: 2, Parallel: 2, ExtraArgs: leastBusy})

	t.Run("Spread", func(t *testing.T) {
		before1, before2 := okCount(t, m, "inference-1"), okCount(t, m, "inference-2")
		for _, o := range m.load(4, 3, 32, nil) {
			if o.err != nil {
				t.Errorf("request failed: %v", o.err)
			}
		}
		n1, n2 := okCount(t, m, "inference-1")-before1, okCount(t, m, "inference-2")-before2
		if n1 == 0 || n2 == 0 || n1+n2 != 12 {
			t.Errorf("12 requests went %v to inference-1 and %v to inference-2", n1, n2)
		}
	})

	t.Run("KillUnderLoad", func(t *testing.T) {
		if !eventually(10*time.Second, 100*time.Millisecond, func() bool {
			_, h := m.gatewayHealth(t)
			return h.liveInstances() == 2
		}) {
			t.Fatal("the gateway does not see both inference instances")
		}
		stop := make(chan struct{})
		outcomes := make(chan []outcome, 1)
		go func() { outcomes <- m.load(6, 20, 150, stop) }()

		// Kill inference-1 while it is generating.
		if !eventually(10*time.Second, 5*time.Millisecond, func() bool { return m.inferenceHealth(t, "inference-1").Busy > 0 }) {
			close(stop)
			<-outcomes
			t.Fatal("the load never reached inference-1")
		}
		h := m.inferenceHealth(t, "inference-1")
		killedAt := time.Now()
		m.Proc("inference-1").Kill()
		t.Logf("killed inference-1 with %d busy and %d queued", h.Busy, h.Queued)

		// /health stays 200 all along: the other instance serves the model.
		var notOK []string
		for range 20 {
			code, h := m.gatewayHealth(t)
			if code != http.StatusOK {
				notOK = append(notOK, fmt.Sprintf("%d %+v", code, h))
			}
			time.Sleep(100 * time.Millisecond)
		}
		close(stop)
		all := <-outcomes

		if len(notOK) > 0 {
			t.Errorf("/health was not 200 after the kill: %v", notOK)
		}
		if code, h := m.gatewayHealth(t); code != http.StatusOK || h.liveInstances() != 1 {
			t.Errorf("/health after the kill: %d %+v, want 200 with one live instance", code, h)
		}
		cut, after := 0, 0
		for _, o := range all {
			switch {
			case o.hung:
				t.Errorf("a request hung: %v", o.err)
			case o.err != nil && o.text == "":
				t.Errorf("a request that had not started streaming failed (started %s after the kill): %v",
					o.start.Sub(killedAt).Round(time.Millisecond), o.err)
			case o.err != nil:
				// Cut off mid-stream by the crash: the client has the
				// text so far and an error; no retry can hide that.
				cut++
				if o.start.After(killedAt) {
					t.Errorf("a request started after the kill failed mid-stream: %v", o.err)
				}
			case o.start.After(killedAt):
				after++
			}
		}
		t.Logf("%d requests, %d cut off mid-stream by the kill, %d started after it and succeeded", len(all), cut, after)
		if after == 0 {
			t.Error("no request succeeded after the kill")
		}
	})

	t.Run("Rejoin", func(t *testing.T) {
		if err := m.Restart("inference-1"); err != nil {
			t.Fatal(err)
		}
		var h healthReport
		if !eventually(30*time.Second, 100*time.Millisecond, func() bool {
			_, h = m.gatewayHealth(t)
			return h.liveInstances() == 2
		}) {
			t.Fatalf("the restarted inference-1 did not rejoin: /health %+v", h)
		}
		for _, o := range m.load(4, 2, 32, nil) {
			if o.err != nil {
				t.Errorf("request failed: %v", o.err)
			}
		}
		if n := okCount(t, m, "inference-1"); n == 0 {
			t.Error("no request reached the restarted inference-1")
		}
	})

	t.Run("CallerRestart", func(t *testing.T) { testCallerRestart(t, m, false) })
	t.Run("CallerCrash", func(t *testing.T) { testCallerRestart(t, m, true) })
}

// testCallerRestart restarts the caller under load — gracefully, or after
// a crash (SIGKILL) — and checks that the gateway, not restarted, serves
// requests again within a bound, and that no request hangs meanwhile.
func testCallerRestart(t *testing.T, m *mesh, crash bool) {
	gateway := m.Proc("gateway").Pid()
	stop := make(chan struct{})
	outcomes := make(chan []outcome, 1)
	go func() { outcomes <- m.load(3, 100, 32, stop) }()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
			<-outcomes
		}
	}()
	time.Sleep(300 * time.Millisecond)

	restartAt := time.Now()
	if crash {
		m.Proc("caller").Kill()
		// While the caller is down the gateway says so, and requests fail
		// at once rather than wait.
		var h healthReport
		var code int
		if !eventually(10*time.Second, 100*time.Millisecond, func() bool {
			code, h = m.gatewayHealth(t)
			return code == http.StatusServiceUnavailable
		}) || h.Failing != "caller" {
			t.Errorf("/health with the caller down: %d %+v, want 503 naming the caller", code, h)
		}
		if o := m.call(8); o.err == nil || o.hung || time.Since(o.start) > 10*time.Second {
			t.Errorf("a request with the caller down: error %v after %s, want a quick 503", o.err, time.Since(o.start).Round(time.Millisecond))
		}
	}
	if err := m.Restart("caller"); err != nil {
		t.Fatal(err)
	}
	t.Logf("caller restarted %s after the test began stopping it", time.Since(restartAt).Round(time.Millisecond))

	// The gateway reconnects by itself: within a bound, requests succeed
	// again, several in a row.
	var recoveredAt time.Time
	streak := 0
	deadline := time.Now().Add(30 * time.Second)
	for streak < 5 && time.Now().Before(deadline) {
		if o := m.call(32); o.err == nil {
			if streak == 0 {
				recoveredAt = time.Now()
			}
			streak++
		} else {
			streak = 0
			time.Sleep(100 * time.Millisecond)
		}
	}
	close(stop)
	all := <-outcomes
	if streak < 5 {
		t.Fatalf("the gateway did not recover within 30s of the caller's restart")
	}
	t.Logf("requests succeed again %s after the caller was stopped", recoveredAt.Sub(restartAt).Round(time.Millisecond))
	failed := 0
	for _, o := range all {
		switch {
		case o.hung:
			t.Errorf("a request hung: %v", o.err)
		case o.err != nil && o.start.After(recoveredAt):
			t.Errorf("a request failed after the gateway had recovered: %v", o.err)
		case o.err != nil && o.text != "" && !crash:
			// A graceful stop lets the calls in flight finish.
			t.Errorf("a stream was cut off by the caller's graceful restart: %v", o.err)
		case o.err != nil:
			failed++
			if failed <= 3 {
				t.Logf("failed %s after the caller was stopped, after %d characters: %v", o.start.Sub(restartAt).Round(time.Millisecond), len(o.text), o.err)
			}
		}
	}
	t.Logf("%d requests under load, %d failed while the caller was away", len(all), failed)
	if p := m.Proc("gateway"); p.Pid() != gateway || p.ExitStatus() != "running" {
		t.Errorf("the gateway was restarted or stopped: %s", p.ExitStatus())
	}
}

// okCount is the number of generations inference instance name has
// completed.
func okCount(t *testing.T, m *mesh, name string) float64 {
	t.Helper()
	return scrape(t, m.Addr(name)).sum("slm_inference_requests_total", `code="ok"`)
}

// outcome is how one streamed request of a load ended.
type outcome struct {
	start time.Time
	text  string // received before the end or the error
	err   error
	hung  bool // ran into its deadline
}

// requestTimeout bounds every request of a load: a request that runs into
// it has hung (they take well under a second).
const requestTimeout = 30 * time.Second

// call sends one streamed greedy request for maxTokens tokens and says how
// it ended.
func (m *mesh) call(maxTokens int64) outcome { return m.timedCall(maxTokens, nil).outcome }

// load has workers send streamed requests one after another, each at most
// perWorker, until stop is closed (nil: until each has sent perWorker), and
// returns how every request ended.
func (m *mesh) load(workers, perWorker int, maxTokens int64, stop <-chan struct{}) []outcome {
	return runWorkers(workers, perWorker, stop, func() outcome { return m.call(maxTokens) })
}

// runWorkers has workers run call one after another, each at most
// perWorker times, until stop is closed (nil: until each has run perWorker
// times), and returns every result.
func runWorkers[T any](workers, perWorker int, stop <-chan struct{}, call func() T) []T {
	var (
		mu  sync.Mutex
		all []T
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				select {
				case <-stop:
					return
				default:
				}
				r := call()
				mu.Lock()
				all = append(all, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return all
}

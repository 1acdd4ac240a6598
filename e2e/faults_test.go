package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// The fault tests: an inference instance killed in the middle of streams,
// the Consul agent stopped and restarted under a serving mesh, SIGTERM to
// each service under load, and (netns_test.go) a network partition between
// the caller and an inference instance. TestFailover covers the kill under
// random load, the rejoin and the caller's restart and crash; these tests
// pin down what each client sees, and how long each step takes.

// keepalive is how long an RPC connection on which nothing arrives lives
// on: the services run with the rpc package's defaults, a ping every 5s
// and 5s more for any frame. A peer that vanishes without closing its TCP
// connection (a partition, a host gone) is noticed this long after the
// last frame it sent.
const keepalive = rpc.DefaultPingInterval + rpc.DefaultPongTimeout

// connectWait is how long a pool call waits for a connection when no
// instance is connected, before it fails with unavailable
// (rpc.PoolConfig.ConnectWait's default).
const connectWait = time.Second

// TestKillMidStream kills one of two inference instances while each
// generates two long streams and has one short request queued: the two
// streams it was generating end at once with an error event (the client
// has text, so nothing can be retried), the request queued there fails
// over to the other instance and succeeds, the other instance's streams
// finish, /health names the killed instance as down, and the instance
// rejoins once restarted.
func TestKillMidStream(t *testing.T) {
	t.Parallel()
	// No bound on the expected queue wait: an instance whose decode step
	// was timed slow at start (a loaded machine) would refuse the short
	// request queued behind two 1500-token streams, and the caller would
	// send it to the other instance, which is admission doing its work,
	// not what this test is about.
	m := startMesh(t, localmesh.Config{Inference: 2, Parallel: 2, Ctx: 2048, ExtraArgs: map[string][]string{
		"caller":    leastBusy["caller"],
		"inference": {"-max-queue-wait=-1s"},
	}})
	waitLive(t, m, 2)

	// Long enough to be generating when the kill comes, whatever the load
	// of the machine; short requests are what queues behind them.
	const longTokens, shortTokens = 1500, 16
	results := make([]timed, 6)
	var wg sync.WaitGroup
	defer wg.Wait() // every request is bounded by requestTimeout
	texts := make(chan struct{}, 4)
	for i := range 4 {
		wg.Go(func() {
			var once sync.Once
			results[i] = m.timedCall(longTokens, func() { once.Do(func() { texts <- struct{}{} }) })
		})
	}
	awaitSignals(t, texts, 4, 30*time.Second, "the four long streams did not all start")
	// The caller's pool sends each call to the instance with the fewest
	// in flight: two long streams went to each; now one short request
	// queues on each.
	for i := 4; i < 6; i++ {
		wg.Go(func() { results[i] = m.timedCall(shortTokens, nil) })
	}
	var h1, h2 inferenceHealth
	if !eventually(10*time.Second, 10*time.Millisecond, func() bool {
		h1, h2 = m.inferenceHealth(t, "inference-1"), m.inferenceHealth(t, "inference-2")
		return h1.Busy == 2 && h1.Queued == 1 && h2.Busy == 2 && h2.Queued == 1
	}) {
		t.Fatalf("want two streams generating and one request queued on each instance; inference-1 %+v, inference-2 %+v", h1, h2)
	}

	killedAt := time.Now()
	m.Proc("inference-1").Kill()
	t.Logf("killed inference-1 with 2 streams generating and 1 request queued on it")

	// /health names the killed instance; the other one keeps it 200.
	var (
		code int
		h    healthReport
	)
	if !eventually(10*time.Second, 50*time.Millisecond, func() bool {
		code, h = m.gatewayHealth(t)
		return code == http.StatusOK && h.liveInstances() == 1 && instanceDown(h, m.Addr("inference-1"))
	}) {
		t.Errorf("/health after the kill: %d %+v; want 200, one live instance, and %s reported down", code, h, m.Addr("inference-1"))
	} else {
		t.Logf("/health reported inference-1 down %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	}

	wg.Wait()
	cut, finished := 0, 0
	var lastCut time.Duration
	for i, r := range results {
		long := i < 4
		switch {
		case r.hung:
			t.Errorf("request %d hung: %v", i, r.err)
		case long && r.err != nil:
			cut++
			lastCut = max(lastCut, r.end.Sub(killedAt))
			if !unavailable(r.err) {
				t.Errorf("stream %d was cut by the kill with %v (%T), want an error event with a 503 code", i, r.err, r.err)
			}
			if r.text == "" {
				t.Errorf("stream %d was cut without text, yet it had text before the kill", i)
			}
		case long && (r.finish != "length" || r.usage == nil || r.usage.CompletionTokens != longTokens):
			t.Errorf("stream %d ended with finish_reason %q, usage %+v; want all %d tokens", i, r.finish, r.usage, longTokens)
		case long:
			finished++
			t.Logf("stream %d on the surviving instance: %d tokens in %s", i, longTokens, r.end.Sub(r.start).Round(time.Millisecond))
		case r.err != nil:
			t.Errorf("queued request %d failed; it had no text, so it should have failed over: %v", i, r.err)
		}
	}
	t.Logf("%d streams cut by the kill (the last error event %s after it), %d finished, both queued requests answered",
		cut, lastCut.Round(time.Millisecond), finished)
	if cut != 2 || finished != 2 {
		t.Errorf("%d streams were cut and %d finished; want the 2 on the killed instance cut and the 2 on the other finished", cut, finished)
	}
	// A killed process's sockets are closed by the kernel: the caller sees
	// the connection end at once, long before any keepalive.
	if lastCut > 5*time.Second {
		t.Errorf("the last cut stream ended %s after the kill, want within 5s", lastCut)
	}

	restartAt := time.Now()
	if err := m.Restart("inference-1"); err != nil {
		t.Fatal(err)
	}
	waitLive(t, m, 2)
	t.Logf("inference-1 rejoined %s after it was started again", time.Since(restartAt).Round(time.Millisecond))
}

// TestConsulOutage stops the Consul agent under a serving mesh that
// discovers through it: requests go on succeeding with the last known
// instances. The agent comes back empty (a -dev agent keeps nothing), the
// services register again by themselves, and the mesh recovers within a
// bound. Then an instance killed and started again is found again.
func TestConsulOutage(t *testing.T) {
	t.Parallel()
	m := startMesh(t, localmesh.Config{ConsulBin: consulBinary(t), Inference: 2, Parallel: 2})
	waitLive(t, m, 2)
	agent := m.Consul()

	t.Run("ServesWhileDown", func(t *testing.T) {
		agent.Stop()
		stop := make(chan struct{})
		timer := time.AfterFunc(4*time.Second, func() { close(stop) })
		defer timer.Stop()
		start := time.Now()
		all := m.load(2, 1000, 32, stop)
		failed := 0
		for _, o := range all {
			if o.err != nil {
				failed++
				if failed <= 3 {
					t.Errorf("a request failed with Consul down: %v", o.err)
				}
			}
		}
		if len(all) < 4 {
			t.Errorf("only %d requests in 4s", len(all))
		}
		t.Logf("%d requests in %s with Consul down, %d failed", len(all), time.Since(start).Round(time.Millisecond), failed)
		if code, h := m.gatewayHealth(t); code != http.StatusOK || h.liveInstances() != 2 {
			t.Errorf("/health with Consul down: %d %+v, want 200 with both instances", code, h)
		}
	})

	t.Run("RecoversAfterRestart", func(t *testing.T) {
		restartAt := time.Now()
		if err := agent.Restart(); err != nil {
			t.Fatal(err)
		}
		t.Logf("Consul answers again %s after the restart began", time.Since(restartAt).Round(time.Millisecond))
		stop := make(chan struct{})
		outcomes := make(chan []timed, 1)
		go func() { outcomes <- m.timedLoad(2, 1000, 32, stop, nil) }()
		stopLoad := sync.OnceFunc(func() { close(stop) })
		defer func() { stopLoad(); <-outcomes }()

		// Every service registers again by itself (ReregisterInterval 5s,
		// then a check interval of 2s), the watches see them (their retry
		// backoff is at most 10s), the pools reconnect.
		client, err := agent.Client()
		if err != nil {
			t.Fatal(err)
		}
		passing := func(service string) int {
			entries, _, err := client.Health().Service(service, "", true, nil)
			if err != nil {
				return -1
			}
			return len(entries)
		}
		if !eventually(30*time.Second, 100*time.Millisecond, func() bool {
			return passing(discovery.ServiceCaller) == 1 && passing(discovery.ServiceInference) == 2
		}) {
			t.Fatalf("30s after Consul's restart it has %d passing callers and %d passing inference instances, want 1 and 2",
				passing(discovery.ServiceCaller), passing(discovery.ServiceInference))
		}
		t.Logf("every service registered again and passing %s after the restart", time.Since(restartAt).Round(time.Millisecond))
		recoveredAt, ok := recovery(t, m, 30*time.Second)
		if !ok {
			t.Fatal("the mesh did not serve 5 requests in a row within 30s of Consul's restart")
		}
		if !eventually(10*time.Second, 100*time.Millisecond, func() bool { _, h := m.gatewayHealth(t); return h.liveInstances() == 2 }) {
			t.Error("the gateway does not see both inference instances again")
		}
		stopLoad()
		all := <-outcomes
		outcomes <- nil // for the deferred receive
		failed, firstFail, lastFail := 0, time.Time{}, time.Time{}
		for _, o := range all {
			switch {
			case o.hung:
				t.Errorf("a request hung: %v", o.err)
			case o.err == nil:
			case o.start.After(recoveredAt):
				t.Errorf("a request failed after the recovery: %v", o.err)
			case !unavailable(o.err):
				t.Errorf("a request failed during the recovery with %v, want a 503", o.err)
			default:
				failed++
				if firstFail.IsZero() || o.start.Before(firstFail) {
					firstFail = o.start
				}
				if o.end.After(lastFail) {
					lastFail = o.end
				}
			}
		}
		t.Logf("%d of %d requests got a 503, from %s to %s after the restart; all clear (every service passing, 5 requests in a row) %s after it",
			failed, len(all), sinceOrZero(firstFail, restartAt), sinceOrZero(lastFail, restartAt),
			recoveredAt.Sub(restartAt).Round(time.Millisecond))
	})

	t.Run("RestartedInstanceFound", func(t *testing.T) {
		m.Proc("inference-2").Kill()
		if !eventually(15*time.Second, 100*time.Millisecond, func() bool { _, h := m.gatewayHealth(t); return h.liveInstances() == 1 }) {
			t.Fatal("the killed inference-2 is still live in /health after 15s")
		}
		restartAt := time.Now()
		if err := m.Restart("inference-2"); err != nil {
			t.Fatal(err)
		}
		waitLive(t, m, 2)
		t.Logf("inference-2 found again %s after it was started again", time.Since(restartAt).Round(time.Millisecond))
		for _, o := range m.load(4, 2, 32, nil) {
			if o.err != nil {
				t.Errorf("request failed: %v", o.err)
			}
		}
		if n := okCount(t, m, "inference-2"); n == 0 {
			t.Error("no request reached the restarted inference-2")
		}
	})
}

// TestSIGTERMUnderLoad sends SIGTERM to each service in turn while clients
// stream: the streams in flight at the signal finish, the process exits 0,
// and the requests that come later go to the other inference instance
// (inference), get a quick 503 (caller: the only one), or are refused at
// the TCP level (gateway: the load balancer's business). Each service is
// started again before the next.
func TestSIGTERMUnderLoad(t *testing.T) {
	t.Parallel()
	m := startMesh(t, localmesh.Config{Inference: 2, Parallel: 2, Ctx: 1024, ExtraArgs: leastBusy})
	for _, name := range []string{"inference-1", "caller", "gateway"} {
		t.Run(name, func(t *testing.T) { testSIGTERMUnderLoad(t, m, name) })
	}
}

func testSIGTERMUnderLoad(t *testing.T, m *mesh, name string) {
	waitLive(t, m, 2)
	p := m.Proc(name)
	stop := make(chan struct{})
	firsts := make(chan struct{}, 64)
	outcomes := make(chan []timed, 1)
	go func() { outcomes <- m.timedLoad(4, 100, 600, stop, firsts) }()
	stopLoad := sync.OnceFunc(func() { close(stop) })
	defer func() { stopLoad(); <-outcomes }() // each request is bounded

	// Signal while streams are running (four have had text), and, for
	// the inference instance, while it is generating.
	awaitSignals(t, firsts, 4, 30*time.Second, "four streams did not start")
	if name == "inference-1" && !eventually(10*time.Second, 5*time.Millisecond, func() bool { return m.inferenceHealth(t, name).Busy > 0 }) {
		t.Fatal("the load never reached inference-1")
	}
	sigAt := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit within 30s of SIGTERM", name)
	}
	drained := time.Since(sigAt)
	if code := p.ExitCode(); code != 0 {
		t.Errorf("%s exited with %s after SIGTERM, want status 0", name, p.ExitStatus())
	}
	// A moment of load with the service gone.
	time.Sleep(500 * time.Millisecond)
	stopLoad()
	all := <-outcomes
	outcomes <- nil

	inFlight, ok, okAfter, refused := 0, 0, 0, 0
	for _, o := range all {
		streaming := !o.first.IsZero() && o.first.Before(sigAt) && o.end.After(sigAt)
		if streaming {
			inFlight++
		}
		switch {
		case o.hung:
			t.Errorf("a request hung: %v", o.err)
		case o.err == nil:
			ok++
			if o.start.After(sigAt) {
				okAfter++
			}
		case streaming:
			t.Errorf("a stream in flight at SIGTERM failed after %d characters: %v", len(o.text), o.err)
		case name == "inference-1":
			// The caller retries a call its instance refused while
			// draining, or that a closed connection failed before any
			// text, on the other instance.
			t.Errorf("a request failed, started %s after SIGTERM: %v", o.start.Sub(sigAt).Round(time.Millisecond), o.err)
		case name == "caller" && !unavailable(o.err):
			t.Errorf("a request with the caller draining or gone failed with %v, want a 503", o.err)
		case o.end.Sub(o.start) > connectWait+4*time.Second:
			t.Errorf("a refused request took %s: %v", o.end.Sub(o.start).Round(time.Millisecond), o.err)
		default:
			refused++
		}
	}
	t.Logf("%s exited %s after SIGTERM; %d requests: %d streams in flight at the signal, %d succeeded (%d sent after it), %d refused",
		name, drained.Round(time.Millisecond), len(all), inFlight, ok, okAfter, refused)
	if inFlight == 0 {
		t.Error("no stream was in flight at SIGTERM, so the drain was not tested")
	}
	if name == "inference-1" && okAfter == 0 {
		t.Error("no request sent after SIGTERM succeeded, want them served by the other instance")
	}

	if err := m.Restart(name); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// timed is how one streamed request ended, and when its first text and
// its end arrived.
type timed struct {
	outcome
	first  time.Time // zero if no text arrived
	end    time.Time
	finish string
	usage  *sdk.CompletionUsage
}

// timedCall sends one streamed greedy request for maxTokens tokens, with
// include_usage, and says how it ended, when its first text and its end
// arrived; onFirst (if not nil) runs at the first text. call is its outcome.
func (m *mesh) timedCall(maxTokens int64, onFirst func()) timed {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	o := timed{outcome: outcome{start: time.Now()}}
	p := m.greedy(story, maxTokens)
	p.StreamOptions = sdk.ChatCompletionStreamOptionsParam{IncludeUsage: sdk.Bool(true)}
	c := m.client()
	s := readStream(c.Chat.Completions.NewStreaming(ctx, p), func(string) bool {
		if o.first.IsZero() {
			o.first = time.Now()
			if onFirst != nil {
				onFirst()
			}
		}
		return true
	})
	o.end = time.Now()
	o.text, o.err, o.finish, o.usage = s.text, s.err, s.finish, s.usage
	if o.err == nil && s.finish == "" {
		o.err = errors.New("the stream ended without a finish_reason")
	}
	o.hung = errors.Is(ctx.Err(), context.DeadlineExceeded)
	return o
}

// timedLoad is load with timedCall: workers send streamed requests one
// after another, each at most perWorker, until stop is closed. Each first
// text is signalled on firsts, when there is room.
func (m *mesh) timedLoad(workers, perWorker int, maxTokens int64, stop <-chan struct{}, firsts chan<- struct{}) []timed {
	return runWorkers(workers, perWorker, stop, func() timed {
		return m.timedCall(maxTokens, func() {
			select {
			case firsts <- struct{}{}:
			default:
			}
		})
	})
}

// awaitSignals waits for n signals on ch, failing the test with what if
// they do not all arrive within d.
func awaitSignals(t *testing.T, ch <-chan struct{}, n int, d time.Duration, what string) {
	t.Helper()
	timeout := time.After(d)
	for range n {
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("%s within %s", what, d)
		}
	}
}

// unavailable reports whether err is the gateway saying "unavailable,
// retry": a 503, or, once a stream has begun, an error event of type
// server_error with a 503 code.
func unavailable(err error) bool {
	var se *sdk.Error
	if errors.As(err, &se) {
		return se.StatusCode == http.StatusServiceUnavailable
	}
	var ev *ssestream.StreamError
	if errors.As(err, &ev) {
		var e apiError
		if json.Unmarshal(ev.Event.Data, &e) != nil {
			return false
		}
		code := str(e.Error.Code)
		return e.Error.Type == "server_error" && (code == "service_unavailable" || code == "request_canceled")
	}
	return false
}

// instanceDown reports whether /health lists the inference instance at
// addr with an error.
func instanceDown(h healthReport, addr string) bool {
	for _, in := range h.Inference {
		if in.Addr == addr {
			return in.Error != ""
		}
	}
	return false
}

// waitLive waits up to 30s for the gateway's /health to be 200 with n live
// inference instances, and fails t if it is not.
func waitLive(t *testing.T, m *mesh, n int) {
	t.Helper()
	var (
		code int
		h    healthReport
	)
	if !eventually(30*time.Second, 50*time.Millisecond, func() bool {
		code, h = m.gatewayHealth(t)
		return code == http.StatusOK && h.liveInstances() == n
	}) {
		t.Fatalf("/health: %d %+v, want 200 with %d live inference instances", code, h, n)
	}
}

// recovery sends short requests until 5 in a row succeed, for at most
// bound, and returns when the first of them had succeeded.
func recovery(t *testing.T, m *mesh, bound time.Duration) (time.Time, bool) {
	t.Helper()
	var at time.Time
	streak := 0
	deadline := time.Now().Add(bound)
	for streak < 5 && time.Now().Before(deadline) {
		if o := m.call(8); o.err == nil {
			if streak == 0 {
				at = time.Now()
			}
			streak++
		} else {
			streak = 0
			time.Sleep(100 * time.Millisecond)
		}
	}
	return at, streak == 5
}

// probe is one non-streamed request sent while a fault lasts.
type probe struct {
	start      time.Time
	took       time.Duration
	status     int
	retryAfter string
	errType    string
	err        error
}

// sendProbe sends a short non-streamed chat request and says how it ended.
func (m *mesh) sendProbe() probe {
	p := probe{start: time.Now()}
	resp, body, err := m.send(http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":8}`, nil)
	p.took = time.Since(p.start)
	if err != nil {
		p.err = err
		return p
	}
	p.status, p.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	if resp.StatusCode != http.StatusOK {
		var e apiError
		_ = json.Unmarshal(body, &e)
		p.errType = e.Error.Type
	}
	return p
}

// not503 says what is wrong with p as a 503 with Retry-After, or "".
func (p probe) not503() string {
	switch {
	case p.err != nil:
		return p.err.Error()
	case p.status != http.StatusServiceUnavailable || p.errType != "server_error":
		return fmt.Sprintf("status %d, error type %q", p.status, p.errType)
	}
	if n, err := strconv.Atoi(p.retryAfter); err != nil || n < 1 {
		return fmt.Sprintf("Retry-After %q", p.retryAfter)
	}
	return ""
}

func sinceOrZero(t, since time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return t.Sub(since).Round(time.Millisecond)
}

// Package consultest runs a real Consul agent (in -dev mode, on loopback
// ports of its own) for tests of code that talks to Consul.
//
// The agent binary is found through SLM_CONSUL_BIN, then .cache/bin/consul at
// the repository root (where tools/consul/build.sh puts it), then PATH. When
// none is found the test is skipped, except under CI (env CI set), where a
// missing agent is a failure: CI must build it.
package consultest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// EnvBinary names the environment variable that points at a consul binary.
const EnvBinary = "SLM_CONSUL_BIN"

const (
	// rootModule identifies the repository root while walking up from the
	// test's working directory.
	rootModule = "github.com/slm-mesh/slm-mesh"
	// leaderTimeout bounds the wait for a fresh agent to elect itself; a dev
	// agent takes about a second, more under -race on a busy machine.
	leaderTimeout = 30 * time.Second
	// stopTimeout is how long the agent may take to leave after SIGINT
	// before it is killed.
	stopTimeout = 10 * time.Second
	// startAttempts: a free port found now may be taken by another process
	// before the agent binds it; then the agent is started again on others.
	startAttempts = 3
	// logTailLines of the agent's log are shown when a test fails.
	logTailLines = 60
)

// Agent is a running Consul dev agent owned by one test.
type Agent struct {
	t       testing.TB
	bin     string
	dir     string
	logPath string
	ports   ports
	client  *api.Client

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	logf *os.File
}

// ports are the agent's listeners; -1 disables one.
type ports struct {
	http, server, serfLAN, serfWAN, dns, grpc, grpcTLS int
}

// Start starts a Consul dev agent for t, waits until it has a leader and
// stops it in t.Cleanup. It skips t when no consul binary is found (fails it
// under CI).
func Start(t testing.TB) *Agent {
	t.Helper()
	bin := findBinary(t)

	a := &Agent{t: t, bin: bin, dir: t.TempDir()}
	a.logPath = filepath.Join(a.dir, "consul.log")
	// Registered after t.TempDir, so it runs before the directory goes.
	t.Cleanup(func() {
		// The tail first: after Stop it would show only the agent leaving.
		if t.Failed() {
			a.logTail()
		}
		a.Stop()
	})

	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if a.ports, err = freePorts(); err != nil {
			t.Fatalf("consultest: %v", err)
		}
		if err = a.start(); err == nil {
			break
		}
		t.Logf("consultest: start attempt %d: %v", attempt, err)
		a.Stop()
	}
	if err != nil {
		a.logTail()
		t.Fatalf("consultest: consul agent did not start: %v", err)
	}

	if a.client, err = newClient(a.HTTPAddr()); err != nil {
		t.Fatalf("consultest: client: %v", err)
	}
	return a
}

// HTTPAddr is host:port of the agent's HTTP API.
func (a *Agent) HTTPAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.ports.http))
}

// Client is an API client for the agent. It stays valid across Restart.
func (a *Agent) Client() *api.Client { return a.client }

// Stop stops the agent: SIGINT, so it leaves cleanly, then SIGKILL if it
// has not exited within a bound. Stopping a stopped agent does nothing.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return
	}
	// An agent stopped by SIGINT exits with status 1; that is normal.
	_ = a.cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.done:
	case <-time.After(stopTimeout):
		a.t.Logf("consultest: agent did not stop within %v, killing it", stopTimeout)
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	a.cmd = nil
	_ = a.logf.Close()
}

// Restart stops the agent and starts it again on the same ports, so clients
// (Client, or any other pointed at HTTPAddr) reconnect by themselves. A dev
// agent keeps its state in memory: registrations are gone after Restart.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	if err := a.start(); err != nil {
		a.logTail()
		a.t.Fatalf("consultest: restart: %v", err)
	}
}

// start runs the agent on a.ports and waits for a leader.
func (a *Agent) start() error {
	a.mu.Lock()
	defer a.mu.Unlock()

	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p := a.ports
	cmd := exec.Command(a.bin, "agent", "-dev",
		"-client", "127.0.0.1",
		"-bind", "127.0.0.1",
		"-node", "consultest",
		"-http-port", strconv.Itoa(p.http),
		"-server-port", strconv.Itoa(p.server),
		"-serf-lan-port", strconv.Itoa(p.serfLAN),
		"-serf-wan-port", strconv.Itoa(p.serfWAN),
		"-dns-port", strconv.Itoa(p.dns),
		"-grpc-port", strconv.Itoa(p.grpc),
		"-grpc-tls-port", strconv.Itoa(p.grpcTLS),
	)
	cmd.Dir = a.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	// The agent reads CONSUL_* variables too; a developer's must not leak in.
	cmd.Env = cleanEnv(os.Environ())
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("run %s: %w", a.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	a.cmd, a.done, a.logf = cmd, done, logf

	return a.waitLeader(done)
}

// waitLeader polls the agent until it reports a leader, it exits, or
// leaderTimeout passes.
func (a *Agent) waitLeader(exited <-chan struct{}) error {
	client, err := newClient(a.HTTPAddr())
	if err != nil {
		return err
	}
	deadline := time.Now().Add(leaderTimeout)
	for {
		leader, err := client.Status().Leader()
		if err == nil && leader != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no leader after %v (last error: %v)", leaderTimeout, err)
		}
		select {
		case <-exited:
			return errors.New("agent exited before electing a leader")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// newClient returns a plain-HTTP client for the agent at addr. Its HTTP
// client and token are set here so that a developer's CONSUL_HTTP_TOKEN,
// CONSUL_HTTP_SSL or CONSUL_CACERT does not apply to the test agent.
func newClient(addr string) (*api.Client, error) {
	return api.NewClient(&api.Config{
		Address:    addr,
		Scheme:     "http",
		HttpClient: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
	})
}

// logTail shows the end of the agent's log in the test's log.
func (a *Agent) logTail() {
	data, err := os.ReadFile(a.logPath)
	if err != nil {
		a.t.Logf("consultest: no agent log: %v", err)
		return
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	a.t.Logf("consultest: last %d lines of the consul agent log:\n%s", len(lines), strings.Join(lines, "\n"))
}

// findBinary locates the consul binary or ends the test.
func findBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv(EnvBinary); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("consultest: %s=%s: %v", EnvBinary, bin, err)
		}
		return bin
	}
	if root, ok := repoRoot(); ok {
		bin := filepath.Join(root, ".cache", "bin", "consul")
		if st, err := os.Stat(bin); err == nil && !st.IsDir() {
			return bin
		}
	}
	if bin, err := exec.LookPath("consul"); err == nil {
		return bin
	}
	const msg = "consultest: no consul binary: build it with tools/consul/build.sh, " +
		"or set " + EnvBinary + ", or put consul on PATH"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so this is a failure)")
	}
	t.Skip(msg)
	return ""
}

// repoRoot walks up from the working directory (a package directory under
// go test) to the directory whose go.mod declares rootModule.
func repoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && moduleLine(data) == rootModule {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// moduleLine returns the module path declared in a go.mod.
func moduleLine(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// freePorts picks loopback ports for the listeners the agent needs and
// disables the rest. Serf listens on TCP and UDP on one port, so its ports
// must be free for both.
func freePorts() (ports, error) {
	var held []func()
	defer func() {
		for _, release := range held {
			release()
		}
	}()
	// Ports stay held until all are chosen, so no two are the same.
	pick := func(udpToo bool) (int, error) {
		for range 20 {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return 0, err
			}
			port := l.Addr().(*net.TCPAddr).Port
			if !udpToo {
				held = append(held, func() { l.Close() })
				return port, nil
			}
			u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				l.Close()
				continue
			}
			held = append(held, func() { l.Close(); u.Close() })
			return port, nil
		}
		return 0, errors.New("no free TCP+UDP port on 127.0.0.1")
	}

	var p ports
	var err error
	if p.http, err = pick(false); err != nil {
		return p, err
	}
	if p.server, err = pick(false); err != nil {
		return p, err
	}
	if p.serfLAN, err = pick(true); err != nil {
		return p, err
	}
	if p.serfWAN, err = pick(true); err != nil {
		return p, err
	}
	// Tests use neither DNS nor gRPC (xDS, peering); fewer listeners, fewer
	// chances to collide with another process.
	p.dns, p.grpc, p.grpcTLS = -1, -1, -1
	return p, nil
}

// cleanEnv drops CONSUL_* variables from env.
func cleanEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CONSUL_") {
			out = append(out, kv)
		}
	}
	return out
}

// Package consulagent runs a real Consul agent in -dev mode on loopback
// ports of its own: for tests (through internal/consultest) and for running
// the mesh on one machine (tools/local). The binary is the open-source agent
// that tools/consul builds.
//
// It is not github.com/hashicorp/consul/sdk/testutil: that runs the consul
// found on PATH only (not the one tools/consul builds), needs a testing.TB
// (the run command has none), cannot restart an agent on the same ports,
// and passes a developer's CONSUL_* variables on to the agent.
package consulagent

import (
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
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// EnvBinary names the environment variable that points at a consul binary.
const EnvBinary = "SLM_CONSUL_BIN"

const (
	// leaderTimeout bounds the wait for a fresh agent to elect itself; a dev
	// agent takes about a second, more on a busy machine.
	leaderTimeout = 30 * time.Second
	// stopTimeout is how long the agent may take to leave after SIGINT
	// before it is killed.
	stopTimeout = 10 * time.Second
	// startAttempts: a free port found now may be taken by another process
	// before the agent binds it; then the agent is started again on others.
	startAttempts = 3
)

// FindBinary locates the consul binary: $SLM_CONSUL_BIN, then
// .cache/bin/consul under root (where tools/consul/build.sh puts it), then
// PATH.
func FindBinary(root string) (string, error) {
	if bin := os.Getenv(EnvBinary); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinary, bin, err)
		}
		return bin, nil
	}
	if root != "" {
		bin := filepath.Join(root, ".cache", "bin", "consul")
		if st, err := os.Stat(bin); err == nil && !st.IsDir() {
			return bin, nil
		}
	}
	if bin, err := exec.LookPath("consul"); err == nil {
		return bin, nil
	}
	return "", errors.New("no consul binary: build it with tools/consul/build.sh, or set " + EnvBinary + ", or put consul on PATH")
}

// Agent is a running Consul dev agent.
type Agent struct {
	bin     string
	dir     string
	logPath string
	ports   ports

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	logf *os.File
}

// ports are the agent's listeners; -1 disables one.
type ports struct {
	http, server, serfLAN, serfWAN, dns, grpc, grpcTLS int
}

// Start runs bin as a dev agent whose working directory and log file
// (consul.log) are in dir, on free loopback ports, and waits for a leader.
func Start(bin, dir string) (*Agent, error) {
	a := &Agent{bin: bin, dir: dir, logPath: filepath.Join(dir, "consul.log")}
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if a.ports, err = freePorts(); err != nil {
			return nil, err
		}
		if err = a.start(); err == nil {
			return a, nil
		}
		a.Stop()
	}
	return nil, fmt.Errorf("consul agent did not start (log: %s): %w", a.logPath, err)
}

// HTTPAddr is host:port of the agent's HTTP API.
func (a *Agent) HTTPAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.ports.http))
}

// LogPath is the agent's log file.
func (a *Agent) LogPath() string { return a.logPath }

// Client returns a plain-HTTP client for the agent.
func (a *Agent) Client() (*api.Client, error) { return newClient(a.HTTPAddr()) }

// Stop stops the agent (SIGINT, then SIGKILL after a bound). It is safe to
// call more than once.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.done:
	case <-time.After(stopTimeout):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	_ = a.logf.Close()
	a.cmd = nil
}

// Restart stops the agent and starts it again on the same ports. A dev
// agent keeps its state in memory: registrations are gone after Restart.
func (a *Agent) Restart() error {
	a.Stop()
	return a.start()
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
		"-node", "slm-mesh-dev",
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
	// If the process that started the agent dies without stopping it, the
	// agent goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
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
	// The mesh uses neither DNS nor gRPC (xDS, peering); fewer listeners, fewer
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

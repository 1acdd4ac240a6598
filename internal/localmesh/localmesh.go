// Package localmesh runs the whole mesh on one machine as separate
// processes on loopback: one or more inference instances, a caller and a
// gateway, and optionally a Consul dev agent for discovery. tools/local (the
// run command) and the end-to-end tests start the mesh the same way, through
// this package.
package localmesh

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/consulagent"
	"github.com/slm-mesh/slm-mesh/internal/model"
)

// Config describes a local mesh. Zero values take the defaults given.
type Config struct {
	// BinDir holds the inference, caller and gateway binaries (see Build).
	BinDir string
	// Model is a GGUF path or an https URL; empty: the default model.
	Model string
	// ModelSHA256 pins a model URL.
	ModelSHA256 string
	// Models, when set, serves several models behind the one caller: one
	// inference instance per model, instance i serving Models[i] (paths or
	// URLs; Model and Inference are then ignored). The mesh is ready once
	// the gateway lists every one of them.
	Models []string
	// GatewayAddr is the public API's address; default 127.0.0.1:3111.
	GatewayAddr string
	// CallerPort and InferencePort are the first loopback ports of the
	// private tiers; inference instance i listens on InferencePort+i.
	// Default 7002 and 7003. Zero-config tests set them to free ports.
	CallerPort, InferencePort int
	// Inference is the number of inference instances; default 1.
	Inference int
	// Threads, Parallel and Ctx go to each inference instance (0: its own
	// defaults).
	Threads, Parallel, Ctx int
	// Queue bounds each inference instance's waiting requests (0: default).
	Queue int
	// APIKeys, comma-separated, are required by the gateway when set.
	APIKeys string
	// RPCToken is the shared token between the services; empty: none.
	RPCToken string
	// Env is added to every service process's environment (for example
	// CONSUL_HTTP_TOKEN). The secrets above travel in the environment too,
	// never on the command line, which any user of the machine can read.
	Env []string
	// ConsulBin, when set, runs a Consul dev agent and has the services
	// register in it and discover each other through it. Empty: static
	// discovery (the services are given each other's addresses).
	ConsulBin string
	// Dir holds the Consul agent's state and the services' log files
	// (<name>.log); default: a new temporary directory.
	Dir string
	// Output receives every service's log lines, prefixed with its name;
	// nil: only the log files.
	Output io.Writer
	// ExtraArgs are added to a service's command line, by service name
	// ("gateway", "caller", "inference").
	ExtraArgs map[string][]string
	// InferenceHosts, when set, are the IP addresses inference instance i
	// listens on and is reached at (InferenceHosts[i]); instances beyond
	// the list, and empty entries, use 127.0.0.1. The fault tests put an
	// instance in a network namespace of its own this way.
	InferenceHosts []string
	// Wrap, by process name ("inference-1"), is a command that starts the
	// process: Wrap[name] followed by the binary and its arguments, such as
	// "ip netns exec NS". The wrapper must exec the binary, so that signals
	// reach the service itself.
	Wrap map[string][]string
	// ReadyTimeout bounds the wait for the gateway's /health (it covers a
	// model download); default 10 minutes.
	ReadyTimeout time.Duration
}

func (c *Config) setDefaults() error {
	if c.BinDir == "" {
		return errors.New("localmesh: BinDir is required")
	}
	if c.GatewayAddr == "" {
		c.GatewayAddr = "127.0.0.1:3111"
	}
	if c.CallerPort == 0 {
		c.CallerPort = 7002
	}
	if c.InferencePort == 0 {
		c.InferencePort = 7003
	}
	if c.Inference <= 0 {
		c.Inference = 1
	}
	if len(c.Models) > 0 {
		c.Inference = len(c.Models)
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 10 * time.Minute
	}
	if c.Dir == "" {
		d, err := os.MkdirTemp("", "slm-mesh-")
		if err != nil {
			return err
		}
		c.Dir = d
	}
	return os.MkdirAll(c.Dir, 0o755)
}

// Mesh is a running local mesh.
type Mesh struct {
	cfg    Config
	consul *consulagent.Agent

	mu    sync.Mutex
	procs map[string]*Proc
	order []string // start order; Stop goes in reverse

	exited chan *Proc // a process that ended without Stop
}

// Start starts the mesh and waits until the gateway's /health is 200 (the
// whole chain works) or ctx ends or ReadyTimeout passes. On error everything
// started is stopped again.
func Start(ctx context.Context, cfg Config) (*Mesh, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m := &Mesh{cfg: cfg, procs: map[string]*Proc{}, exited: make(chan *Proc, 16)}
	if err := m.start(ctx); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

func (m *Mesh) start(ctx context.Context) error {
	cfg := m.cfg
	if cfg.ConsulBin != "" {
		a, err := consulagent.Start(cfg.ConsulBin, cfg.Dir)
		if err != nil {
			return err
		}
		m.consul = a
	}
	for i := range cfg.Inference {
		if err := m.startProc(InferenceName(i)); err != nil {
			return err
		}
	}
	if err := m.startProc("caller"); err != nil {
		return err
	}
	if err := m.startProc("gateway"); err != nil {
		return err
	}
	return m.WaitReady(ctx, cfg.ReadyTimeout)
}

// InferenceName is the process name of inference instance i (0-based).
func InferenceName(i int) string { return "inference-" + strconv.Itoa(i+1) }

// URL is the gateway's base URL, e.g. http://127.0.0.1:3111.
func (m *Mesh) URL() string { return "http://" + m.cfg.GatewayAddr }

// ConsulAddr is the Consul agent's HTTP address, or "" with static
// discovery.
func (m *Mesh) ConsulAddr() string {
	if m.consul == nil {
		return ""
	}
	return m.consul.HTTPAddr()
}

// Dir holds the services' log files.
func (m *Mesh) Dir() string { return m.cfg.Dir }

// Consul is the Consul agent, or nil with static discovery.
func (m *Mesh) Consul() *consulagent.Agent { return m.consul }

// Addr is the listen address of a service process.
func (m *Mesh) Addr(name string) string {
	switch {
	case name == "gateway":
		return m.cfg.GatewayAddr
	case name == "caller":
		return "127.0.0.1:" + strconv.Itoa(m.cfg.CallerPort)
	case strings.HasPrefix(name, "inference-"):
		i, _ := strconv.Atoi(strings.TrimPrefix(name, "inference-"))
		host := "127.0.0.1"
		if i >= 1 && i <= len(m.cfg.InferenceHosts) && m.cfg.InferenceHosts[i-1] != "" {
			host = m.cfg.InferenceHosts[i-1]
		}
		return net.JoinHostPort(host, strconv.Itoa(m.cfg.InferencePort+i-1))
	}
	return ""
}

// args is the command line of a service process.
func (m *Mesh) args(name string) (bin string, args []string) {
	cfg := m.cfg
	common := []string{"-addr", m.Addr(name)}
	if m.consul != nil {
		common = append(common, "-consul-addr", m.consul.HTTPAddr(), "-consul-register")
	}
	discovery := func(flag string, addrs ...string) []string {
		if m.consul != nil {
			return []string{"-discovery", "consul"}
		}
		return []string{"-discovery", "static", flag, strings.Join(addrs, ",")}
	}
	switch {
	case name == "gateway":
		args = append(common, discovery("-caller", m.Addr("caller"))...)
		bin = "gateway"
	case name == "caller":
		var infs []string
		for i := range cfg.Inference {
			infs = append(infs, m.Addr(InferenceName(i)))
		}
		args = append(common, discovery("-inference", infs...)...)
		bin = "caller"
	default:
		i, _ := strconv.Atoi(strings.TrimPrefix(name, "inference-"))
		args = append(common, "-model", cfg.modelOf(i-1))
		if cfg.ModelSHA256 != "" && len(cfg.Models) == 0 {
			args = append(args, "-model-sha256", cfg.ModelSHA256)
		}
		for flag, v := range map[string]int{"-threads": cfg.Threads, "-parallel": cfg.Parallel, "-ctx": cfg.Ctx, "-queue": cfg.Queue} {
			if v > 0 {
				args = append(args, flag, strconv.Itoa(v))
			}
		}
		bin = "inference"
	}
	return filepath.Join(cfg.BinDir, bin), append(args, cfg.ExtraArgs[bin]...)
}

// modelOf is the model of inference instance i (0-based).
func (c Config) modelOf(i int) string {
	if i >= 0 && i < len(c.Models) {
		return c.Models[i]
	}
	return c.Model
}

// models is how many distinct models the mesh serves.
func (c Config) models() int {
	seen := map[string]bool{}
	for i := range c.Inference {
		seen[model.Source{Ref: c.modelOf(i)}.Name()] = true
	}
	return len(seen)
}

// env is the environment of a service process: the runner's, Config.Env,
// and the secrets.
//
// Here the gateway and the caller share the machine's cores with
// llama.cpp's threads, which spin-wait for each other at every operation of
// a decode step; unless told otherwise they run with GOMAXPROCS=1, plenty
// for relaying tokens, so that their schedulers do not keep extra threads
// busy on those cores (the inference service sizes its own, see
// engine.GoMaxProcs).
func (m *Mesh) env(name string) []string {
	env := append(os.Environ(), m.cfg.Env...)
	env = append(env, "SLM_RPC_TOKEN="+m.cfg.RPCToken)
	if name == "gateway" {
		env = append(env, "SLM_API_KEYS="+m.cfg.APIKeys)
	}
	if (name == "gateway" || name == "caller") && !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") }) {
		env = append(env, "GOMAXPROCS=1")
	}
	return env
}

func (m *Mesh) startProc(name string) error {
	bin, args := m.args(name)
	if wrap := m.cfg.Wrap[name]; len(wrap) > 0 {
		bin, args = wrap[0], slices.Concat(wrap[1:], []string{bin}, args)
	}
	p := &Proc{Name: name, bin: bin, args: args, env: m.env(name), out: m.cfg.Output, logPath: filepath.Join(m.cfg.Dir, name+".log")}
	if err := p.start(m.exited); err != nil {
		return err
	}
	m.mu.Lock()
	if _, ok := m.procs[name]; !ok {
		m.order = append(m.order, name)
	}
	m.procs[name] = p
	m.mu.Unlock()
	return nil
}

// Proc returns a service process by name ("gateway", "caller",
// "inference-1", ...).
func (m *Mesh) Proc(name string) *Proc {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.procs[name]
}

// Restart starts a stopped or killed service process again, same command
// line.
func (m *Mesh) Restart(name string) error {
	if p := m.Proc(name); p != nil {
		p.Stop(10 * time.Second)
	}
	return m.startProc(name)
}

// WaitReady polls the gateway's /health until it is 200 and lists every
// model the mesh serves (Config.Models).
func (m *Mesh) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	want := m.cfg.models()
	var last string
	for {
		resp, err := client.Get(m.URL() + "/health")
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			var h struct {
				Models []string `json:"models"`
			}
			if resp.StatusCode == http.StatusOK && (want <= 1 || json.Unmarshal(body, &h) == nil && len(h.Models) >= want) {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case p := <-m.exited:
			// A process killed before a Restart left its exit here; only
			// the current process of a service counts.
			if m.Proc(p.Name) == p {
				return fmt.Errorf("%s exited while the mesh was starting: %s\n%s", p.Name, p.ExitStatus(), p.TailText())
			}
		case <-ctx.Done():
			return fmt.Errorf("the mesh did not become healthy (last /health: %s): %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Exited delivers a service process that ended without being stopped.
func (m *Mesh) Exited() <-chan *Proc { return m.exited }

// Stop stops every service, gateway first, with SIGTERM (then SIGKILL after
// a bound), and the Consul agent last.
func (m *Mesh) Stop() {
	m.mu.Lock()
	order := append([]string(nil), m.order...)
	m.mu.Unlock()
	for i := len(order) - 1; i >= 0; i-- {
		if p := m.Proc(order[i]); p != nil {
			p.Stop(15 * time.Second)
		}
	}
	if m.consul != nil {
		m.consul.Stop()
	}
}

// Proc is one service process.
type Proc struct {
	Name    string
	bin     string
	args    []string
	env     []string
	out     io.Writer
	logPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	stopping bool
	tail     []string
}

const tailLines = 40

func (p *Proc) start(exited chan<- *Proc) error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	// Its own process group: a Ctrl-C in the terminal reaches the runner,
	// which then stops the children in order. Pdeathsig: if the runner dies
	// without stopping them (SIGKILL), the children get SIGTERM and drain.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.stopping, p.tail = cmd, done, false, nil
	p.mu.Unlock()

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		p.copyLines(pr, logf)
	}()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		<-copied
		logf.Close()
		p.mu.Lock()
		stopping := p.stopping
		p.mu.Unlock()
		close(done)
		if !stopping {
			select {
			case exited <- p:
			default:
			}
		}
	}()
	return nil
}

// copyLines writes each line to the log file and, prefixed with the
// process name, to the shared output, and keeps the last lines.
func (p *Proc) copyLines(r io.Reader, logf io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	prefix := fmt.Sprintf("%-12s| ", p.Name)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(logf, line)
		if p.out != nil {
			fmt.Fprintln(p.out, prefix+line)
		}
		p.mu.Lock()
		p.tail = append(p.tail, line)
		if len(p.tail) > tailLines {
			p.tail = p.tail[len(p.tail)-tailLines:]
		}
		p.mu.Unlock()
	}
}

// Pid is the process id, 0 if not running.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to the process. Stopping signals sent this way count as
// a stop only through Stop; Kill and Signal(SIGKILL) model a crash.
func (p *Proc) Signal(sig os.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return errors.New("not running")
	}
	return cmd.Process.Signal(sig)
}

// Kill sends SIGKILL, like a crash, and waits for the process to be gone.
func (p *Proc) Kill() {
	if p.Signal(syscall.SIGKILL) == nil {
		<-p.Done()
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Stop sends SIGTERM and waits up to timeout, then SIGKILL.
func (p *Proc) Stop(timeout time.Duration) {
	p.mu.Lock()
	p.stopping = true
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
	}
}

// ExitStatus describes how the process ended ("exit status 0", "signal:
// killed"), or "running".
func (p *Proc) ExitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return p.cmd.ProcessState.String()
	default:
		return "running"
	}
}

// ExitCode is the process's exit code, -1 if it is running or was killed
// by a signal.
func (p *Proc) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// TailText is the process's last log lines.
func (p *Proc) TailText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// FreePorts returns loopback ports that were free a moment ago for a mesh
// of inference instances: the gateway's, the caller's, and the first of
// the inference instances' (Config.GatewayAddr, CallerPort,
// InferencePort), which Start numbers consecutively from there; every one
// of those was free too. A port may still be taken before a service binds
// it: a caller starts again on new ports when Start fails with "address
// already in use".
func FreePorts(inference int) (gateway, caller, firstInference int, err error) {
	for range 50 {
		var ports []int
		for range 3 {
			p, err := FreePort()
			if err != nil {
				return 0, 0, 0, err
			}
			ports = append(ports, p)
		}
		for i := 1; i < inference; i++ {
			ports = append(ports, ports[2]+i)
		}
		if len(slices.Compact(slices.Sorted(slices.Values(ports)))) == len(ports) && allFree(ports[3:]) {
			return ports[0], ports[1], ports[2], nil
		}
	}
	return 0, 0, 0, fmt.Errorf("found no %d consecutive free ports", inference)
}

// allFree reports whether every port can be listened on now.
func allFree(ports []int) bool {
	for _, p := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

// FreePort returns a loopback TCP port that was free a moment ago, for
// tests that run a mesh beside other processes.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

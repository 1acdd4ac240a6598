package clusterbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// clusterTimeout bounds the wait for the cluster to form: leaders, the
// ACL bootstrap (whose script retries every 30 s), every client ready.
const clusterTimeout = 10 * time.Minute

// NomadAddr is the first server's HTTPS API.
func (b *Box) NomadAddr() string {
	for _, h := range b.state.Hosts {
		if h.Kind == "server" {
			return "https://" + h.IP + ":4646"
		}
	}
	return ""
}

// NomadServerName is the name in the servers' certificate, which clients
// of the API check instead of the address (NOMAD_TLS_SERVER_NAME).
const NomadServerName = "server." + nomadRegion + ".nomad"

// AgentCAFile is the agents' CA certificate, which clients of the Nomad
// API trust (NOMAD_CACERT).
func (b *Box) AgentCAFile() string { return filepath.Join(b.cfg.Dir, "etc", "agent-ca.pem") }

// OperatorCertFile and OperatorKeyFile are the operator's client
// certificate of the agents' CA, which Nomad's API asks of every caller
// (NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY).
func (b *Box) OperatorCertFile() string { return filepath.Join(b.cfg.Dir, "etc", "operator.pem") }
func (b *Box) OperatorKeyFile() string  { return filepath.Join(b.cfg.Dir, "etc", "operator-key.pem") }

// NomadTLS is the TLS configuration of a client of the box's Nomad API
// that checks serverName in the agent's certificate.
func (b *Box) NomadTLS(serverName string) *nomad.TLSConfig {
	return &nomad.TLSConfig{
		CACert: b.AgentCAFile(), TLSServerName: serverName,
		ClientCert: b.OperatorCertFile(), ClientKey: b.OperatorKeyFile(),
	}
}

// NomadEnv is the environment that points the nomad CLI, the Nomad API
// library and tools/submit at the box with token.
func (b *Box) NomadEnv(token string) []string {
	return []string{
		"NOMAD_ADDR=" + b.NomadAddr(),
		"NOMAD_CACERT=" + b.AgentCAFile(),
		"NOMAD_TLS_SERVER_NAME=" + NomadServerName,
		"NOMAD_CLIENT_CERT=" + b.OperatorCertFile(),
		"NOMAD_CLIENT_KEY=" + b.OperatorKeyFile(),
		"NOMAD_TOKEN=" + token,
	}
}

// Nomad is an API client of the box's Nomad with token.
func (b *Box) Nomad(token string) (*nomad.Client, error) {
	cfg := nomad.DefaultConfig()
	cfg.Address = b.NomadAddr()
	cfg.Region, cfg.Namespace = "", ""
	cfg.SecretID = token
	cfg.TLSConfig = b.NomadTLS(NomadServerName)
	return nomad.NewClient(cfg)
}

// ManagementToken and OperatorToken are the box's Nomad ACL tokens.
func (b *Box) ManagementToken() string { return b.state.NomadManagement }
func (b *Box) OperatorToken() string   { return b.state.OperatorToken }

// APIKey is a key the gateways accept.
func (b *Box) APIKey() string { return b.state.APIKey }

// clientCount is the number of Nomad clients.
func (b *Box) clientCount() int {
	n := 0
	for _, h := range b.state.Hosts {
		if h.Kind != "server" {
			n++
		}
	}
	return n
}

// waitCluster waits until Nomad has a leader, its ACLs are bootstrapped
// (the management token works) and every client is ready.
func (b *Box) waitCluster(ctx context.Context) error {
	c, err := b.Nomad(b.state.NomadManagement)
	if err != nil {
		return err
	}
	return Poll(ctx, clusterTimeout, func() error {
		if _, err := c.Status().Leader(); err != nil {
			return fmt.Errorf("no Nomad leader: %w", err)
		}
		if _, _, err := c.ACLTokens().Self(nil); err != nil {
			return fmt.Errorf("ACLs not bootstrapped: %w", err)
		}
		nodes, _, err := c.Nodes().List(nil)
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes {
			if n.Status == nomad.NodeStatusReady {
				ready++
			}
		}
		if ready < b.clientCount() {
			return fmt.Errorf("%d of %d clients ready", ready, b.clientCount())
		}
		return nil
	})
}

// OperatorPolicyName is the operator's Nomad ACL policy
// (nomad/operator.policy.hcl), which the servers apply at bootstrap
// (acl-bootstrap.sh): enough for `go run ./tools/submit` and the daily
// `nomad` commands, and nothing of the cluster's own configuration.
const OperatorPolicyName = "slm-operator"

// makeOperatorToken creates a client token with the operator policy, once
// the servers' bootstrap has applied it, as an operator does on AWS.
func (b *Box) makeOperatorToken(ctx context.Context) error {
	c, err := b.Nomad(b.state.NomadManagement)
	if err != nil {
		return err
	}
	if err := Poll(ctx, 3*time.Minute, func() error {
		_, _, err := c.ACLPolicies().Info(OperatorPolicyName, nil)
		return err
	}); err != nil {
		return fmt.Errorf("the servers' bootstrap did not apply the ACL policy %s: %w", OperatorPolicyName, err)
	}
	tok, _, err := c.ACLTokens().Create(&nomad.ACLToken{Name: "operator", Type: "client", Policies: []string{OperatorPolicyName}}, nil)
	if err != nil {
		return err
	}
	b.state.OperatorToken = tok.SecretID
	return nil
}

// Down stops everything the box in cfg.Dir started and removes what it
// made: processes (every process in a host's network namespace, tasks
// included), the emulator, cgroups, namespaces, the bridge and the mount
// targets it created. The hosts' logs stay in Dir.
func Down(ctx context.Context, cfg Config) error {
	b, err := Open(cfg)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return b.Down(ctx)
}

// Down removes the box (see the function Down).
func (b *Box) Down(ctx context.Context) error {
	start := time.Now()
	defer func() { b.logf("down in %s", time.Since(start).Round(time.Second)) }()
	var errs []error
	for _, h := range b.state.Hosts {
		killAll(ctx, h.Netns)
	}
	if b.state.MotoPid > 0 && isMoto(b.state.MotoPid) {
		_ = syscall.Kill(b.state.MotoPid, syscall.SIGKILL)
	}
	for _, h := range b.state.Hosts {
		if h.CgroupParent != "" {
			removeCgroups(h.CgroupParent)
		}
		if err := removeHost(ctx, h); err != nil {
			errs = append(errs, err)
		}
	}
	_ = run(ctx, "ip", "link", "del", bridgeName)
	for i := len(b.state.CreatedTargets) - 1; i >= 0; i-- {
		_ = os.Remove(b.state.CreatedTargets[i])
	}
	// The task chroots under allocRoot are hard links to the machine's
	// libraries (nomad/client.hcl's chroot_env), thousands a task: most of
	// the time Down takes.
	removeMachineDirs()
	if entries, _ := os.ReadDir(nsDir); len(entries) == 0 {
		_ = run(ctx, "umount", nsDir)
		_ = os.Remove(nsDir)
	}
	if len(errs) == 0 {
		if err := os.Remove(b.statePath()); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeStale removes what a box left on the machine when nothing of it
// runs any more (its processes ended with the session that started it, and
// its state may be in another checkout): the hosts' namespaces, the bridge,
// the allocations. A box whose hosts still run processes is left alone:
// only one box can run at a time.
func removeStale(ctx context.Context) error {
	names, _ := filepath.Glob("/run/netns/" + netnsPrefix + "*")
	for _, n := range names {
		if pids := netnsPids(ctx, filepath.Base(n)); len(pids) > 0 {
			return fmt.Errorf("a box is running (processes %v in %s): `go run ./tools/box down` removes it", pids, filepath.Base(n))
		}
	}
	var errs []error
	files, _ := filepath.Glob(filepath.Join(nsDir, "*"))
	for _, f := range files {
		_ = run(ctx, "umount", f)
		_ = os.Remove(f)
	}
	for _, n := range names {
		if err := run(ctx, "ip", "netns", "del", filepath.Base(n)); err != nil {
			errs = append(errs, err)
		}
	}
	if exec.CommandContext(ctx, "ip", "link", "show", bridgeName).Run() == nil {
		if err := run(ctx, "ip", "link", "del", bridgeName); err != nil {
			errs = append(errs, err)
		}
	}
	removeMachineDirs()
	parents, _ := filepath.Glob("/sys/fs/cgroup/*/slmbox-*")
	for _, p := range parents {
		removeCgroups("/" + filepath.Base(p))
	}
	return errors.Join(errs...)
}

// removeMachineDirs removes the directories a box makes on the machine
// outside its own directory: the agents' binaries, the units' notify
// sockets, the allocations.
func removeMachineDirs() {
	for _, d := range []string{agentBinDir, notifyDir, allocRoot} {
		_ = os.RemoveAll(d)
	}
}

// killAll kills every process in a network namespace, until none is left
// (a dying Nomad client may still start one).
func killAll(ctx context.Context, ns string) {
	for range 20 {
		pids := netnsPids(ctx, ns)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// isMoto says whether pid is still the emulator (and not a process that
// got its pid later).
func isMoto(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(data, []byte("moto_server"))
}

// removeCgroups removes a Nomad client's cgroup_parent in every cgroup
// hierarchy, innermost directories first.
func removeCgroups(parent string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		dir := filepath.Join(root, parent)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}

// Status writes what runs in the box: each host with its processes, the
// Nomad servers and clients, the jobs.
func (b *Box) Status(ctx context.Context, w io.Writer) error {
	for _, h := range b.state.Hosts {
		var procs []string
		for _, p := range b.state.Procs {
			if p.Host == h.Name {
				state := "running"
				if syscall.Kill(p.Pid, 0) != nil {
					state = "gone"
				}
				procs = append(procs, fmt.Sprintf("%s (pid %d, %s)", p.Unit, p.Pid, state))
			}
		}
		fmt.Fprintf(w, "%-12s %-10s %-14s %s\n", h.Name, h.Kind, h.IP, strings.Join(procs, ", "))
	}
	c, err := b.Nomad(b.state.NomadManagement)
	if err != nil {
		return err
	}
	leader, err := c.Status().Leader()
	if err != nil {
		return fmt.Errorf("nomad: %w", err)
	}
	fmt.Fprintf(w, "\nNomad leader %s (%s)\n", leader, b.NomadAddr())
	nodes, _, err := c.Nodes().List(nil)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		fmt.Fprintf(w, "  client %-12s %-6s %s\n", n.Name, n.Status, n.Address)
	}
	jobs, _, err := c.Jobs().List(nil)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		fmt.Fprintf(w, "  job %-14s %s\n", j.Name, j.Status)
	}
	return nil
}

// LogTails is the last lines of every unit log of every host, for a
// failure's report.
func (b *Box) LogTails(lines int) string {
	var out strings.Builder
	for _, h := range b.state.Hosts {
		logs, _ := filepath.Glob(filepath.Join(h.LogDir(), "*.log"))
		for _, l := range logs {
			data, err := os.ReadFile(l)
			if err != nil {
				continue
			}
			all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
			if len(all) > lines {
				all = all[len(all)-lines:]
			}
			fmt.Fprintf(&out, "== %s %s\n%s\n", h.Name, filepath.Base(l), strings.Join(all, "\n"))
		}
	}
	return out.String()
}

// Exec runs argv as root on host h (its network, mount and UTS
// namespaces), with a unit's environment, output to w.
func (b *Box) Exec(ctx context.Context, h *Host, w io.Writer, argv ...string) error {
	return b.runInHost(ctx, h, 0, 0, argv, w)
}

// Host is the host with the given name, or nil.
func (b *Box) Host(name string) *Host {
	for _, h := range b.state.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

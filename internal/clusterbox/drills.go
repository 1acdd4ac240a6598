package clusterbox

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// What the reliability drills do to the box's hosts: a host that loses
// power (KillHost), an agent stopped as systemd stops it (StopHost), a
// host that boots again with its disks (Boot), and what the drills read of
// the servers' Raft (ConsulLeader, ConsulRaftPeers).

// KillHost kills -9 every process on h, its agents and its tasks: the host
// loses power. Its files (data directories included) stay.
func (b *Box) KillHost(ctx context.Context, h *Host) {
	killAll(ctx, h.Netns)
}

// StopHost stops every process on h with SIGTERM, as systemd stops the
// units at shutdown, and waits until they have exited (SIGKILL after
// timeout, as systemd's TimeoutStopSec would).
func (b *Box) StopHost(ctx context.Context, h *Host, timeout time.Duration) {
	for _, pid := range netnsPids(ctx, h.Netns) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && len(netnsPids(ctx, h.Netns)) > 0 {
		time.Sleep(200 * time.Millisecond)
	}
	killAll(ctx, h.Netns)
}

// Boot starts h's boot units again, as systemd does when the machine
// boots: the unit files the box laid out on h, in their order, with the
// host's data directories as they were.
func (b *Box) Boot(ctx context.Context, h *Host) error {
	if err := b.loadAccounts(); err != nil {
		return err
	}
	files := map[string]string{}
	root := h.fsRoot()
	dir := filepath.Join(root, "etc/systemd/system")
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files["/"+strings.TrimPrefix(p, root+"/")] = string(data)
		return nil
	})
	if err != nil {
		return err
	}
	units, err := bootUnits(files)
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	b.logf("%s: booting", h.Name)
	err = b.startUnits(ctx, h, units)
	if serr := b.saveState(); err == nil {
		err = serr
	}
	return err
}

// loadAccounts reads the ids of the hosts' users from the passwd and group
// files the box wrote, for a box opened from its state.
func (b *Box) loadAccounts() error {
	if b.accounts.consulUID != 0 {
		return nil
	}
	etc := filepath.Join(b.cfg.Dir, "etc")
	users, err := readIDs(filepath.Join(etc, "passwd"))
	if err != nil {
		return err
	}
	groups, err := readIDs(filepath.Join(etc, "group"))
	if err != nil {
		return err
	}
	a := accounts{consulUID: users["consul"], consulGID: groups["consul"], nobodyUID: users["nobody"]}
	var ok bool
	if a.nogroupGID, ok = groups["nogroup"]; !ok {
		a.nogroupGID = groups["nobody"]
	}
	if a.consulUID == 0 || a.consulGID == 0 {
		return fmt.Errorf("clusterbox: no consul user in %s", etc)
	}
	b.accounts = a
	return nil
}

// ServerOf is the host whose address is addr's ("10.213.7.12:4647"), or
// nil.
func (b *Box) ServerOf(addr string) *Host {
	ip := addr
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		ip = addr[:i]
	}
	for _, h := range b.state.Hosts {
		if h.IP == ip {
			return h
		}
	}
	return nil
}

// consul runs the consul CLI on h against its local agent with the
// cluster's initial management token, which secrets.sh wrote into the
// agent's configuration.
func (b *Box) consul(ctx context.Context, h *Host, args ...string) (string, error) {
	data, err := os.ReadFile(h.Path("/etc/consul.d/zz-secrets.hcl"))
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`initial_management\s*=\s*"([^"]+)"`).FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf("%s: no initial_management token in zz-secrets.hcl", h.Name)
	}
	var out bytes.Buffer
	argv := append([]string{filepath.Join(b.binDir(), "consul")}, args...)
	argv = append(argv, "-http-addr=http://127.0.0.1:8500", "-token="+string(m[1]))
	if err := b.runInHost(ctx, h, 0, 0, argv, &out); err != nil {
		return "", fmt.Errorf("%s: consul %s: %w: %s", h.Name, strings.Join(args, " "), err, out.Bytes())
	}
	return out.String(), nil
}

// ConsulLeader is Consul's Raft leader as server h's agent sees it
// (address:port).
func (b *Box) ConsulLeader(ctx context.Context, h *Host) (string, error) {
	var out bytes.Buffer
	if err := b.runInHost(ctx, h, 0, 0, []string{"curl", "-sf", "http://127.0.0.1:8500/v1/status/leader"}, &out); err != nil {
		return "", fmt.Errorf("%s: consul leader: %w", h.Name, err)
	}
	return strings.Trim(strings.TrimSpace(out.String()), `"`), nil
}

// RaftPeer is a member of a Raft configuration.
type RaftPeer struct {
	Node, ID, Address string
}

// ConsulRaftPeers is `consul operator raft list-peers` on server h.
func (b *Box) ConsulRaftPeers(ctx context.Context, h *Host) ([]RaftPeer, error) {
	out, err := b.consul(ctx, h, "operator", "raft", "list-peers")
	if err != nil {
		return nil, err
	}
	var peers []RaftPeer
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 3 {
			continue // the header
		}
		peers = append(peers, RaftPeer{Node: f[0], ID: f[1], Address: f[2]})
	}
	return peers, nil
}

// ConsulTransferLeader makes server to Consul's Raft leader, through
// server h's agent.
func (b *Box) ConsulTransferLeader(ctx context.Context, h, to *Host) error {
	peers, err := b.ConsulRaftPeers(ctx, h)
	if err != nil {
		return err
	}
	for _, p := range peers {
		if p.Node == to.Name {
			_, err := b.consul(ctx, h, "operator", "raft", "transfer-leader", "-id="+p.ID)
			return err
		}
	}
	return fmt.Errorf("clusterbox: %s is not among Consul's Raft peers %v", to.Name, peers)
}

package clusterbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The box's names in the machine's global namespaces: the bridge, the
// network namespaces (/run/netns/<prefix>-<host>) and the host ends of
// the veth pairs. Down removes whatever carries them.
const (
	bridgeName  = "slmbox0"
	netnsPrefix = "slmbox-"
	vethPrefix  = "sbx-"
	// nsDir holds the files that keep each host's mount and UTS namespaces
	// alive while no process is in them; it is a private mount, as
	// unshare(1) requires for such files.
	nsDir = "/run/slmbox"
)

// run runs a command and returns its combined output in the error.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// createBridge makes the box's bridge with the gateway address (.1) of the
// subnet, the address every host's default route points at and where the
// AWS API emulator listens.
func createBridge(ctx context.Context, gatewayCIDR string) error {
	for _, args := range [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", gatewayCIDR, "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// createHostNetwork makes the network namespace of h, its veth pair on the
// bridge (eth0 inside) with h's address, and a default route through the
// bridge.
func createHostNetwork(ctx context.Context, h *Host, prefixLen int, gateway string) error {
	inner := "eth0"
	for _, args := range [][]string{
		{"netns", "add", h.Netns},
		{"link", "add", h.Veth, "type", "veth", "peer", "name", inner, "netns", h.Netns},
		{"link", "set", h.Veth, "master", bridgeName},
		{"link", "set", h.Veth, "up"},
		{"-n", h.Netns, "addr", "add", fmt.Sprintf("%s/%d", h.IP, prefixLen), "dev", inner},
		{"-n", h.Netns, "link", "set", inner, "up"},
		{"-n", h.Netns, "link", "set", "lo", "up"},
		{"-n", h.Netns, "route", "add", "default", "via", gateway},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// preparePrivateDir makes nsDir a private mount of its own, once.
func preparePrivateDir(ctx context.Context) error {
	if err := os.MkdirAll(nsDir, 0o700); err != nil {
		return err
	}
	if exec.CommandContext(ctx, "mountpoint", "-q", nsDir).Run() == nil {
		return nil
	}
	if err := run(ctx, "mount", "--bind", nsDir, nsDir); err != nil {
		return err
	}
	return run(ctx, "mount", "--make-private", nsDir)
}

// Mount is a bind mount in a host's mount namespace: Source (a path of the
// machine) appears at Target.
type Mount struct {
	Source, Target string
}

// createHostNamespaces makes h's mount and UTS namespaces, kept by files in
// nsDir: inside, the hostname is h's name and each mount is in place. /sys
// stays the machine's (unlike under `ip netns exec`, which mounts a new
// sysfs and so hides /sys/fs/cgroup, which the Nomad client and its exec
// driver need); nothing in the box reads a network device from it. Targets that do not exist on the
// machine are created (empty) first and listed in h.CreatedTargets, so
// that Down can remove them again.
func createHostNamespaces(ctx context.Context, h *Host, mounts []Mount) error {
	for _, f := range []string{h.MountNS, h.UTSNS} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			return err
		}
	}
	script := []string{"set -e", "hostname " + shellQuote(h.Name)}
	for _, m := range mounts {
		created, err := ensureTarget(m)
		if err != nil {
			return err
		}
		h.CreatedTargets = append(h.CreatedTargets, created...)
		script = append(script, "mount --bind "+shellQuote(m.Source)+" "+shellQuote(m.Target))
	}
	return run(ctx, "nsenter", "--net=/run/netns/"+h.Netns, "--",
		"unshare", "--mount="+h.MountNS, "--uts="+h.UTSNS, "--propagation", "private",
		"sh", "-c", strings.Join(script, "\n"))
}

// ensureTarget creates a mount target that the machine lacks: a directory
// for a directory, an empty file for a file. It returns what it created,
// outermost first.
func ensureTarget(m Mount) ([]string, error) {
	if _, err := os.Stat(m.Target); err == nil {
		return nil, nil
	}
	fi, err := os.Stat(m.Source)
	if err != nil {
		return nil, err
	}
	var created []string
	for d := filepath.Dir(m.Target); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		created = append([]string{d}, created...)
	}
	if fi.IsDir() {
		created = append(created, m.Target)
		return created, os.MkdirAll(m.Target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(m.Target), 0o755); err != nil {
		return created, err
	}
	return append(created, m.Target), os.WriteFile(m.Target, nil, 0o644)
}

// enter is the command prefix that runs a program on host h: in its
// network, mount and UTS namespaces, as uid:gid when they are not 0.
// nsenter execs the program, which keeps nsenter's pid.
func (h *Host) enter(uid, gid int) []string {
	args := []string{"nsenter", "--net=/run/netns/" + h.Netns, "--mount=" + h.MountNS, "--uts=" + h.UTSNS}
	if uid != 0 || gid != 0 {
		args = append(args, fmt.Sprintf("--setuid=%d", uid), fmt.Sprintf("--setgid=%d", gid))
	}
	return append(args, "--")
}

// removeHost undoes createHostNetwork and createHostNamespaces: the
// namespace files are unmounted (the namespaces end with their last
// process), the network namespace deleted (with it the veth pair), and
// the mount targets created on the machine removed if still empty.
func removeHost(ctx context.Context, h *Host) error {
	var errs []error
	for _, f := range []string{h.MountNS, h.UTSNS} {
		if exec.CommandContext(ctx, "mountpoint", "-q", f).Run() == nil {
			if err := run(ctx, "umount", f); err != nil {
				errs = append(errs, err)
			}
		}
		_ = os.Remove(f)
	}
	if _, err := os.Stat("/run/netns/" + h.Netns); err == nil {
		if err := run(ctx, "ip", "netns", "del", h.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	_ = exec.CommandContext(ctx, "ip", "link", "del", h.Veth).Run() // gone with the namespace
	for i := len(h.CreatedTargets) - 1; i >= 0; i-- {
		_ = os.Remove(h.CreatedTargets[i]) // only if empty: a directory with content stays
	}
	return errors.Join(errs...)
}

// netnsPids lists the processes in network namespace ns.
func netnsPids(ctx context.Context, ns string) []int {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

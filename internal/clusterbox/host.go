package clusterbox

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Host is one machine of the box: a network namespace on the bridge with
// mount and UTS namespaces of its own.
type Host struct {
	// Name is the host name, e.g. "server-1" or "gateway-2".
	Name string `json:"name"`
	// Kind is the plan module's kind of node: server, gateway, caller or
	// inference.
	Kind string `json:"kind"`
	// IP is the host's address on the bridge.
	IP string `json:"ip"`
	// Netns is the network namespace (/run/netns/<Netns>); Veth the host
	// end of its veth pair, on the bridge.
	Netns string `json:"netns"`
	Veth  string `json:"veth"`
	// MountNS and UTSNS are the files that hold its mount and UTS
	// namespaces.
	MountNS string `json:"mount_ns"`
	UTSNS   string `json:"uts_ns"`
	// Root holds the host's own directories (hostDirs), bind-mounted at
	// their paths in its mount namespace, and its logs.
	Root string `json:"root"`
	// CreatedTargets are mount targets that the machine did not have and
	// the box created; Down removes them when empty.
	CreatedTargets []string `json:"created_targets,omitempty"`
	// CgroupParent is the Nomad client's cgroup_parent (clients only).
	CgroupParent string `json:"cgroup_parent,omitempty"`
}

// hostDirs are the directories that the rendered files and scripts use by
// absolute path and that each host has of its own: every host sees its
// own agent configuration, secrets, data and scripts at the paths an EC2
// instance has them.
var hostDirs = []string{
	"/etc/consul.d",
	"/etc/nomad.d",
	"/etc/slm-mesh", // drain.conf, read by the drain unit
	"/opt/slm-data",
	"/opt/nomad",
	"/opt/consul",
	"/opt/slm-mesh",
	"/var/lib/slm-mesh",
}

// fsRoot is the directory whose subdirectories are mounted at hostDirs.
func (h *Host) fsRoot() string { return filepath.Join(h.Root, "fs") }

// LogDir holds one log file per unit (<unit>.log).
func (h *Host) LogDir() string { return filepath.Join(h.Root, "log") }

// allocRoot holds the Nomad clients' alloc_dir (see clientOverlay): on the
// machine's root file system, as /usr is, and short, because Nomad puts a
// unix socket per task under it (secrets/api.sock) and a socket's path
// may have at most 107 bytes.
const allocRoot = "/var/lib/slmbox"

// allocDir is the Nomad client's alloc_dir.
func (h *Host) allocDir() string { return filepath.Join(allocRoot, h.Name) }

// Path is where a path of the host is on the machine: under Root for the
// host's own directories, the machine's own path otherwise.
func (h *Host) Path(p string) string {
	for _, d := range hostDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return filepath.Join(h.fsRoot(), p)
		}
	}
	return p
}

// File is a file of the plan module's node_files output.
type File struct {
	Path        string `json:"path"`
	Permissions string `json:"permissions"`
	Content     string `json:"content"`
}

// accounts are the uids and gids of the users the rendered files name.
type accounts struct {
	consulUID, consulGID  int
	nobodyUID, nogroupGID int
}

// layOut writes a host's files: the rendered node files of its kind, then
// the directories and moves that install.sh makes after installing the
// packages (install.sh itself installs packages from the internet and is
// not run), then the box's overlay. Staged files (/etc/slm-mesh) and unit
// files are written under Root too, where the box reads the units.
func (h *Host) layOut(files []File, acct accounts, overlay string) error {
	for _, d := range append([]string{h.LogDir(), h.allocDir(), filepath.Join(h.fsRoot(), "etc/systemd/system"), filepath.Join(h.fsRoot(), "etc/slm-mesh")}, hostDirs...) {
		if err := os.MkdirAll(h.Path(d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range files {
		mode, err := strconv.ParseUint(f.Permissions, 8, 32)
		if err != nil {
			return fmt.Errorf("%s: permissions %q: %w", f.Path, f.Permissions, err)
		}
		if err := writeFile(h.stagedPath(f.Path), f.Content, os.FileMode(mode), 0, 0); err != nil {
			return err
		}
	}
	server := h.Kind == "server"
	// install.sh: the staged agent configurations move into place.
	for _, agent := range []struct {
		name      string
		gid       int
		mode      os.FileMode
		configDir string
	}{
		{"consul", acct.consulGID, 0o640, "/etc/consul.d"},
		{"nomad", 0, 0o600, "/etc/nomad.d"},
	} {
		staged := filepath.Join(h.fsRoot(), "etc/slm-mesh", agent.name)
		entries, _ := os.ReadDir(staged)
		for _, e := range entries {
			if path.Ext(e.Name()) != ".hcl" {
				continue
			}
			data, err := os.ReadFile(filepath.Join(staged, e.Name()))
			if err != nil {
				return err
			}
			if err := writeFile(h.Path(path.Join(agent.configDir, e.Name())), string(data), agent.mode, 0, agent.gid); err != nil {
				return err
			}
		}
		if err := os.RemoveAll(staged); err != nil {
			return err
		}
	}
	dirs := []dirSpec{
		{"/etc/consul.d/tls", 0, acct.consulGID, 0o750},
		{"/etc/nomad.d/tls", 0, 0, 0o700},
		{"/opt/consul/data", acct.consulUID, acct.consulGID, 0o750},
		{"/opt/nomad/data", 0, 0, 0o700},
	}
	if server {
		dirs = append(dirs,
			dirSpec{"/opt/slm-data/consul", acct.consulUID, acct.consulGID, 0o750},
			dirSpec{"/opt/slm-data/nomad", 0, 0, 0o700})
	} else {
		dirs = append(dirs, dirSpec{modelCacheDir, acct.nobodyUID, acct.nogroupGID, 0o750})
	}
	for _, d := range dirs {
		if err := makeDir(h.Path(d.path), d.mode, d.uid, d.gid); err != nil {
			return err
		}
	}
	if overlay != "" {
		return writeFile(h.Path("/etc/nomad.d/box.hcl"), overlay, 0o600, 0, 0)
	}
	return nil
}

// dirSpec is a directory install.sh makes, with its owner and mode.
type dirSpec struct {
	path     string
	uid, gid int
	mode     os.FileMode
}

// modelCacheDir backs the slm-model-cache host volume (nomad/client.hcl).
const modelCacheDir = "/opt/slm-mesh/models"

// stagedPath is where a node file is written: a host directory's file at
// its place, anything else (unit files, /etc/slm-mesh) under Root.
func (h *Host) stagedPath(p string) string {
	if q := h.Path(p); q != p {
		return q
	}
	return filepath.Join(h.fsRoot(), p)
}

// unitFiles are the host's systemd unit files and drop-ins, by path.
func (h *Host) unitFiles(files []File) map[string]string {
	out := map[string]string{}
	for _, f := range files {
		if strings.HasPrefix(f.Path, "/etc/systemd/system/") {
			out[f.Path] = f.Content
		}
	}
	return out
}

// clientOverlay is the one file the box adds to a Nomad client's
// configuration (/etc/nomad.d/box.hcl), for what several clients on one
// machine need and an EC2 instance does not:
//
//   - cgroup_parent: each client manages the cgroups under its parent (with
//     cgroups v1, one per controller); two clients under Nomad's default
//     "/nomad" would take each other's cpusets and tasks.
//   - alloc_dir: the exec driver builds each task's chroot by hard-linking
//     the host's /usr, /etc, ... into the task directory, and falls back to
//     copying them (gigabytes per task) when that directory is on another
//     mount. The host's /opt/nomad is a bind mount, so the allocations live
//     in a directory of the machine's root file system instead.
func (h *Host) clientOverlay() string {
	return fmt.Sprintf(`# The cluster in a box only (internal/clusterbox): several Nomad clients on
# one machine. Not part of the configuration that Terraform renders.
client {
  cgroup_parent = %q
  alloc_dir     = %q
}
`, h.CgroupParent, h.allocDir())
}

func writeFile(p, content string, mode os.FileMode, uid, gid int) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		return err
	}
	if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is masked by the umask
		return err
	}
	return os.Chown(p, uid, gid)
}

func makeDir(p string, mode os.FileMode, uid, gid int) error {
	if err := os.MkdirAll(p, mode); err != nil {
		return err
	}
	if err := os.Chmod(p, mode); err != nil {
		return err
	}
	return os.Chown(p, uid, gid)
}

// hostNames are the box's hosts for the given counts, in the order they
// start: servers first, then each kind of client.
func hostNames(counts map[string]int) (names, kinds []string) {
	for _, kind := range kindOrder {
		for i := 1; i <= counts[kind]; i++ {
			names = append(names, kind+"-"+strconv.Itoa(i))
			kinds = append(kinds, kind)
		}
	}
	return names, kinds
}

// kindOrder is the plan module's kinds of node, servers first.
var kindOrder = []string{"server", "gateway", "caller", "inference"}

// isKind says whether kind is one of the plan module's.
func isKind(kind string) bool { return slices.Contains(kindOrder, kind) }

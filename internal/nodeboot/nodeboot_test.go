package nodeboot

import (
	"bytes"
	"context"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/consulagent"
	"github.com/slm-mesh/slm-mesh/internal/nomadtest"
)

// testVolumeID is server-0's data volume in testVars.
const testVolumeID = "vol-0123456789abcdef0"

// testVars are the module's inputs: recognisable fake secrets (as in
// terraform/modules/plan/tests) and one server's data volume.
var testVars = map[string]any{
	"region":                 "eu-west-1",
	"server_data_volume_ids": map[string]string{"server-0": testVolumeID},
	"secrets": map[string]any{
		"consul_gossip_key": "Q09OU1VMLWdvc3NpcC1rZXktZm9yLXRlc3RzLTMyYiE=",
		"nomad_gossip_key":  "Tk9NQUQtZ29zc2lwLWtleS1mb3ItdGVzdHMtMzJiYiE=",
		"consul_management": "11111111-1111-4111-8111-111111111111",
		"consul_agent":      "22222222-2222-4222-8222-222222222222",
		"consul_default":    "55555555-5555-4555-8555-555555555555",
		"consul_nomad":      "33333333-3333-4333-8333-333333333333",
		"nomad_management":  "44444444-4444-4444-8444-444444444444",
		"caller_token":      "callerTOKENcallerTOKENcallerTOKEN0123",
		"inference_token":   "inferenceTOKENinferenceTOKENinference01",
		"api_keys":          []string{"apiKEYoneAPIkeyONEapiKEYoneAPIkey01"},
		"tls": map[string]string{
			"ca_cert":            "FAKE-CA-CERT",
			"nomad_server_cert":  "FAKE-NOMAD-SERVER-CERT",
			"nomad_server_key":   "FAKE-NOMAD-SERVER-KEY",
			"nomad_client_cert":  "FAKE-NOMAD-CLIENT-CERT",
			"nomad_client_key":   "FAKE-NOMAD-CLIENT-KEY",
			"consul_server_cert": "FAKE-CONSUL-SERVER-CERT",
			"consul_server_key":  "FAKE-CONSUL-SERVER-KEY",
			"consul_client_cert": "FAKE-CONSUL-CLIENT-CERT",
			"consul_client_key":  "FAKE-CONSUL-CLIENT-KEY",
			"rpc_ca_cert":        "FAKE-RPC-CA-CERT",
			"rpc_caller_cert":    "FAKE-RPC-CALLER-CERT",
			"rpc_caller_key":     "FAKE-RPC-CALLER-KEY",
			"rpc_inference_cert": "FAKE-RPC-INFERENCE-CERT",
			"rpc_inference_key":  "FAKE-RPC-INFERENCE-KEY",
		},
	},
}

var (
	unitName       = regexp.MustCompile(`\.(service|timer|mount)$`)
	installSection = regexp.MustCompile(`(?m)^\[Install\]\n(.*\n)*(WantedBy|RequiredBy)=`)
	execLine       = regexp.MustCompile(`(?m)^Exec[A-Za-z]+=[-@:+!|]*(\S+)`)
	fstabLine      = regexp.MustCompile(`echo "UUID=\$uuid ([^"]+)" >>/etc/fstab`)
)

var (
	renderOnce sync.Once
	rendered   *Outputs
	renderErr  error
)

// render returns the plan module's outputs for testVars, planned once per
// test binary. Without OpenTofu or Terraform the test is skipped
// (tools/iac/check.sh builds OpenTofu and runs these tests with it).
func render(t *testing.T) *Outputs {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := FindTofu(root)
	if err != nil {
		t.Skipf("SKIPPED: %v", err)
	}
	renderOnce.Do(func() {
		rendered, renderErr = Render(context.Background(), bin, filepath.Join(root, "terraform", "modules", "plan"), testVars)
	})
	if renderErr != nil {
		t.Fatal(renderErr)
	}
	return rendered
}

// need skips the test when a command is missing.
func need(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			t.Skipf("SKIPPED: no %s here", name)
		}
	}
}

// unitFiles returns the paths of the unit files (not drop-ins) in files.
func unitFiles(files map[string]string) []string {
	var units []string
	for p := range files {
		if path.Dir(p) == "/etc/systemd/system" && unitName.MatchString(p) {
			units = append(units, p)
		}
	}
	slices.Sort(units)
	return units
}

// installed returns the units among files that an [Install] section puts
// under a target, which systemctl enable makes start at every boot.
func installed(files map[string]string) []string {
	var names []string
	for _, p := range unitFiles(files) {
		if installSection.MatchString(files[p]) {
			names = append(names, path.Base(p))
		}
	}
	return names
}

// TestUnitsVerify runs systemd-analyze verify on every unit each kind of
// node gets, in a root laid out as the node's: the rendered units, scripts
// and drop-ins, this machine's own vendor units (targets, fsck, ...), and on
// a server the mount unit that systemd's real fstab generator makes of the
// line data-volume.sh writes. verify loads each unit with its drop-ins and
// the units it pulls in, checks every ExecStart= command is executable and
// builds the start transaction (a missing or cyclic dependency fails).
// systemd-analyze exits 0 on unknown keys or unparsable values, so any
// output at all fails the test.
//
// Stand-ins: /usr/bin/consul and /usr/bin/nomad, which the nodes install
// from HashiCorp's apt repository, are empty scripts (verify only checks
// that a command is executable); there is no systemd running here (PID 1
// is not systemd), so the units are verified, not started.
func TestUnitsVerify(t *testing.T) {
	need(t, "systemd-analyze")
	out := render(t)

	t.Run("verify_reports_a_broken_unit", func(t *testing.T) {
		t.Parallel()
		root := nodeRoot(t, map[string]string{
			"/etc/systemd/system/broken.service": "[Unit]\nRequires=missing.service\n[Service]\nType=bogus\nExecStart=/bin/true\nNoSuchKey=1\n",
		})
		got := verify(t, root, []string{"/etc/systemd/system/broken.service"})
		for _, want := range []string{"bogus", "NoSuchKey", "missing.service"} {
			if !strings.Contains(got, want) {
				t.Errorf("systemd-analyze verify did not report %q:\n%s", want, got)
			}
		}
	})

	for _, kind := range slices.Sorted(maps.Keys(out.Files)) {
		files := out.Files[kind]
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			root := nodeRoot(t, files)
			units := unitFiles(files)
			if kind == "server" {
				units = append(units, fstabMount(t, root, files["/opt/slm-mesh/data-volume.sh"]))
			}
			if got := verify(t, root, units); got != "" {
				t.Errorf("systemd-analyze verify %s:\n%s", strings.Join(units, " "), got)
			}
		})
	}
}

// nodeRoot lays out files under a temporary root with the machine's vendor
// units, and makes every command the units run exist there.
func nodeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	// A merged /usr, as on Ubuntu and Debian.
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/lib/systemd", "etc/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"bin", "sbin", "lib"} {
		if err := os.Symlink("usr/"+l, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	vendor := ""
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			vendor = d
			break
		}
	}
	if vendor == "" {
		t.Skip("SKIPPED: no systemd unit directory here")
	}
	if b, err := exec.Command("cp", "-a", vendor, filepath.Join(root, "usr", "lib", "systemd")).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v: %s", vendor, err, b)
	}
	for p, content := range files {
		// As cloud-init writes them (the plan gives scripts 0700).
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, ".sh") {
			mode = 0o700
		}
		write(t, filepath.Join(root, p), content, mode)
	}

	for p, content := range files {
		if !strings.HasPrefix(p, "/etc/systemd/system/") {
			continue
		}
		for _, m := range execLine.FindAllStringSubmatch(content, -1) {
			cmd := m[1]
			dst := filepath.Join(root, cmd)
			if _, err := os.Stat(dst); err == nil {
				continue
			}
			body, err := os.ReadFile(cmd)
			if err != nil {
				// Installed on the node, not here: consul, nomad.
				body = []byte("#!/bin/sh\nexit 0\n")
			}
			write(t, dst, string(body), 0o755)
		}
	}
	return root
}

// fstabMount turns the fstab line that script writes into a mount unit in
// root with systemd's own fstab generator, and returns the unit's path.
func fstabMount(t *testing.T, root, script string) string {
	t.Helper()
	m := fstabLine.FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("data-volume.sh writes no fstab line:\n%s", script)
	}
	generator := ""
	for _, g := range []string{"/usr/lib/systemd/system-generators/systemd-fstab-generator", "/lib/systemd/system-generators/systemd-fstab-generator"} {
		if _, err := os.Stat(g); err == nil {
			generator = g
			break
		}
	}
	if generator == "" {
		t.Skip("SKIPPED: no systemd-fstab-generator here")
	}
	dir := t.TempDir()
	fstab := filepath.Join(dir, "fstab")
	write(t, fstab, "UUID=0b4c8a4e-3c44-4c1f-9d5e-3f2a1b0c9d8e "+m[1]+"\n", 0o644)
	out := filepath.Join(root, "etc", "systemd", "system")
	cmd := exec.Command(generator, out, out, out)
	cmd.Env = append(os.Environ(), "SYSTEMD_FSTAB="+fstab, "SYSTEMD_PROC_CMDLINE=")
	if b, err := cmd.CombinedOutput(); err != nil || len(b) > 0 {
		t.Fatalf("systemd-fstab-generator: %v: %s", err, b)
	}
	mountPoint := strings.Fields(m[1])[0]
	unit := strings.ReplaceAll(strings.TrimPrefix(mountPoint, "/"), "-", `\x2d`)
	unit = strings.ReplaceAll(unit, "/", "-") + ".mount"
	p := "/etc/systemd/system/" + unit
	content, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		t.Fatalf("the generator made no mount unit for %s: %v", mountPoint, err)
	}
	// nofail: the boot does not wait for (nor fail with) the volume; the
	// agents' drop-ins require it instead.
	if _, err := os.Stat(filepath.Join(out, "local-fs.target.requires", unit)); err == nil {
		t.Errorf("%s is required by local-fs.target: a missing volume would stop the boot", unit)
	}
	if !strings.Contains(string(content), "Where="+mountPoint+"\n") {
		t.Errorf("%s:\n%s", unit, content)
	}
	return p
}

// verify runs systemd-analyze verify on units (absolute paths inside root)
// and returns everything it printed.
func verify(t *testing.T, root string, units []string) string {
	t.Helper()
	args := append([]string{"verify", "--root=" + root, "--man=no"}, units...)
	b, err := exec.Command("systemd-analyze", args...).CombinedOutput()
	got := strings.TrimSpace(string(b))
	if err != nil && got == "" {
		return err.Error()
	}
	return got
}

func write(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// stubSystemctl stands in for systemctl, as there is no systemd here to
// start units. It records every call in $NODEBOOT_LOG, one line each, and
// answers a start that would wait (no --no-block) for a unit that never
// becomes ready as the real one does once the start times out: with an
// error. The units are those of a client whose Consul servers are not up:
// a Type=notify unit (consul.service: ready once joined) never gets ready,
// nor does a unit ordered after one. It fails at once instead of waiting
// out the timeout (90 s by default, none with TimeoutStartSec=infinity).
const stubSystemctl = `#!/bin/bash
echo "$*" >>"$NODEBOOT_LOG"
block=true now=false cmd="" units=()
for a in "$@"; do
  case $a in
  --no-block) block=false ;;
  --now) now=true ;;
  -*) ;;
  *) if [ -z "$cmd" ]; then cmd=$a; else units+=("$a"); fi ;;
  esac
done
case $cmd in
start | restart) ;;
enable) $now || exit 0 ;;
*) exit 0 ;;
esac
$block || exit 0
# unit U [dropins]: the unit file and its drop-ins.
unit() { cat "$NODEBOOT_UNITS/$1" "$NODEBOOT_UNITS/$1.d/"*.conf 2>/dev/null; }
notify() { unit "$1" | grep -qx 'Type=notify'; }
for u in "${units[@]}"; do
  waits=false
  notify "$u" && waits=true
  for dep in $(unit "$u" | sed -n 's/^After=//p'); do
    notify "$dep" && waits=true
  done
  if $waits; then
    echo "BLOCKED $u" >>"$NODEBOOT_LOG"
    echo "Job for $u failed because a timeout was exceeded." >&2
    exit 1
  fi
done
`

// TestInstallStartsEveryUnit runs the end of each kind's rendered install.sh
// (from its last systemctl daemon-reload on, under the script's own set -euo
// pipefail) with systemctl standing in (stubSystemctl), on a node whose
// Consul never gets ready. Every unit a boot should start must be enabled,
// all of them before any is started, and started without waiting: the
// defect was `systemctl enable --now consul.service` failing under set -e on
// a client booting before its servers, so nomad.service was never enabled,
// not even for the next boot.
//
// Stand-ins: systemctl (no systemd runs here); consul and nomad, whose
// validate commands read /etc/consul.d and /etc/nomad.d of the node, exit 0.
func TestInstallStartsEveryUnit(t *testing.T) {
	need(t, "bash")
	out := render(t)
	for _, kind := range slices.Sorted(maps.Keys(out.Files)) {
		files := out.Files[kind]
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			script := files["/opt/slm-mesh/install.sh"]
			if !strings.Contains(script, "\nset -euo pipefail\n") {
				t.Fatal("install.sh does not run under set -euo pipefail")
			}
			i := strings.LastIndex(script, "\nsystemctl daemon-reload\n")
			if i < 0 {
				t.Fatal("install.sh has no systemctl daemon-reload")
			}
			dir := t.TempDir()
			stubs, units := filepath.Join(dir, "bin"), filepath.Join(dir, "units")
			logPath := filepath.Join(dir, "systemctl.log")
			write(t, filepath.Join(stubs, "systemctl"), stubSystemctl, 0o755)
			write(t, filepath.Join(stubs, "consul"), "#!/bin/sh\nexit 0\n", 0o755)
			write(t, filepath.Join(stubs, "nomad"), "#!/bin/sh\nexit 0\n", 0o755)
			for p, content := range files {
				if rel, ok := strings.CutPrefix(p, "/etc/systemd/system/"); ok {
					write(t, filepath.Join(units, rel), content, 0o644)
				}
			}
			tail := filepath.Join(dir, "tail.sh")
			write(t, tail, "#!/bin/bash\nset -euo pipefail\n"+script[i+1:], 0o755)

			cmd := exec.Command("bash", tail)
			cmd.Env = append(os.Environ(), "PATH="+stubs+":"+os.Getenv("PATH"), "NODEBOOT_LOG="+logPath, "NODEBOOT_UNITS="+units)
			var output bytes.Buffer
			cmd.Stdout, cmd.Stderr = &output, &output
			runErr := cmd.Run()
			logged, _ := os.ReadFile(logPath)
			calls := strings.Split(strings.TrimSpace(string(logged)), "\n")
			t.Logf("systemctl calls:\n%s", logged)
			if runErr != nil {
				t.Errorf("install.sh's last step failed: %v\n%s", runErr, output.Bytes())
			}

			// What each call did: enabled (before any start?) and started.
			enabled, started := map[string]bool{}, map[string]bool{}
			firstStart := -1
			for n, call := range calls {
				f := strings.Fields(call)
				if len(f) == 0 {
					continue
				}
				var names []string
				for _, a := range f[1:] {
					if !strings.HasPrefix(a, "-") {
						names = append(names, a)
					}
				}
				switch {
				case f[0] == "BLOCKED":
					t.Errorf("systemctl waited for %s, which never gets ready", f[1])
				case f[0] == "enable":
					for _, u := range names {
						enabled[u] = true
						if firstStart >= 0 {
							t.Errorf("%s was enabled after a unit was started (call %d: %q)", u, n, call)
						}
					}
					if slices.Contains(f, "--now") {
						for _, u := range names {
							started[u] = true
						}
						if firstStart < 0 {
							firstStart = n
						}
					}
				case f[0] == "start" || f[0] == "restart":
					for _, u := range names {
						started[u] = true
					}
					if firstStart < 0 {
						firstStart = n
					}
				}
			}
			want := installed(files)
			if !slices.Contains(want, "nomad.service") || !slices.Contains(want, "consul.service") {
				t.Fatalf("the units installed for boot lack consul.service or nomad.service: %v", want)
			}
			for _, u := range want {
				if !enabled[u] {
					t.Errorf("%s is never enabled: a reboot would not start it", u)
				}
				if !started[u] {
					t.Errorf("%s is never started", u)
				}
			}
		})
	}
}

// inNamespace runs data-volume.sh in a mount namespace of its own, where
// the node's paths are the test's: /etc is an overlay (the volume id file,
// fstab), /opt a tmpfs, /dev a tmpfs with copies of a few device nodes and
// of the two loop devices, and /dev/disk/by-id the links udev makes on a
// Nitro instance. Nothing of it is visible outside. Before runs first
// (bash); after prints key=value lines about the result, which it returns.
func inNamespace(t *testing.T, env map[string]string, before, after string) map[string]string {
	t.Helper()
	const ns = `set -euo pipefail
mount -t tmpfs tmpfs "$T"
mkdir -p "$T/etc-up" "$T/etc-work" "$T/dev/disk/by-id"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$T/etc-up,workdir=$T/etc-work" /etc
mount -t tmpfs tmpfs /opt
if [ -n "$ID_FILE" ]; then
  mkdir -p /etc/slm-mesh
  echo "$ID_FILE" >/etc/slm-mesh/data-volume-id
fi
cp -a /dev/null /dev/zero /dev/urandom /dev/random "$EBS" "$STORE" "$T/dev/"
# What udev names an EBS volume and an instance-store disk on Nitro.
ln -s "../../$(basename "$EBS")" "$T/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$(printf '%s' "$LINK_ID" | tr -d -)"
ln -s "../../$(basename "$STORE")" "$T/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_AWS1F2E3D4C5B6A7980"
mount --bind "$T/dev" /dev
eval "$BEFORE"
rc=0
for i in $(seq 1 "$RUNS"); do
  PATH="$STUBS:$PATH" bash "$SCRIPT" || { rc=$?; break; }
done
echo "rc=$rc"
eval "$AFTER"
`
	dir := t.TempDir()
	write(t, filepath.Join(dir, "ns.sh"), ns, 0o755)
	// Stand-in: systemctl daemon-reload only makes systemd read the new
	// fstab line; no systemd runs here.
	write(t, filepath.Join(dir, "bin", "systemctl"), "#!/bin/sh\nexit 0\n", 0o755)
	write(t, filepath.Join(dir, "data-volume.sh"), render(t).Files["server"]["/opt/slm-mesh/data-volume.sh"], 0o700)
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "bash", filepath.Join(dir, "ns.sh"))
	cmd.Env = append(os.Environ(),
		"T="+filepath.Join(dir, "tmp"), "STUBS="+filepath.Join(dir, "bin"), "SCRIPT="+filepath.Join(dir, "data-volume.sh"),
		"BEFORE="+before, "AFTER="+after)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("namespace: %v\n%s%s", err, stdout.Bytes(), stderr.Bytes())
	}
	t.Logf("data-volume.sh:\n%s", stderr.Bytes())
	got := map[string]string{"stderr": stderr.String()}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			got[k] = v
		}
	}
	return got
}

// loopDevice attaches a blank sparse file of 64 MiB as a loop device.
func loopDevice(t *testing.T, name string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), name+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	b, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("SKIPPED: no loop device here: losetup: %v: %s", err, b)
	}
	dev := strings.TrimSpace(string(b))
	t.Cleanup(func() {
		if b, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, b)
		}
	})
	return dev
}

// TestDataVolume runs a server's rendered data-volume.sh for real (real
// mkfs.ext4, blkid, mount and fstab) against two loop devices: one is the
// EBS data volume, linked under /dev/disk/by-id by its volume id as udev
// does on Nitro; the other stands for an instance-store NVMe disk, blank
// too, which must never be touched. The defect was a lookup that took any
// disk but the root disk, and could format the instance store.
//
// Stand-ins: loop devices for the NVMe disks and the by-id links udev would
// make for them; systemctl (daemon-reload), as no systemd runs here. Not
// run: a volume never attached (the script waits ten minutes for it) and
// the Xen device name (this machine has no /sys/hypervisor/type to fake).
func TestDataVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root (loop devices, mount namespaces)")
	}
	need(t, "unshare", "losetup", "mkfs.ext4", "blkid", "lsblk", "findmnt", "mountpoint")
	if b, err := exec.Command("unshare", "--mount", "true").CombinedOutput(); err != nil {
		t.Skipf("SKIPPED: no mount namespace here: %v: %s", err, b)
	}
	render(t)
	ebs, store := loopDevice(t, "ebs"), loopDevice(t, "instance-store")
	env := map[string]string{"EBS": ebs, "STORE": store, "LINK_ID": testVolumeID, "ID_FILE": testVolumeID, "RUNS": "1"}
	with := func(kv ...string) map[string]string {
		e := maps.Clone(env)
		for i := 0; i < len(kv); i += 2 {
			e[kv[i]] = kv[i+1]
		}
		return e
	}
	const report = `echo "source=$(findmnt -no SOURCE /opt/slm-data || true)"
echo "fstab=$(grep -c ' /opt/slm-data ext4 defaults,nofail' /etc/fstab || true)"
echo "label=$(blkid -p -s LABEL -o value "$EBS" || true)"
echo "uuid=$(blkid -p -s UUID -o value "$EBS" || true)"
rc=0; blkid -p "$STORE" >/dev/null 2>&1 || rc=$?; echo "store=$rc"
echo "marker=$(cat /opt/slm-data/marker 2>/dev/null || true)"`

	// Without the id in user data nothing is touched and the script fails,
	// so install.sh stops before it enables the agents.
	got := inNamespace(t, with("ID_FILE", ""), "", report)
	if got["rc"] == "0" || got["label"] != "" || got["store"] != "2" || got["source"] != "" {
		t.Errorf("no volume id: %v", got)
	}

	// First boot: the blank volume is formatted and mounted, the blank
	// instance-store disk left alone; a second run (install.sh run again)
	// changes nothing.
	got = inNamespace(t, with("RUNS", "2"), "", report+"\necho raft >/opt/slm-data/marker")
	if got["rc"] != "0" || got["source"] != ebs || got["label"] != "slm-data" || got["fstab"] != "1" || got["store"] != "2" {
		t.Errorf("first boot: want %s formatted (slm-data) and mounted with one fstab line, the instance store blank (2); got %v", ebs, got)
	}
	uuid := got["uuid"]

	// A replacement instance (fresh /etc) mounts the same file system: not
	// formatted again, the data still there.
	got = inNamespace(t, env, "", report)
	if got["rc"] != "0" || got["source"] != ebs || got["uuid"] != uuid || got["marker"] != "raft" || got["fstab"] != "1" {
		t.Errorf("replacement: want %s mounted with uuid %s and its data; got %v", ebs, uuid, got)
	}

	// A volume id whose disk is mounted elsewhere (a misconfiguration
	// naming the root volume, say) is refused.
	got = inNamespace(t, env, `mkdir -p /opt/elsewhere && mount "$EBS" /opt/elsewhere`, report)
	if got["rc"] == "0" || !strings.Contains(got["stderr"], "mounted elsewhere") {
		t.Errorf("disk in use: %v", got)
	}
}

// TestConfigsValidateBeforeSecrets runs the real consul validate and nomad
// config validate on each kind's rendered agent configurations as install.sh
// does: before slm-secrets.service has written the gossip keys, the tokens
// and the TLS files. install.sh reports a failure in its exit status, so a
// check that cannot pass without the secrets would mark every boot failed.
// The agents here are the project's pinned builds (tools/consul,
// tools/nomad), not the versions the nodes install from HashiCorp's apt
// repository; the test is skipped where they are not built.
func TestConfigsValidateBeforeSecrets(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	consul, err := consulagent.FindBinary(root)
	if err != nil {
		t.Skipf("SKIPPED: %v", err)
	}
	nomad := nomadtest.Binary(t)
	out := render(t)
	for _, kind := range slices.Sorted(maps.Keys(out.Files)) {
		files := out.Files[kind]
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for p, content := range files {
				// install.sh moves /etc/slm-mesh/{consul,nomad}/*.hcl into
				// /etc/consul.d and /etc/nomad.d.
				if agent, ok := strings.CutPrefix(path.Dir(p), "/etc/slm-mesh/"); ok && (agent == "consul" || agent == "nomad") {
					write(t, filepath.Join(dir, agent, path.Base(p)), content, 0o600)
				}
			}
			for _, args := range [][]string{
				{consul, "validate", filepath.Join(dir, "consul")},
				{nomad, "config", "validate", filepath.Join(dir, "nomad")},
			} {
				if b, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
					t.Errorf("%s: %v\n%s", strings.Join(args, " "), err, b)
				}
			}
		})
	}
}

// unitDeps reads what the boot model needs of a unit, with its drop-ins:
// Type=, TimeoutStartSec=, and the units in After=, Before= and Requires=.
type unitDeps struct {
	notify, noTimeout       bool
	after, before, requires []string
}

func readUnit(files map[string]string, name string) unitDeps {
	var u unitDeps
	texts := []string{files["/etc/systemd/system/"+name]}
	for p, content := range files {
		if path.Dir(p) == "/etc/systemd/system/"+name+".d" {
			texts = append(texts, content)
		}
	}
	for _, text := range texts {
		for _, line := range strings.Split(text, "\n") {
			key, value, ok := strings.Cut(strings.TrimSpace(line), "=")
			if !ok {
				continue
			}
			switch key {
			case "Type":
				u.notify = value == "notify"
			case "TimeoutStartSec":
				u.noTimeout = value == "infinity" || value == "0"
			case "After":
				u.after = append(u.after, strings.Fields(value)...)
			case "Before":
				u.before = append(u.before, strings.Fields(value)...)
			case "Requires":
				u.requires = append(u.requires, strings.Fields(value)...)
			}
		}
	}
	return u
}

// TestBootStartsNomad follows, on each kind of node, the start jobs of every
// enabled unit at a boot (install.sh's start and every reboot alike) when
// Consul's servers never come up. It is a model of systemd's job ordering,
// as no systemd runs here: a Type=notify unit (consul.service) never gets
// ready, so its start job never ends without a start timeout, or fails at
// the timeout; a unit ordered After= a job that never ends never starts; a
// unit that Requires= a failed one fails. Units outside the node's own
// (targets, mounts) are taken as done. Nomad must start regardless.
func TestBootStartsNomad(t *testing.T) {
	out := render(t)
	for _, kind := range slices.Sorted(maps.Keys(out.Files)) {
		files := out.Files[kind]
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			boot := installed(files)
			const (
				active  = "active"
				waiting = "waiting forever"
				failed  = "failed"
			)
			state := map[string]string{}
			var resolve func(name string, seen []string) string
			resolve = func(name string, seen []string) string {
				if s, ok := state[name]; ok {
					return s
				}
				if !slices.Contains(boot, name) || slices.Contains(seen, name) {
					return active
				}
				u := readUnit(files, name)
				// B's Before=A orders A after B, as A's After=B does.
				for _, other := range boot {
					if slices.Contains(readUnit(files, other).before, name) {
						u.after = append(u.after, other)
					}
				}
				s := active
				if u.notify {
					s = failed
					if u.noTimeout {
						s = waiting
					}
				}
				for _, dep := range u.after {
					switch resolve(dep, append(seen, name)) {
					case waiting:
						s = waiting
					case failed:
						if slices.Contains(u.requires, dep) && s != waiting {
							s = failed
						}
					}
				}
				state[name] = s
				return s
			}
			for _, name := range boot {
				resolve(name, nil)
			}
			t.Logf("with Consul never ready: %v", state)
			if state["consul.service"] == active {
				t.Fatal("the model has Consul ready; it must not be")
			}
			if state["nomad.service"] != active {
				t.Errorf("nomad.service is %s while Consul is not ready", state["nomad.service"])
			}
		})
	}
}

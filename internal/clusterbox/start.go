package clusterbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// notifyDir holds the sd_notify sockets of Type=notify units; readable by
// every user, as a unit's User= must reach it.
const notifyDir = "/run/slmbox-notify"

// oneshotAttempts bounds how often a failing oneshot with Restart=on-failure
// is run (systemd would go on; the box reports the failure instead).
const oneshotAttempts = 5

// Proc is a long-running process the box started for a unit.
type Proc struct {
	Host string `json:"host"`
	Unit string `json:"unit"`
	Pid  int    `json:"pid"`
}

// unitEnv is the environment of every unit's commands: systemd's for
// services, the box's bin directory first on PATH, and the AWS credentials
// that stand in for the instance role (the emulator takes any).
func (b *Box) unitEnv() []string {
	return []string{
		"PATH=" + b.binDir() + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
		"HOME=/root",
		"AWS_ACCESS_KEY_ID=" + emulatorKeyID,
		"AWS_SECRET_ACCESS_KEY=" + emulatorSecret,
	}
}

// startUnits starts a host's boot units as systemd would: each once the
// units it is ordered after have started (a oneshot has exited, a notify
// service has said READY=1), a unit whose Requires= failed not at all. It
// returns when every unit has started or one has failed.
func (b *Box) startUnits(ctx context.Context, h *Host, units []*Unit) error {
	deps := startDeps(units)
	for _, u := range units {
		for _, r := range u.RequiredBy {
			for _, v := range units {
				if v.Name == r {
					v.Requires = append(v.Requires, u.Name)
				}
			}
		}
	}
	type result struct {
		done chan struct{}
		err  error
	}
	results := map[string]*result{}
	for _, u := range units {
		results[u.Name] = &result{done: make(chan struct{})}
	}
	var wg sync.WaitGroup
	for _, u := range units {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := results[u.Name]
			defer close(r.done)
			for _, d := range deps[u.Name] {
				select {
				case <-results[d].done:
				case <-ctx.Done():
					r.err = ctx.Err()
					return
				}
			}
			for _, req := range u.Requires {
				if rr := results[req]; rr != nil {
					<-rr.done
					if rr.err != nil {
						r.err = fmt.Errorf("%s: dependency %s failed", u.Name, req)
						return
					}
				}
			}
			r.err = b.startUnit(ctx, h, u)
		}()
	}
	wg.Wait()
	var errs []error
	for _, u := range units {
		if err := results[u.Name].err; err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", h.Name, u.Name, err))
		}
	}
	return errors.Join(errs...)
}

// startUnit starts one unit on h.
func (b *Box) startUnit(ctx context.Context, h *Host, u *Unit) error {
	if ok, err := b.conditionsHold(ctx, h, u); !ok {
		return err
	}
	uid, gid, err := b.accounts.ids(u.User, u.Group)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(h.LogDir(), u.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	for _, pre := range u.ExecStartPre {
		argv, mayFail := b.command(pre)
		if err := b.runInHost(ctx, h, uid, gid, argv, logf); err != nil && !mayFail {
			return fmt.Errorf("ExecStartPre %s: %w", strings.Join(argv, " "), err)
		}
	}
	if len(u.ExecStart) != 1 && u.Type != "oneshot" {
		return fmt.Errorf("want one ExecStart, have %d", len(u.ExecStart))
	}
	start := time.Now()
	switch u.Type {
	case "oneshot":
		err = b.runOneshot(ctx, h, u, uid, gid, logf)
	case "notify":
		err = b.startNotify(ctx, h, u, uid, gid, logf)
	default:
		argv, _ := b.command(u.ExecStart[0])
		_, err = b.spawn(h, u.Name, uid, gid, argv, nil, logf)
	}
	if err == nil {
		b.logf("%s: %s started (%s after its dependencies)", h.Name, u.Name, time.Since(start).Round(100*time.Millisecond))
	}
	return err
}

// runOneshot runs the unit's commands to completion, again after
// RestartSec when Restart=on-failure says so.
func (b *Box) runOneshot(ctx context.Context, h *Host, u *Unit, uid, gid int, logf *os.File) error {
	delay, _ := time.ParseDuration(u.RestartSec + "s")
	if d, err := time.ParseDuration(u.RestartSec); err == nil {
		delay = d
	}
	var err error
	for attempt := 1; attempt <= oneshotAttempts; attempt++ {
		err = nil
		for _, c := range u.ExecStart {
			argv, mayFail := b.command(c)
			if e := b.runInHost(ctx, h, uid, gid, argv, logf); e != nil && !mayFail {
				err = fmt.Errorf("%s: %w (log %s)", strings.Join(argv, " "), e, logf.Name())
				break
			}
		}
		if err == nil || u.Restart != "on-failure" && u.Restart != "always" {
			return err
		}
		b.logf("%s: %s failed (attempt %d), again in %s: %v", h.Name, u.Name, attempt, delay, err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

// startNotify starts a Type=notify service and waits until it sends
// READY=1 to its NOTIFY_SOCKET, as systemd does before starting the units
// ordered after it, or until the process exits.
func (b *Box) startNotify(ctx context.Context, h *Host, u *Unit, uid, gid int, logf *os.File) error {
	if err := os.MkdirAll(notifyDir, 0o755); err != nil {
		return err
	}
	sock := filepath.Join(notifyDir, h.Name+"-"+u.Name)
	_ = os.Remove(sock)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer func() { conn.Close(); os.Remove(sock) }()
	if err := os.Chmod(sock, 0o666); err != nil {
		return err
	}
	argv, _ := b.command(u.ExecStart[0])
	exited, err := b.spawn(h, u.Name, uid, gid, argv, []string{"NOTIFY_SOCKET=" + sock}, logf)
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line == "READY=1" {
					close(ready)
					return
				}
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("exited before it was ready (log %s)", logf.Name())
	case <-ctx.Done():
		return fmt.Errorf("not ready: %w", ctx.Err())
	}
}

// command turns an Exec line into the argv the box runs, and whether a
// failure is allowed ("-" prefix). The packages' binaries (/usr/bin/consul,
// /usr/bin/nomad) are the box's builds.
func (b *Box) command(line []string) (argv []string, mayFail bool) {
	argv = append([]string(nil), line...)
	for len(argv[0]) > 0 && strings.ContainsRune("-@+!:", rune(argv[0][0])) {
		mayFail = mayFail || argv[0][0] == '-'
		argv[0] = argv[0][1:]
	}
	switch argv[0] {
	case "/usr/bin/consul":
		argv[0] = filepath.Join(b.binDir(), "consul")
	case "/usr/bin/nomad":
		argv[0] = filepath.Join(b.binDir(), "nomad")
	}
	return argv, mayFail
}

// runInHost runs argv on h as uid:gid to completion, output to w.
func (b *Box) runInHost(ctx context.Context, h *Host, uid, gid int, argv []string, w io.Writer) error {
	cmd := exec.CommandContext(ctx, "nsenter", append(h.enter(uid, gid)[1:], argv...)...)
	cmd.Env = b.unitEnv()
	cmd.Stdout, cmd.Stderr = w, w
	return cmd.Run()
}

// spawn starts argv on h as a long-running process in a session of its
// own (it outlives this program), records it, and returns a channel closed
// when it exits (while this program runs).
func (b *Box) spawn(h *Host, unit string, uid, gid int, argv, env []string, w *os.File) (<-chan struct{}, error) {
	cmd := exec.Command("nsenter", append(h.enter(uid, gid)[1:], argv...)...)
	cmd.Env = append(b.unitEnv(), env...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = detached()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.state.Procs = append(b.state.Procs, Proc{Host: h.Name, Unit: unit, Pid: cmd.Process.Pid})
	b.mu.Unlock()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	return exited, nil
}

// detached puts a process in a session of its own, away from the
// terminal's signals: the box's processes outlive `box up`.
func detached() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

// conditionsHold evaluates the unit's Condition*= (false: the unit is
// skipped) and Assert*= (an error: the unit fails), and checks that every
// RequiresMountsFor= path is a mount point.
func (b *Box) conditionsHold(ctx context.Context, h *Host, u *Unit) (bool, error) {
	for _, c := range u.Conditions {
		holds, err := b.pathTest(ctx, h, c)
		if err != nil {
			return false, err
		}
		if !holds {
			b.logf("%s: %s skipped: Condition%s does not hold", h.Name, u.Name, c)
			return false, nil
		}
	}
	for _, a := range u.Asserts {
		holds, err := b.pathTest(ctx, h, a)
		if err != nil {
			return false, err
		}
		if !holds {
			return false, fmt.Errorf("Assert%s failed", a)
		}
	}
	for _, p := range u.RequiresMountsFor {
		if holds, _ := b.pathTest(ctx, h, "PathIsMountPoint="+p); !holds {
			return false, fmt.Errorf("RequiresMountsFor=%s: not a mount point", p)
		}
	}
	return true, nil
}

// pathTest evaluates a condition such as "PathExists=!/var/lib/x" on h.
func (b *Box) pathTest(ctx context.Context, h *Host, cond string) (bool, error) {
	key, value, _ := strings.Cut(cond, "=")
	negate := strings.HasPrefix(value, "!")
	p := strings.TrimPrefix(value, "!")
	var holds bool
	switch key {
	case "PathExists":
		_, err := os.Stat(h.Path(p))
		holds = err == nil
	case "DirectoryNotEmpty":
		entries, err := os.ReadDir(h.Path(p))
		holds = err == nil && len(entries) > 0
	case "PathIsMountPoint":
		holds = b.runInHost(ctx, h, 0, 0, []string{"mountpoint", "-q", p}, io.Discard) == nil
	default:
		return false, fmt.Errorf("the box cannot evaluate %s", cond)
	}
	return holds != negate, nil
}

package bench

import (
	"errors"
	"fmt"
	"math"
	"runtime"

	"github.com/prometheus/procfs"
)

// Memory is the resident memory of one or more processes, summed.
type Memory struct {
	RSS  int64 // VmRSS, bytes
	Peak int64 // VmHWM (the peak of VmRSS since the process started), bytes
}

// errNoMemory is a /proc/PID/status without memory lines: a kernel thread,
// or a process that has exited and not yet been reaped. procfs reads their
// absence as 0, which would pass for a process using no memory.
var errNoMemory = errors.New("no VmRSS/VmHWM (a kernel thread, or a process that has exited?)")

// ReadMemory reads VmRSS and VmHWM from /proc/PID/status for each pid and
// sums them. Linux only.
func ReadMemory(pids ...int) (Memory, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return Memory{}, err
	}
	return readMemory(fs, pids...)
}

// readMemory is ReadMemory on the proc filesystem fs.
func readMemory(fs procfs.FS, pids ...int) (Memory, error) {
	var m Memory
	for _, pid := range pids {
		p, err := fs.Proc(pid)
		if err != nil {
			return Memory{}, err
		}
		s, err := p.NewStatus()
		if err != nil {
			return Memory{}, fmt.Errorf("/proc/%d/status: %w", pid, err)
		}
		// VmHWM is at least one page in any process that has run.
		if s.VmHWM == 0 {
			return Memory{}, fmt.Errorf("/proc/%d/status: %w", pid, errNoMemory)
		}
		m.RSS += int64(s.VmRSS)
		m.Peak += int64(s.VmHWM)
	}
	return m, nil
}

// LoadAverage is the 1-minute load average, NaN where unknown.
func LoadAverage() float64 {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return math.NaN()
	}
	l, err := fs.LoadAvg()
	if err != nil {
		return math.NaN()
	}
	return l.Load1
}

// Machine describes where a measurement ran: CPUs, CPU model, kernel load.
func Machine() string {
	model, load := "unknown CPU", "unknown"
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if cpus, err := fs.CPUInfo(); err == nil && len(cpus) > 0 && cpus[0].ModelName != "" {
			model = cpus[0].ModelName
		}
		if l, err := fs.LoadAvg(); err == nil {
			load = fmt.Sprintf("%.2f %.2f %.2f", l.Load1, l.Load5, l.Load15)
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s/%s, %s, load average %s",
		runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version(), load)
}

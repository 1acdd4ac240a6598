package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Memory is the resident memory of one or more processes, summed.
type Memory struct {
	RSS  int64 // VmRSS, bytes
	Peak int64 // VmHWM (the peak of VmRSS since the process started), bytes
}

// ReadMemory reads VmRSS and VmHWM from /proc/PID/status for each pid and
// sums them. Linux only.
func ReadMemory(pids ...int) (Memory, error) {
	var m Memory
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			return Memory{}, err
		}
		one, err := parseStatus(b)
		if err != nil {
			return Memory{}, fmt.Errorf("/proc/%d/status: %w", pid, err)
		}
		m.RSS += one.RSS
		m.Peak += one.Peak
	}
	return m, nil
}

// parseStatus reads VmRSS and VmHWM ("VmHWM:   123456 kB") from the text of
// /proc/PID/status.
func parseStatus(b []byte) (Memory, error) {
	var m Memory
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("unexpected %s line %q", key, sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("%s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.Peak = kb << 10
		}
		seen++
	}
	if seen < 2 {
		return Memory{}, fmt.Errorf("no VmRSS/VmHWM (a kernel thread?)")
	}
	return m, nil
}

// LoadAverage is the 1-minute load average, NaN where unknown.
func LoadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return math.NaN()
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return math.NaN()
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// Machine describes where a measurement ran: CPUs, CPU model, kernel load.
func Machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	load := "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s/%s, %s, load average %s",
		runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version(), load)
}

package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/bench"
)

// Proc is a service process whose resources are watched across the run.
type Proc struct {
	// Name labels the process in the report ("gateway", "inference-1").
	Name string
	// PID, when not 0, is read in /proc for RSS, descriptors and threads.
	PID int
	// MetricsAddr, when set, is the host:port whose /metrics gives the
	// process's go_goroutines.
	MetricsAddr string
}

// Stats is what a process holds at one moment. A figure that could not be
// read is -1, and Errors says why.
type Stats struct {
	RSS        int64 // resident bytes
	Goroutines int
	FDs        int // open file descriptors
	Threads    int
	Errors     []string
}

// ReadStats reads p's figures now. httpc fetches /metrics.
func ReadStats(ctx context.Context, httpc *http.Client, p Proc) Stats {
	s := Stats{RSS: -1, Goroutines: -1, FDs: -1, Threads: -1}
	note := func(what string, err error) { s.Errors = append(s.Errors, fmt.Sprintf("%s: %v", what, err)) }
	if p.PID != 0 {
		if m, err := bench.ReadMemory(p.PID); err != nil {
			note("RSS", err)
		} else {
			s.RSS = m.RSS
		}
		var err error
		if s.FDs, err = countDir(fmt.Sprintf("/proc/%d/fd", p.PID)); err != nil {
			note("descriptors", err)
		}
		if s.Threads, err = countDir(fmt.Sprintf("/proc/%d/task", p.PID)); err != nil {
			note("threads", err)
		}
	}
	if p.MetricsAddr != "" {
		var err error
		if s.Goroutines, err = goroutines(ctx, httpc, p.MetricsAddr); err != nil {
			note("goroutines", err)
		}
	}
	return s
}

// countDir counts the entries of a /proc directory; -1 on error.
func countDir(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return -1, err
	}
	return len(entries), nil
}

// errNoGoroutines is a /metrics without the Go collector's go_goroutines.
var errNoGoroutines = errors.New("no go_goroutines in /metrics (the Go collector is not registered)")

// goroutines reads go_goroutines from the Prometheus text at
// http://addr/metrics; -1 on error.
func goroutines(ctx context.Context, httpc *http.Client, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return -1, err
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return -1, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return -1, fmt.Errorf("go_goroutines %q: %w", v, err)
			}
			return int(f), nil
		}
	}
	if err := sc.Err(); err != nil {
		return -1, err
	}
	return -1, errNoGoroutines
}

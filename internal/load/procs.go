package load

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/procfs"

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
		if proc, err := procfs.NewProc(p.PID); err != nil {
			note("process", err)
		} else {
			if n, err := proc.FileDescriptorsLen(); err != nil {
				note("descriptors", err)
			} else {
				s.FDs = n
			}
			if st, err := proc.Stat(); err != nil {
				note("threads", err)
			} else {
				s.Threads = st.NumThreads
			}
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

// errNoGoroutines is a /metrics without the Go collector's go_goroutines.
var errNoGoroutines = errors.New("no go_goroutines gauge in /metrics (the Go collector is not registered)")

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
	// The zero TextParser of this version of expfmt is invalid: it needs a
	// name validation scheme.
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return -1, fmt.Errorf("/metrics: %w", err)
	}
	f := families["go_goroutines"]
	if len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge() == nil {
		return -1, errNoGoroutines
	}
	return int(f.GetMetric()[0].GetGauge().GetValue()), nil
}

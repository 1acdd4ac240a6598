package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/bench"
	"github.com/slm-mesh/slm-mesh/internal/load"
	"github.com/slm-mesh/slm-mesh/internal/localmesh"
)

// TestLoad is a short run of tools/load's workload through the whole mesh:
// eight clients for three seconds, every response checked against the
// answer the same request gets alone, and the three processes' resources
// compared before and after.
func TestLoad(t *testing.T) {
	t.Parallel()
	m := startMesh(t, localmesh.Config{})
	var procs []load.Proc
	for _, name := range []string{"gateway", "caller", localmesh.InferenceName(0)} {
		procs = append(procs, load.Proc{Name: name, PID: m.Proc(name).Pid(), MetricsAddr: m.Addr(name)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := load.Run(ctx, load.Config{
		Client:   &load.Client{BaseURL: m.URL(), Timeout: 30 * time.Second, HTTP: bench.NewHTTPClient(8)},
		Clients:  8,
		Duration: 3 * time.Second,
		Settle:   2 * time.Second,
		Procs:    procs,
		Limits:   load.DefaultLimits(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("load report:\n%s", out.String())
	if !rep.Passed() || rep.Counts[load.OK] == 0 {
		t.Fatalf("want a pass with successes; got %d OK and failures:\n%s", rep.Counts[load.OK], strings.Join(rep.Failures, "\n"))
	}
}

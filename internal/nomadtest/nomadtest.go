// Package nomadtest finds the Nomad agent binary for the tests that run
// it: its job parser, `nomad config validate`, a node drain.
package nomadtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// Binary is the Nomad agent that `make nomad` builds into .cache/bin of
// the repository, else one on PATH. Without either the test is skipped,
// or fails under CI (CI set), which builds it before the tests.
func Binary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(modeltest.RepoRoot(), ".cache", "bin", "nomad")
	if st, err := os.Stat(bin); err == nil && !st.IsDir() {
		return bin
	}
	if bin, err := exec.LookPath("nomad"); err == nil {
		return bin
	}
	const missing = "no nomad binary: `make nomad` builds it (make test does), or put nomad on PATH"
	if os.Getenv("CI") != "" {
		t.Fatal(missing + " (CI is set, so this is a failure)")
	}
	t.Skip("SKIPPED: " + missing)
	return ""
}

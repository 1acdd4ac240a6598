package localmesh

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// TestMakefileCgoFlagsAreStable proves the Makefile gives cgo the same flags
// as BuildEnv, and the same flags before and after `make setup` has
// installed the miniaudio stand-in: any difference rebuilds llama.cpp.
func TestMakefileCgoFlagsAreStable(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	root := modeltest.RepoRoot()
	cgoEnv := func(header string) map[string]string {
		cmd := exec.Command("make", "--no-print-directory", "-s", "cgo-env", "MINIAUDIO_SYSTEM_HEADER="+header)
		cmd.Dir = root
		// The flags must come from the Makefile, not from this process.
		cmd.Env = withoutCgoFlags(os.Environ())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make cgo-env: %v\n%s", err, out)
		}
		env := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, v, _ := strings.Cut(line, "=")
			env[k] = v
		}
		return env
	}
	installed := filepath.Join(t.TempDir(), "miniaudio.h")
	if err := os.WriteFile(installed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	before := cgoEnv(filepath.Join(t.TempDir(), "absent.h"))
	after := cgoEnv(installed)
	for _, k := range []string{"CGO_CFLAGS", "CGO_CXXFLAGS", "CGO_CPPFLAGS"} {
		if before[k] != after[k] {
			t.Errorf("%s before setup %q, after %q: the second run would rebuild llama.cpp", k, before[k], after[k])
		}
	}
	for _, k := range []string{"CGO_CFLAGS", "CGO_CXXFLAGS"} {
		if after[k] != DefaultCFlags {
			t.Errorf("Makefile %s = %q, BuildEnv's default %q: tools/local and e2e would rebuild llama.cpp", k, after[k], DefaultCFlags)
		}
	}
}

func withoutCgoFlags(env []string) []string {
	var out []string
	for _, kv := range env {
		// make passes its command-line variables (make ARCH=… test) on
		// to the recipes' environment too.
		if !strings.HasPrefix(kv, "CGO_") && !strings.HasPrefix(kv, "MAKEFLAGS=") && !strings.HasPrefix(kv, "MFLAGS=") && !strings.HasPrefix(kv, "ARCH=") {
			out = append(out, kv)
		}
	}
	return out
}

package localmesh

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// DefaultCFlags are the C/C++ flags llama.cpp is compiled with when the
// environment sets none: without AVX2/FMA/F16C (x86-64-v3) ggml runs several
// times slower. -Wno-stringop-overflow silences a known false positive in
// ggml's repack.cpp; -DGGML_USE_CPU_REPACK enables its repacked kernels for
// 4-bit weights (docs/build.md). The Makefile uses the same flags: any
// difference would rebuild llama.cpp.
const DefaultCFlags = "-O3 -march=x86-64-v3 -Wno-stringop-overflow -DGGML_USE_CPU_REPACK"

// Build builds the three service binaries of the repository at root into
// binDir. It runs tools/setup.sh first, which checks (and, as root,
// installs) the C/C++ headers the inference build needs. Go's build cache
// makes a rebuild of unchanged sources a matter of seconds.
func Build(ctx context.Context, root, binDir string, out io.Writer) error {
	setup := exec.CommandContext(ctx, "sh", filepath.Join(root, "tools", "setup.sh"))
	setup.Stdout, setup.Stderr = out, out
	if err := setup.Run(); err != nil {
		return fmt.Errorf("build dependencies missing (tools/setup.sh): %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", binDir+string(filepath.Separator), "./services/...")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = BuildEnv(root)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./services/...: %w", err)
	}
	return nil
}

// BuildEnv is the environment for building the services: the process's own,
// plus the default cgo flags where it sets none, plus the include path of
// the miniaudio stand-in when it is not installed system-wide.
func BuildEnv(root string) []string {
	env := os.Environ()
	for _, k := range []string{"CGO_CFLAGS", "CGO_CXXFLAGS"} {
		if os.Getenv(k) == "" {
			env = append(env, k+"="+DefaultCFlags)
		}
	}
	if _, err := os.Stat("/usr/local/include/miniaudio/miniaudio.h"); err != nil {
		env = append(env, "CGO_CPPFLAGS="+os.Getenv("CGO_CPPFLAGS")+" -I"+filepath.Join(root, "third_party"))
	}
	return env
}

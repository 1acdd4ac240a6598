package localmesh

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// The CPUs llama.cpp is compiled for (gcc's -march).
const (
	// DefaultArch is the build machine's own CPU, for binaries that run
	// where they are built (make run, make test, tools/local, e2e): on a
	// CPU with AVX-512, ggml's repacked 4-bit kernels then prefill ~1.7×
	// faster than with AVX2 alone (docs/PERFORMANCE.md).
	DefaultArch = "native"
	// PortableArch is the level a build for other machines (tools/release)
	// assumes unless told otherwise: AVX2, FMA and F16C, which every x86
	// server CPU of the last ten years has. Without them ggml runs several
	// times slower.
	PortableArch = "x86-64-v3"
)

// cflagsTail follows -march in every build: -Wno-stringop-overflow silences
// a known false positive in ggml's repack.cpp; -DGGML_USE_CPU_REPACK enables
// its repacked kernels for 4-bit weights (docs/build.md).
const cflagsTail = " -Wno-stringop-overflow -DGGML_USE_CPU_REPACK"

// DefaultCFlags are the C/C++ flags llama.cpp is compiled with when the
// environment sets none. The Makefile uses the same flags: any difference
// would rebuild llama.cpp.
const DefaultCFlags = "-O3 -march=" + DefaultArch + cflagsTail

// CFlags are the C/C++ flags of a llama.cpp build for arch.
func CFlags(arch string) string { return "-O3 -march=" + arch + cflagsTail }

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

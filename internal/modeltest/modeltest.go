// Package modeltest finds the model files that tests run on.
package modeltest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
)

// StoriesEnv names the environment variable that overrides the path of the
// stories260K model.
const StoriesEnv = "SLM_TEST_MODEL"

// Stories returns the path of stories260K.gguf, a real trained tiny llama
// model (llama2.c's tinyllamas): $SLM_TEST_MODEL, else shared/models/ next to
// the repository. Tests that need it are skipped, with the reason, when it
// is absent — except under CI, where its absence is a failure.
func Stories(t testing.TB) string {
	t.Helper()
	p := os.Getenv(StoriesEnv)
	if p == "" {
		p = filepath.Join(RepoRoot(), "..", "shared", "models", "stories260K.gguf")
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("stories260K model not found at %s (set %s): %v", p, StoriesEnv, err)
		}
		t.Skipf("stories260K model not found at %s; set %s to its path to run this test", p, StoriesEnv)
	}
	return p
}

// RepoRoot is the repository's top directory: the nearest directory above
// the working directory (a test's package directory) that holds go.mod and
// internal/. It works with -trimpath, unlike paths from runtime.Caller.
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if exists(filepath.Join(d, "go.mod")) && exists(filepath.Join(d, "internal")) {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Tiny writes ggufgen's tiny gemma3 model with random weights, changed by
// edit (nil: the preset as it is), into the test's temporary directory and
// returns its path.
func Tiny(t testing.TB, edit func(*ggufgen.Config)) string {
	t.Helper()
	cfg, err := ggufgen.Preset(ggufgen.PresetTiny)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&cfg)
	}
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := ggufgen.Write(path, cfg); err != nil {
		t.Fatal(err)
	}
	return path
}

// Preset writes ggufgen's preset name (random weights), such as
// functiongemma-tiny, into the test's temporary directory and returns its
// path.
func Preset(t testing.TB, name string) string {
	t.Helper()
	cfg, err := ggufgen.Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".gguf")
	if err := ggufgen.Write(path, cfg); err != nil {
		t.Fatal(err)
	}
	return path
}

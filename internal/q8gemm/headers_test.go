package q8gemm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVendoredHeadersMatchModule checks that third_party/ggml holds the
// headers of the ollama module go.mod pins: the backend's interface
// structs must have that version's layout.
func TestVendoredHeadersMatchModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/ollama/ollama").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/ollama/ollama: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatal("the ollama module is not downloaded")
	}
	for name, in := range map[string]string{
		"ggml.h":              "include",
		"ggml-alloc.h":        "include",
		"ggml-backend.h":      "include",
		"ggml-backend-impl.h": "src",
	} {
		want, err := os.ReadFile(filepath.Join(dir, "ml/backend/ggml/ggml", in, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("../../third_party/ggml", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("third_party/ggml/%s differs from the module's %s/%s", name, in, name)
		}
	}
}

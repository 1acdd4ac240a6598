package engine

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/ollama/ollama/llama"

	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// TestBackendLeavesSlogDefault: starting llama.cpp must not replace the
// process's default slog logger (it belongs to the program), and
// llama.cpp's own log must reach the engine's logger, line by line.
func TestBackendLeavesSlogDefault(t *testing.T) {
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: &buf})
	before := slog.Default()
	prev := llamaLog.setLogger(nil)
	t.Cleanup(func() { llamaLog.setLogger(prev) })
	initBackend(log)
	if slog.Default() != before {
		t.Fatal("initBackend replaced the default slog logger")
	}
	if !strings.Contains(buf.String(), "llama.cpp backend ready") || !strings.Contains(buf.String(), "AVX2=1") {
		t.Fatalf("no backend report with the AVX2 feature in the log:\n%s", buf.String())
	}
	// Loading a model makes llama.cpp log at info level, which is debug
	// detail for us.
	m, err := llama.LoadModelFromFile(modeltest.Stories(t), llama.ModelParams{UseMmap: true})
	if err != nil {
		t.Fatal(err)
	}
	llama.FreeModel(m)
	if !strings.Contains(buf.String(), "[DEBUG] llama.cpp: llama_model_loader: ") {
		t.Fatalf("llama.cpp's model loading log did not reach the engine's logger:\n%s", buf.String())
	}
}

func TestBackendFeatures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | ", "SSE3=1 AVX=1 AVX2=1"},
		{"CPU : SSE3 = 1 | CUDA : ARCHS = 890 | ", "SSE3=1 ARCHS=890"},
		{"", ""},
		{"garbage", ""},
	} {
		if got := backendFeatures(tc.in); got != tc.want {
			t.Errorf("backendFeatures(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestLogSinkLines: llama.cpp logs parts of lines (CONT continues the
// previous one) and several lines at once; each line becomes one entry at
// the level of the call that began it.
func TestLogSinkLines(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	var s logSink
	s.setLogger(hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: &buf, DisableTime: true}))
	s.write(ggmlLogInfo, "loading")
	s.write(ggmlLogCont, ".")
	s.write(ggmlLogCont, ".\n")
	s.write(ggmlLogWarn, "one\ntwo\n")
	s.write(ggmlLogError, "unfinished")
	s.write(ggmlLogDebug, "detail\n\n")
	want := "[DEBUG] loading..\n[WARN]  one\n[WARN]  two\n[ERROR] unfinished\n[TRACE] detail\n"
	if got := buf.String(); got != want {
		t.Fatalf("log:\n%s\nwant:\n%s", got, want)
	}
}

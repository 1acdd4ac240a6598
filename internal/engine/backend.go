package engine

import (
	"bytes"
	"log/slog"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/ollama/ollama/llama"
)

// initBackend starts llama.cpp's backends and logs the CPU features ggml
// was built with (AVX2, FMA, F16C, ... — a build without them is several
// times slower; see docs/build.md).
//
// llama.cpp and ollama's wrapper log through the default slog logger. Its
// start-up report is captured and re-logged through hclog; afterwards only
// warnings and errors from llama.cpp reach stderr.
func initBackend(log hclog.Logger) {
	var buf bytes.Buffer
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	llama.BackendInit()
	features := ""
	for line := range strings.Lines(buf.String()) {
		if i := strings.Index(line, "msg=system "); i >= 0 {
			features = strings.TrimSpace(line[i+len("msg=system "):])
		}
	}
	log.Info("llama.cpp backend ready", "features", features)
	if !strings.Contains(features, "AVX2=1") {
		log.Warn("ggml was built without AVX2: expect slow inference; build with CGO_CFLAGS=-march=x86-64-v3 (see docs/build.md)")
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

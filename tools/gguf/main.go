// Command gguf writes a GGUF model of the Gemma 3 family with random
// weights, for tests and measurements without downloading a real model:
//
//	go run ./tools/gguf -preset tiny -o tiny.gguf
//	go run ./tools/gguf -preset gemma3-270m -o gemma3-270m-random.gguf -seed 7
//	go run ./tools/gguf -preset gemma3-270m -type q4_0 -embedding-type q8_0 -o g-q4_0-emb8.gguf
//	go run ./tools/gguf -preset functiongemma-270m -o functiongemma-270m-random.gguf
//	go run ./tools/gguf -preset embeddinggemma-300m -o embeddinggemma-300m-random.gguf
//
// functiongemma-* presets carry FunctionGemma's function-calling tokens
// and chat template; embeddinggemma-* presets are llama.cpp's
// gemma-embedding architecture with mean pooling. The files load in
// llama.cpp like the real models but generate noise.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/model"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gguf:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("gguf", flag.ContinueOnError)
	preset := fs.String("preset", ggufgen.PresetTiny, "model shape: "+strings.Join(ggufgen.PresetNames(), " or "))
	out := fs.String("o", "", "output file (required)")
	seed := fs.Uint64("seed", 0, "random seed; the same seed writes the same file")
	weights := fs.String("type", string(ggufgen.TypeQ8_0), "weight type of the layers' matrices: "+ggufgen.TypeNames())
	embedding := fs.String("embedding-type", "", "weight type of the token embedding, also the output projection (default: -type)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("-o is required and no arguments are taken")
	}
	cfg, err := ggufgen.Preset(*preset)
	if err != nil {
		return err
	}
	cfg.Seed = *seed
	if cfg.Weights, err = ggufgen.ParseType(*weights); err != nil {
		return err
	}
	if *embedding != "" {
		if cfg.Embedding, err = ggufgen.ParseType(*embedding); err != nil {
			return err
		}
	}

	log := hclog.New(&hclog.LoggerOptions{Name: "gguf", Output: os.Stderr})
	start := time.Now()
	if err := ggufgen.Write(*out, cfg); err != nil {
		return err
	}
	// Reading the file back checks it the way the inference service will.
	info, err := model.Validate(*out)
	if err != nil {
		return err
	}
	log.Info("wrote model", "path", *out, "preset", *preset, "file_type", info.FileType, "bytes", info.FileSize,
		"tensors", info.Tensors, "parameters", info.Parameters, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Command quality measures how far one file of a model strays from
// another — a 4-bit quantisation against the Q8_0 or F16 it was made from —
// before you serve it:
//
//	go run ./tools/quality -ref gemma-3-270m-it-Q8_0.gguf -candidate gemma-3-270m-it-qat-q4_0.gguf
//
// It prints the greedy agreement (the share of the reference's greedy
// tokens the candidate also ranks first, teacher-forced on the reference's
// text) over a fixed prompt set, and the perplexity of both files on a
// fixed text. It runs offline on files you have; on random weights the
// figures mean nothing.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/internal/engine"
	"github.com/slm-mesh/slm-mesh/internal/model"
)

// prompts are the fixed set the reference continues: instructions,
// knowledge and prose, as a small chat model is asked.
var prompts = []string{
	"The capital of France is",
	"Write a short poem about the sea.\n",
	"Explain in one sentence why the sky is blue.\n",
	"def fibonacci(n):\n",
	"List three fruits that are red:\n1.",
	"Once upon a time, in a small village by the mountains,",
	"Translate to French: Good morning, how are you?\n",
	"The three primary colours are",
}

// text is scored for perplexity: plain encyclopaedic English.
const text = `The Moon is Earth's only natural satellite. It orbits at an average distance of about 384,400 kilometres, roughly thirty times the diameter of Earth. The Moon always shows the same side to Earth, because its rotation is tidally locked to its orbit. Its gravity causes the tides of the oceans and slightly lengthens the day. The Moon is the brightest object in the night sky, and its regular phases have been used to keep time since ancient times.`

const usage = "go run ./tools/quality -ref REF.gguf -candidate CANDIDATE.gguf [-tokens 64] [-prompts FILE] [-text FILE] [-threads N]"

func main() { os.Exit(run(os.Args[1:])) }

// run is main without the process: it returns the exit code (0 success,
// 1 failure, 2 usage).
func run(args []string) int {
	fs := flag.NewFlagSet("quality", flag.ContinueOnError)
	ref := fs.String("ref", "", "the reference file, e.g. the Q8_0 or F16 model (required)")
	cand := fs.String("candidate", "", "the file to judge, e.g. a Q4_0 of the same model (required)")
	tokens := fs.Int("tokens", 64, "greedy tokens per prompt")
	promptFile := fs.String("prompts", "", "file of prompts, one per line (default: a built-in set of 8)")
	textFile := fs.String("text", "", "file whose perplexity is measured (default: a built-in paragraph)")
	threads := fs.Int("threads", runtime.NumCPU(), "llama.cpp threads")
	if code, ok := cli.ParseTool(fs, args, usage); !ok {
		return code
	}
	if *ref == "" || *cand == "" || *tokens <= 0 || *threads <= 0 {
		fmt.Fprintln(os.Stderr, "quality: -ref and -candidate are required; -tokens and -threads must be positive")
		return 2
	}
	cfg := engine.QualityConfig{Prompts: prompts, Tokens: *tokens, Text: text, Threads: *threads}
	if err := compare(*ref, *cand, cfg, *promptFile, *textFile); err != nil {
		fmt.Fprintln(os.Stderr, "quality:", err)
		return 1
	}
	return 0
}

// compare checks both files, reads the prompt and text files that replace
// the built-in ones, and prints Compare's report.
func compare(ref, cand string, cfg engine.QualityConfig, promptFile, textFile string) error {
	for _, p := range []string{ref, cand} {
		// llama.cpp may abort on a file that is not a whole GGUF.
		if _, err := model.Validate(p); err != nil {
			return err
		}
	}
	if promptFile != "" {
		b, err := os.ReadFile(promptFile)
		if err != nil {
			return err
		}
		cfg.Prompts = nil
		for _, l := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(l) != "" {
				cfg.Prompts = append(cfg.Prompts, l)
			}
		}
	}
	if textFile != "" {
		b, err := os.ReadFile(textFile)
		if err != nil {
			return err
		}
		cfg.Text = string(b)
	}
	cfg.Logger = cli.Logger("quality", "error", false)
	rep, err := engine.Compare(ref, cand, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("greedy agreement  %d/%d tokens (%.1f%%) over %d prompts\n", rep.Agree, rep.Tokens, 100*rep.Agreement, len(cfg.Prompts))
	fmt.Printf("perplexity        reference %.3f, candidate %.3f (%+.1f%%) over %d tokens\n",
		rep.RefPerplexity, rep.CandidatePerplexity, 100*(rep.CandidatePerplexity/rep.RefPerplexity-1), rep.TextTokens)
	return nil
}

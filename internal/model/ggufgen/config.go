// Package ggufgen writes GGUF files of the gemma3 architecture with random
// weights: the exact shapes of gemma-3-270m, to measure what the real model
// costs without downloading it, and a tiny model that loads in
// milliseconds, for tests. The files carry a Gemma-style SentencePiece
// vocabulary and the Gemma 3 chat template, so that llama.cpp and ollama's
// template package treat them like the real model. Their output is noise.
package ggufgen

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Config describes the model to generate.
type Config struct {
	// Name is written as general.name, which the services serve the model
	// under by default.
	Name string

	VocabSize       int
	EmbeddingLength int
	BlockCount      int
	HeadCount       int
	HeadCountKV     int
	// HeadDim is the size of one attention head (attention.key_length and
	// attention.value_length). Gemma 3 does not derive it from the
	// embedding length, so it must be written.
	HeadDim       int
	FFNLength     int
	ContextLength int
	// SlidingWindow is the attention window of the local layers (five of
	// every six in Gemma 3).
	SlidingWindow int
	RMSEpsilon    float32
	// RopeFreqBase is the RoPE base of the global layers; RopeLocalFreqBase
	// that of the sliding-window layers.
	RopeFreqBase      float32
	RopeLocalFreqBase float32

	// Weights is the type of the layers' weight matrices (default Q8_0);
	// Embedding that of the token embedding, which Gemma 3 also uses as the
	// output projection (default: Weights).
	Weights   Type
	Embedding Type

	// Seed makes the weights reproducible: the same Config writes the same
	// bytes.
	Seed uint64
}

// globalEvery: in Gemma 3, layers 6, 12, ... (every sixth) attend to the
// whole context and the others to the sliding window; llama.cpp hard-codes
// this pattern. With fewer than six layers its cache for global layers is
// empty and decoding aborts (GGML_ASSERT in llama_kv_cache), so a model
// needs at least six.
const globalEvery = 6

// Preset names.
const (
	PresetTiny        = "tiny"
	PresetGemma3_270M = "gemma3-270m"
)

var presets = map[string]Config{
	// gemma-3-270m's shapes, from its config.json and the ggml-org GGUF.
	PresetGemma3_270M: {
		Name:              "gemma3-270m-random",
		VocabSize:         262144,
		EmbeddingLength:   640,
		BlockCount:        18,
		HeadCount:         4,
		HeadCountKV:       1,
		HeadDim:           256,
		FFNLength:         2048,
		ContextLength:     32768,
		SlidingWindow:     512,
		RMSEpsilon:        1e-6,
		RopeFreqBase:      1e6,
		RopeLocalFreqBase: 10000,
	},
	// The same architecture, as small as it gets while keeping grouped
	// attention (2 query heads per KV head), rows of whole 32-value blocks and one
	// global-attention layer (see globalEvery).
	PresetTiny: {
		Name:              "gemma3-tiny-random",
		VocabSize:         1000,
		EmbeddingLength:   64,
		BlockCount:        globalEvery,
		HeadCount:         2,
		HeadCountKV:       1,
		HeadDim:           32,
		FFNLength:         128,
		ContextLength:     2048,
		SlidingWindow:     512,
		RMSEpsilon:        1e-6,
		RopeFreqBase:      1e6,
		RopeLocalFreqBase: 10000,
	},
}

// Preset returns the named preset.
func Preset(name string) (Config, error) {
	c, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown preset %q (known: %s)", name, strings.Join(PresetNames(), ", "))
	}
	return c, nil
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	return slices.Sorted(maps.Keys(presets))
}

// check reports a Config that llama.cpp could not load.
func (c Config) check() error {
	type field struct {
		name  string
		value int
	}
	for _, f := range []field{
		{"EmbeddingLength", c.EmbeddingLength}, {"BlockCount", c.BlockCount},
		{"HeadCount", c.HeadCount}, {"HeadCountKV", c.HeadCountKV}, {"HeadDim", c.HeadDim},
		{"FFNLength", c.FFNLength}, {"ContextLength", c.ContextLength}, {"SlidingWindow", c.SlidingWindow},
	} {
		if f.value <= 0 {
			return fmt.Errorf("%s must be positive, not %d", f.name, f.value)
		}
	}
	if c.BlockCount < globalEvery {
		return fmt.Errorf("BlockCount %d: need at least %d, so that one layer has global attention", c.BlockCount, globalEvery)
	}
	if c.VocabSize < minVocab {
		return fmt.Errorf("VocabSize %d: need at least %d (special and byte tokens)", c.VocabSize, minVocab)
	}
	if c.HeadCount%c.HeadCountKV != 0 {
		return fmt.Errorf("HeadCount %d must be a multiple of HeadCountKV %d", c.HeadCount, c.HeadCountKV)
	}
	for _, t := range []Type{c.weights(), c.embedding()} {
		if _, ok := formats[t]; !ok {
			return fmt.Errorf("unknown weight type %q (known: %s)", t, TypeNames())
		}
	}
	// Every type quantises rows in blocks of 32 values at least (Q4_K's
	// super-blocks of 256 fall back, see storage).
	const block = 32
	for _, f := range []field{
		{"EmbeddingLength", c.EmbeddingLength}, {"HeadCount*HeadDim", c.HeadCount * c.HeadDim}, {"FFNLength", c.FFNLength},
	} {
		if f.value%block != 0 {
			return fmt.Errorf("%s %d must be a multiple of %d", f.name, f.value, block)
		}
	}
	return nil
}

// weights is the type of the layers' matrices.
func (c Config) weights() Type {
	if c.Weights == "" {
		return TypeQ8_0
	}
	return c.Weights
}

// embedding is the type of the token embedding.
func (c Config) embedding() Type {
	if c.Embedding == "" {
		return c.weights()
	}
	return c.Embedding
}

// Package ggufgen writes GGUF files of the Gemma 3 family with random
// weights: the exact shapes of gemma-3-270m, FunctionGemma and
// EmbeddingGemma, to measure what the real models cost without downloading
// them, and a tiny model that loads in milliseconds, for tests. The files
// carry a Gemma-style SentencePiece vocabulary and the model's chat
// template, so that llama.cpp and ollama's template package treat them like
// the real model. Their output is noise.
package ggufgen

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/slm-mesh/slm-mesh/internal/chat/functiongemma"
)

// Architectures Write can generate, as llama.cpp names them
// (general.architecture).
const (
	// ArchGemma3 is the decoder of gemma-3-270m and FunctionGemma.
	ArchGemma3 = "gemma3"
	// ArchGemmaEmbedding is EmbeddingGemma: Gemma 3's layers with
	// bidirectional attention (llama.cpp sets it for the architecture; the
	// file does not say) and a pooled output, an encoder for embeddings.
	ArchGemmaEmbedding = "gemma-embedding"
)

// Pooling types as llama.cpp numbers them (enum llama_pooling_type), the
// value of <arch>.pooling_type.
const (
	PoolingNone = 0
	PoolingMean = 1
	PoolingCLS  = 2
	PoolingLast = 3
)

// Config describes the model to generate.
type Config struct {
	// Name is written as general.name, which the services serve the model
	// under by default.
	Name string
	// Architecture is ArchGemma3 (the default when empty) or
	// ArchGemmaEmbedding.
	Architecture string

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

	// ControlTokens are control tokens the vocabulary holds beyond Gemma's
	// own (see NewVocabulary), such as FunctionGemma's function-calling
	// tokens.
	ControlTokens []string
	// ChatTemplate is written as tokenizer.chat_template; empty writes
	// none (an embedding model has no chat).
	ChatTemplate string
	// AddEOS makes the tokenizer end every text with <eos>
	// (tokenizer.ggml.add_eos_token), as EmbeddingGemma's does.
	AddEOS bool

	// PoolingType is how ArchGemmaEmbedding turns the tokens' states into
	// one embedding (PoolingMean for EmbeddingGemma); a gemma3 model has
	// none.
	PoolingType int
	// DenseLength, when not zero, adds EmbeddingGemma's two
	// sentence-transformers projections after the pooling, from the
	// embedding length to DenseLength and back (dense_2, dense_3).
	DenseLength int

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
	PresetTiny               = "tiny"
	PresetGemma3_270M        = "gemma3-270m"
	PresetFunctionGemma270M  = "functiongemma-270m"
	PresetEmbeddingGemma300M = "embeddinggemma-300m"
	PresetFunctionGemmaTiny  = "functiongemma-tiny"
	PresetEmbeddingGemmaTiny = "embeddinggemma-tiny"
)

// gemma-3-270m's shapes, from its config.json and the ggml-org GGUF.
var presetGemma3_270M = Config{
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
	ChatTemplate:      Gemma3ChatTemplate,
}

// The same architecture, as small as it gets while keeping grouped
// attention (2 query heads per KV head), rows of whole 32-value blocks and one
// global-attention layer (see globalEvery).
var presetTiny = Config{
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
	ChatTemplate:      Gemma3ChatTemplate,
}

var presets = map[string]Config{
	PresetGemma3_270M: presetGemma3_270M,
	PresetTiny:        presetTiny,
	// FunctionGemma (functiongemma-270m-it) is gemma-3-270m fine-tuned for
	// function calling: the same shapes, the function-calling control
	// tokens in the vocabulary and a chat template that declares tools in
	// a developer turn.
	PresetFunctionGemma270M: functionGemma(presetGemma3_270M, "functiongemma-270m-random"),
	PresetFunctionGemmaTiny: functionGemma(presetTiny, "functiongemma-tiny-random"),
	// EmbeddingGemma-300m's shapes, from its config.json and the GGUF
	// llama.cpp's converter writes (with --sentence-transformers-dense-modules):
	// 24 layers of 768, 3 query heads of 256 sharing one KV head, a
	// 1152-wide FFN, a 512-token window (llama.cpp makes it symmetric,
	// 256 each side), 2048 tokens of context, mean pooling and the
	// 768→3072→768 projections: 307,581,696 parameters, 302.9 M of them
	// without the projections.
	PresetEmbeddingGemma300M: {
		Name:              "embeddinggemma-300m-random",
		Architecture:      ArchGemmaEmbedding,
		VocabSize:         262144,
		EmbeddingLength:   768,
		BlockCount:        24,
		HeadCount:         3,
		HeadCountKV:       1,
		HeadDim:           256,
		FFNLength:         1152,
		ContextLength:     2048,
		SlidingWindow:     512,
		RMSEpsilon:        1e-6,
		RopeFreqBase:      1e6,
		RopeLocalFreqBase: 10000,
		AddEOS:            true,
		PoolingType:       PoolingMean,
		DenseLength:       3072,
	},
	// The embedding architecture at the tiny preset's size.
	PresetEmbeddingGemmaTiny: embeddingGemma(presetTiny, "embeddinggemma-tiny-random", 256),
}

// functionGemma turns a gemma3 preset into its FunctionGemma variant.
// embeddingGemma is c's shapes as EmbeddingGemma: the gemma-embedding
// architecture (no chat template), an EOS after each input, mean pooling
// and dense projections through dense values.
func embeddingGemma(c Config, name string, dense int) Config {
	c.Name = name
	c.Architecture = ArchGemmaEmbedding
	c.ChatTemplate = ""
	c.AddEOS = true
	c.PoolingType = PoolingMean
	c.DenseLength = dense
	return c
}

func functionGemma(c Config, name string) Config {
	c.Name = name
	c.ControlTokens = functiongemma.Tokens()
	c.ChatTemplate = FunctionGemmaChatTemplate
	return c
}

// Preset returns the named preset.
func Preset(name string) (Config, error) {
	c, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown preset %q (known: %s)", name, strings.Join(PresetNames(), ", "))
	}
	c.ControlTokens = slices.Clone(c.ControlTokens)
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
	if n := minVocab + len(c.ControlTokens); c.VocabSize < n {
		return fmt.Errorf("VocabSize %d: need at least %d (special and byte tokens)", c.VocabSize, n)
	}
	switch c.architecture() {
	case ArchGemma3:
		if c.PoolingType != PoolingNone || c.DenseLength != 0 {
			return fmt.Errorf("PoolingType and DenseLength are for %s, not %s", ArchGemmaEmbedding, ArchGemma3)
		}
	case ArchGemmaEmbedding:
		// llama.cpp reads the key as required; none would leave the
		// context without an embedding per sequence.
		if c.PoolingType < PoolingMean || c.PoolingType > PoolingLast {
			return fmt.Errorf("PoolingType %d: %s needs mean (1), cls (2) or last (3)", c.PoolingType, ArchGemmaEmbedding)
		}
		if c.DenseLength < 0 || c.DenseLength%32 != 0 {
			return fmt.Errorf("DenseLength %d must be 0 or a positive multiple of 32", c.DenseLength)
		}
	default:
		return fmt.Errorf("unknown architecture %q (known: %s, %s)", c.Architecture, ArchGemma3, ArchGemmaEmbedding)
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

// architecture is Architecture, ArchGemma3 when empty.
func (c Config) architecture() string {
	if c.Architecture == "" {
		return ArchGemma3
	}
	return c.Architecture
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

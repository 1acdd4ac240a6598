package ggufgen

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/ollama/ollama/fs/ggml"
)

// Write writes the model cfg describes to path, through a temporary file
// in the same directory so that path never holds a partial model.
func Write(path string, cfg Config) error {
	if err := cfg.check(); err != nil {
		return fmt.Errorf("ggufgen: %w", err)
	}
	vocab, err := NewVocabulary(cfg.VocabSize, cfg.ControlTokens...)
	if err != nil {
		return fmt.Errorf("ggufgen: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("ggufgen: %w", err)
	}
	defer os.Remove(f.Name()) // after a successful rename, there is nothing to remove
	if err := ggml.WriteGGUF(f, metadata(cfg, vocab), tensors(cfg)); err != nil {
		f.Close()
		return fmt.Errorf("ggufgen: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ggufgen: %w", err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("ggufgen: %w", err)
	}
	return os.Rename(f.Name(), path)
}

// metadata is the GGUF key/values. llama.cpp falls back to defaults that
// are wrong for Gemma 3 when attention.key_length/value_length (it would
// use embedding/heads), rope.freq_base (10000) or attention.sliding_window
// (no sliding window at all) are missing, so all of them are written.
func metadata(cfg Config, v Vocabulary) ggml.KV {
	arch := cfg.architecture()
	kv := ggml.KV{
		"general.architecture":         arch,
		"general.name":                 cfg.Name,
		"general.file_type":            formats[cfg.weights()].fileType,
		"general.quantization_version": uint32(2),

		arch + ".context_length":                   uint32(cfg.ContextLength),
		arch + ".embedding_length":                 uint32(cfg.EmbeddingLength),
		arch + ".block_count":                      uint32(cfg.BlockCount),
		arch + ".feed_forward_length":              uint32(cfg.FFNLength),
		arch + ".attention.head_count":             uint32(cfg.HeadCount),
		arch + ".attention.head_count_kv":          uint32(cfg.HeadCountKV),
		arch + ".attention.key_length":             uint32(cfg.HeadDim),
		arch + ".attention.value_length":           uint32(cfg.HeadDim),
		arch + ".attention.layer_norm_rms_epsilon": cfg.RMSEpsilon,
		arch + ".attention.sliding_window":         uint32(cfg.SlidingWindow),
		arch + ".rope.freq_base":                   cfg.RopeFreqBase,

		"tokenizer.ggml.model":            "llama",
		"tokenizer.ggml.pre":              "default",
		"tokenizer.ggml.tokens":           v.Tokens,
		"tokenizer.ggml.scores":           v.Scores,
		"tokenizer.ggml.token_type":       v.Types,
		"tokenizer.ggml.bos_token_id":     uint32(BOSID),
		"tokenizer.ggml.eos_token_id":     uint32(EOSID),
		"tokenizer.ggml.eot_token_id":     uint32(EndOfTurnID),
		"tokenizer.ggml.unknown_token_id": uint32(UnknownID),
		"tokenizer.ggml.padding_token_id": uint32(PadID),
		"tokenizer.ggml.add_bos_token":    true,
		"tokenizer.ggml.add_eos_token":    cfg.AddEOS,
		"tokenizer.ggml.add_space_prefix": false,
	}
	if cfg.ChatTemplate != "" {
		kv["tokenizer.chat_template"] = cfg.ChatTemplate
	}
	switch arch {
	case ArchGemma3:
		// llama.cpp hard-codes 10000 for the local layers; ollama's own
		// gemma3 implementation reads this key.
		kv[arch+".rope.local.freq_base"] = cfg.RopeLocalFreqBase
	case ArchGemmaEmbedding:
		// The key newer converters write for the window's RoPE base; this
		// llama.cpp hard-codes the same 10000. Bidirectional attention is
		// not written either: llama.cpp sets it for the architecture, and
		// the converter writes no attention.causal.
		kv[arch+".rope.freq_base_swa"] = cfg.RopeLocalFreqBase
		kv[arch+".pooling_type"] = uint32(cfg.PoolingType)
		if cfg.DenseLength > 0 {
			kv[arch+".dense_2_feat_in"] = uint32(cfg.EmbeddingLength)
			kv[arch+".dense_2_feat_out"] = uint32(cfg.DenseLength)
			kv[arch+".dense_3_feat_in"] = uint32(cfg.DenseLength)
			kv[arch+".dense_3_feat_out"] = uint32(cfg.EmbeddingLength)
		}
	}
	return kv
}

// tensors lists the tensors llama.cpp's gemma3 loader asks for, with
// shapes in GGUF order (the row length first). The output projection is
// the token embedding (tied), so there is no output.weight. The
// gemma-embedding loader asks for the same, and for the two dense
// projections when the file has them.
func tensors(cfg Config) []*ggml.Tensor {
	embd, vocab, ff := cfg.EmbeddingLength, cfg.VocabSize, cfg.FFNLength
	q, kv := cfg.HeadCount*cfg.HeadDim, cfg.HeadCountKV*cfg.HeadDim

	ts := []*ggml.Tensor{
		matrix(cfg, cfg.embedding(), "token_embd.weight", embd, vocab),
		norm("output_norm.weight", embd),
	}
	if d := cfg.DenseLength; d > 0 {
		ts = append(ts,
			matrix(cfg, cfg.weights(), "dense_2.weight", embd, d),
			matrix(cfg, cfg.weights(), "dense_3.weight", d, embd),
		)
	}
	for i := range cfg.BlockCount {
		name := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", i, s) }
		ts = append(ts,
			norm(name("attn_norm"), embd),
			matrix(cfg, cfg.weights(), name("attn_q"), embd, q),
			matrix(cfg, cfg.weights(), name("attn_k"), embd, kv),
			matrix(cfg, cfg.weights(), name("attn_v"), embd, kv),
			matrix(cfg, cfg.weights(), name("attn_output"), q, embd),
			norm(name("attn_q_norm"), cfg.HeadDim),
			norm(name("attn_k_norm"), cfg.HeadDim),
			norm(name("post_attention_norm"), embd),
			norm(name("ffn_norm"), embd),
			matrix(cfg, cfg.weights(), name("ffn_gate"), embd, ff),
			matrix(cfg, cfg.weights(), name("ffn_up"), embd, ff),
			matrix(cfg, cfg.weights(), name("ffn_down"), ff, embd),
			norm(name("post_ffw_norm"), embd),
		)
	}
	return ts
}

// matrix is a weight matrix of rows rows of cols values each, stored as t
// (or its fallback, see storage).
func matrix(cfg Config, t Type, name string, cols, rows int) *ggml.Tensor {
	f := formats[storage(t, cols)]
	return &ggml.Tensor{
		Name:     name,
		Kind:     uint32(f.tensorType),
		Shape:    []uint64{uint64(cols), uint64(rows)},
		WriterTo: randomBlocks{format: f, blocks: cols * rows / f.block, seed: tensorSeed(cfg.Seed, name)},
	}
}

// norm is an RMS norm weight of n ones. Gemma's converter stores 1+w, so
// ones leave the normalised values unchanged.
func norm(name string, n int) *ggml.Tensor {
	return &ggml.Tensor{
		Name:     name,
		Kind:     uint32(ggml.TensorTypeF32),
		Shape:    []uint64{uint64(n)},
		WriterTo: f32Const{n: n, value: 1},
	}
}

// tensorSeed gives each tensor its own random stream, so the bytes do not
// depend on the order in which WriteGGUF writes tensors (it writes them
// concurrently).
func tensorSeed(seed uint64, name string) [32]byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	return sha256.Sum256(append(b[:], name...))
}

// f32Const writes n float32 values, all equal to value.
type f32Const struct {
	n     int
	value float32
}

func (c f32Const) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, 4*c.n)
	for i := range c.n {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(c.value))
	}
	n, err := w.Write(buf)
	return int64(n), err
}

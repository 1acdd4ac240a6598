package ggufgen_test

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
	"github.com/ollama/ollama/template"

	"github.com/slm-mesh/slm-mesh/internal/chat/functiongemma"
	"github.com/slm-mesh/slm-mesh/internal/model"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

func writeTiny(t *testing.T, seed uint64) string {
	t.Helper()
	return modeltest.Tiny(t, func(c *ggufgen.Config) { c.Seed = seed })
}

// The tiny model decodes with the keys and tensors llama.cpp's gemma3
// loader reads (llama-model.cpp, LLM_ARCH_GEMMA3).
func TestTinyModelHeader(t *testing.T) {
	t.Parallel()
	path := writeTiny(t, 0)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := ggml.Decode(f, -1)
	if err != nil {
		t.Fatal(err)
	}
	kv := g.KV()
	for key, want := range map[string]any{
		"general.architecture":                    "gemma3",
		"gemma3.context_length":                   uint32(2048),
		"gemma3.embedding_length":                 uint32(64),
		"gemma3.block_count":                      uint32(6),
		"gemma3.feed_forward_length":              uint32(128),
		"gemma3.attention.head_count":             uint32(2),
		"gemma3.attention.head_count_kv":          uint32(1),
		"gemma3.attention.key_length":             uint32(32),
		"gemma3.attention.value_length":           uint32(32),
		"gemma3.attention.sliding_window":         uint32(512),
		"gemma3.attention.layer_norm_rms_epsilon": float32(1e-6),
		"gemma3.rope.freq_base":                   float32(1e6),
		"gemma3.rope.local.freq_base":             float32(10000),
		"tokenizer.ggml.model":                    "llama",
		"tokenizer.ggml.bos_token_id":             uint32(ggufgen.BOSID),
		"tokenizer.ggml.eos_token_id":             uint32(ggufgen.EOSID),
		"tokenizer.ggml.eot_token_id":             uint32(ggufgen.EndOfTurnID),
		"tokenizer.ggml.add_bos_token":            true,
		"tokenizer.chat_template":                 ggufgen.Gemma3ChatTemplate,
		"general.file_type":                       uint32(ggml.FileTypeQ8_0),
	} {
		if got := kv[key]; got != want {
			t.Errorf("%s = %v (%T), want %v (%T)", key, got, got, want, want)
		}
	}
	if got := kv.Strings("tokenizer.ggml.tokens"); len(got) != 1000 {
		t.Errorf("%d tokens, want 1000", len(got))
	}

	shapes := map[string][2]uint64{}
	for _, ts := range g.Tensors().Items() {
		shapes[ts.Name] = [2]uint64{ts.Shape[0], 1}
		if len(ts.Shape) == 2 {
			shapes[ts.Name] = [2]uint64{ts.Shape[0], ts.Shape[1]}
		}
	}
	if len(shapes) != 2+13*6 {
		t.Errorf("%d tensors, want %d", len(shapes), 2+13*6)
	}
	if _, ok := shapes["output.weight"]; ok {
		t.Error("output.weight present; the embeddings are meant to be tied")
	}
	for name, want := range map[string][2]uint64{
		"token_embd.weight":                {64, 1000},
		"output_norm.weight":               {64, 1},
		"blk.0.attn_norm.weight":           {64, 1},
		"blk.0.attn_q.weight":              {64, 64},
		"blk.0.attn_k.weight":              {64, 32},
		"blk.0.attn_v.weight":              {64, 32},
		"blk.0.attn_output.weight":         {64, 64},
		"blk.0.attn_q_norm.weight":         {32, 1},
		"blk.0.attn_k_norm.weight":         {32, 1},
		"blk.0.post_attention_norm.weight": {64, 1},
		"blk.0.ffn_norm.weight":            {64, 1},
		"blk.0.ffn_gate.weight":            {64, 128},
		"blk.0.ffn_up.weight":              {64, 128},
		"blk.5.ffn_down.weight":            {128, 64},
		"blk.5.post_ffw_norm.weight":       {64, 1},
	} {
		if got, ok := shapes[name]; !ok || got != want {
			t.Errorf("%s: shape %v (present %v), want %v", name, got, ok, want)
		}
	}
}

// The chat template is the one ollama's template package knows as
// gemma3-instruct, exactly, so the engine renders prompts the Gemma 3 way.
func TestChatTemplateIsRecognised(t *testing.T) {
	t.Parallel()
	named, err := template.Named(ggufgen.Gemma3ChatTemplate)
	if err != nil {
		t.Fatal(err)
	}
	if named.Name != "gemma3-instruct" {
		t.Errorf("recognised as %q, want gemma3-instruct", named.Name)
	}
	if named.Template != ggufgen.Gemma3ChatTemplate {
		t.Error("template text differs from the one ollama's index holds for gemma3-instruct")
	}
}

func TestSameSeedSameFile(t *testing.T) {
	t.Parallel()
	sum := func(path string) [32]byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	a, b, c := sum(writeTiny(t, 1)), sum(writeTiny(t, 1)), sum(writeTiny(t, 2))
	if a != b {
		t.Error("two files written with seed 1 differ")
	}
	if a == c {
		t.Error("seeds 1 and 2 wrote the same file")
	}
}

func TestVocabulary(t *testing.T) {
	t.Parallel()
	for _, size := range []int{363, 1000, 262144} {
		v, err := ggufgen.NewVocabulary(size)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if len(v.Tokens) != size || len(v.Scores) != size || len(v.Types) != size {
			t.Fatalf("size %d: got %d tokens, %d scores, %d types", size, len(v.Tokens), len(v.Scores), len(v.Types))
		}
		seen := make(map[string]int, size)
		for id, tok := range v.Tokens {
			if prev, dup := seen[tok]; dup {
				t.Fatalf("size %d: token %q at ids %d and %d", size, tok, prev, id)
			}
			seen[tok] = id
		}
		for tok, id := range map[string]int{
			"<pad>": ggufgen.PadID, "<eos>": ggufgen.EOSID, "<bos>": ggufgen.BOSID, "<unk>": ggufgen.UnknownID,
			"<start_of_turn>": ggufgen.StartOfTurnID, "<end_of_turn>": ggufgen.EndOfTurnID,
			"<0x00>": ggufgen.FirstByteID, "<0x0A>": ggufgen.FirstByteID + 10, "<0xFF>": ggufgen.FirstByteID + 255,
		} {
			if seen[tok] != id {
				t.Errorf("size %d: %s at id %d, want %d", size, tok, seen[tok], id)
			}
		}
		if v.Types[ggufgen.EndOfTurnID] != 3 || v.Types[ggufgen.FirstByteID] != 6 || v.Types[size-1] != 1 {
			t.Errorf("size %d: token types %d %d %d, want control, byte, normal", size,
				v.Types[ggufgen.EndOfTurnID], v.Types[ggufgen.FirstByteID], v.Types[size-1])
		}
	}
	if _, err := ggufgen.NewVocabulary(100); err == nil {
		t.Error("a vocabulary too small for the byte tokens was accepted")
	}
}

func TestWriteRefusesBadConfig(t *testing.T) {
	t.Parallel()
	tiny, _ := ggufgen.Preset(ggufgen.PresetTiny)
	for _, tc := range []struct {
		name   string
		change func(*ggufgen.Config)
		want   string
	}{
		{"too few layers for a global one", func(c *ggufgen.Config) { c.BlockCount = 2 }, "BlockCount"},
		{"row not a multiple of 32", func(c *ggufgen.Config) { c.EmbeddingLength = 48 }, "EmbeddingLength"},
		{"heads not a multiple of KV heads", func(c *ggufgen.Config) { c.HeadCountKV = 3 }, "HeadCountKV"},
		{"vocabulary too small", func(c *ggufgen.Config) { c.VocabSize = 10 }, "VocabSize"},
		{"no FFN", func(c *ggufgen.Config) { c.FFNLength = 0 }, "FFNLength"},
		{"unknown weight type", func(c *ggufgen.Config) { c.Weights = "q3_k" }, `weight type "q3_k"`},
		// Config takes the Type constants; ParseType reads names in any case.
		{"weight type not as ParseType returns it", func(c *ggufgen.Config) { c.Embedding = "Q4_0" }, `weight type "Q4_0"`},
		{"unknown architecture", func(c *ggufgen.Config) { c.Architecture = "gemma2" }, `architecture "gemma2"`},
		{"pooling on a decoder", func(c *ggufgen.Config) { c.PoolingType = ggufgen.PoolingMean }, "PoolingType"},
		{"an embedding model without pooling", func(c *ggufgen.Config) { c.Architecture = ggufgen.ArchGemmaEmbedding }, "PoolingType 0"},
		{"a dense projection of odd width", func(c *ggufgen.Config) {
			c.Architecture, c.PoolingType, c.DenseLength = ggufgen.ArchGemmaEmbedding, ggufgen.PoolingMean, 100
		}, "DenseLength"},
		{"control tokens crowding out the fillers", func(c *ggufgen.Config) {
			c.VocabSize = 357
			c.ControlTokens = []string{"<a>"}
		}, "VocabSize"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tiny
			tc.change(&cfg)
			dir := t.TempDir()
			err := ggufgen.Write(filepath.Join(dir, "m.gguf"), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write = %v, want an error about %s", err, tc.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("files left behind: %v", entries)
			}
		})
	}
}

func TestPresets(t *testing.T) {
	t.Parallel()
	if got := strings.Join(ggufgen.PresetNames(), ","); got != "embeddinggemma-300m,embeddinggemma-tiny,functiongemma-270m,functiongemma-tiny,gemma3-270m,tiny" {
		t.Errorf("PresetNames = %s", got)
	}
	if _, err := ggufgen.Preset("gemma3-1b"); err == nil || !strings.Contains(err.Error(), "tiny") {
		t.Errorf("unknown preset: err = %v, want one listing the known presets", err)
	}
}

// The generated file passes the same validation the inference service runs.
func TestTinyModelValidates(t *testing.T) {
	t.Parallel()
	info, err := model.Validate(writeTiny(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	if info.Architecture != "gemma3" || info.Tensors != 80 {
		t.Errorf("Validate = %+v", info)
	}
	if !bytes.HasPrefix([]byte(info.ChatTemplate), []byte("{{ bos_token }}")) {
		t.Errorf("chat template = %.40q...", info.ChatTemplate)
	}
}

// decode reads back the header of the file path holds.
func decode(t *testing.T, path string) ggml.KV {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := ggml.Decode(f, -1)
	if err != nil {
		t.Fatal(err)
	}
	return g.KV()
}

// The FunctionGemma presets are gemma3 models whose vocabulary holds the
// function-calling tokens as control tokens right after the byte tokens,
// with a chat template functiongemma.Detect recognises.
func TestFunctionGemmaTinyHeader(t *testing.T) {
	t.Parallel()
	kv := decode(t, modeltest.Preset(t, ggufgen.PresetFunctionGemmaTiny))
	if kv.Architecture() != "gemma3" || kv.String("general.name") != "functiongemma-tiny-random" {
		t.Errorf("architecture %q, name %q", kv.Architecture(), kv.String("general.name"))
	}
	tokens, types := kv.Strings("tokenizer.ggml.tokens"), kv.Ints("tokenizer.ggml.token_type")
	for i, tok := range functiongemma.Tokens() {
		id := ggufgen.FirstByteID + 256 + i
		if tokens[id] != tok || types[id] != 3 {
			t.Errorf("token %d = %q of type %d, want control token %q", id, tokens[id], types[id], tok)
		}
	}
	tmpl := kv.String("tokenizer.chat_template")
	if tmpl != ggufgen.FunctionGemmaChatTemplate || !functiongemma.Detect(tmpl, tokens) {
		t.Error("the chat template is not FunctionGemma's")
	}
	if _, ok := kv["gemma3.pooling_type"]; ok {
		t.Error("a decoder with a pooling type")
	}
}

// The embedding presets carry the keys llama.cpp's gemma-embedding loader
// reads, and no chat template.
func TestEmbeddingGemmaTinyHeader(t *testing.T) {
	t.Parallel()
	kv := decode(t, modeltest.Preset(t, ggufgen.PresetEmbeddingGemmaTiny))
	for key, want := range map[string]any{
		"general.architecture":                             "gemma-embedding",
		"gemma-embedding.pooling_type":                     uint32(1),
		"gemma-embedding.attention.sliding_window":         uint32(512),
		"gemma-embedding.attention.key_length":             uint32(32),
		"gemma-embedding.attention.layer_norm_rms_epsilon": float32(1e-6),
		"gemma-embedding.rope.freq_base":                   float32(1e6),
		"gemma-embedding.rope.freq_base_swa":               float32(10000),
		"gemma-embedding.dense_2_feat_in":                  uint32(64),
		"gemma-embedding.dense_2_feat_out":                 uint32(256),
		"gemma-embedding.dense_3_feat_in":                  uint32(256),
		"gemma-embedding.dense_3_feat_out":                 uint32(64),
		"tokenizer.ggml.add_eos_token":                     true,
	} {
		if got := kv[key]; got != want {
			t.Errorf("%s = %v (%T), want %v (%T)", key, got, got, want, want)
		}
	}
	for _, key := range []string{"tokenizer.chat_template", "gemma-embedding.rope.local.freq_base", "gemma-embedding.attention.causal"} {
		if _, ok := kv[key]; ok {
			t.Errorf("%s present", key)
		}
	}
}

func TestVocabularyControlTokens(t *testing.T) {
	t.Parallel()
	v, err := ggufgen.NewVocabulary(400, "<a>", "<b>")
	if err != nil {
		t.Fatal(err)
	}
	if v.Tokens[ggufgen.FirstByteID+256] != "<a>" || v.Tokens[ggufgen.FirstByteID+257] != "<b>" || len(v.Tokens) != 400 {
		t.Errorf("tokens %q..., %d in all", v.Tokens[ggufgen.FirstByteID+256:ggufgen.FirstByteID+258], len(v.Tokens))
	}
	for _, bad := range [][]string{{"<a>", "<a>"}, {"<eos>"}, {"a"}, {"<>"}, {"<0x0A>"}} {
		if _, err := ggufgen.NewVocabulary(400, bad...); err == nil {
			t.Errorf("control tokens %q accepted", bad)
		}
	}
}

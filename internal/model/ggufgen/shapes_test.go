package ggufgen

import "testing"

// The gemma3-270m preset has gemma-3-270m's tensors: llama.cpp reports the
// real model as 268.10 M parameters; in Q8_0 they take about 272 MiB.
func TestGemma3_270MTensors(t *testing.T) {
	t.Parallel()
	cfg, err := Preset(PresetGemma3_270M)
	if err != nil {
		t.Fatal(err)
	}
	var params, bytes uint64
	shapes := map[string][]uint64{}
	for _, ts := range tensors(cfg) {
		params += ts.Elements()
		bytes += ts.Size()
		shapes[ts.Name] = ts.Shape
	}
	if params != 268_098_176 {
		t.Errorf("%d parameters, want 268098176", params)
	}
	if bytes < 270<<20 || bytes > 275<<20 {
		t.Errorf("%d bytes of tensor data, want about 272 MiB", bytes)
	}
	for name, want := range map[string][2]uint64{
		"token_embd.weight":         {640, 262144},
		"blk.0.attn_q.weight":       {640, 1024},
		"blk.0.attn_k.weight":       {640, 256},
		"blk.0.attn_v.weight":       {640, 256},
		"blk.0.attn_output.weight":  {1024, 640},
		"blk.17.ffn_gate.weight":    {640, 2048},
		"blk.17.ffn_down.weight":    {2048, 640},
		"blk.17.attn_q_norm.weight": {256, 0},
	} {
		got := shapes[name]
		if len(got) == 0 || got[0] != want[0] || (want[1] != 0 && (len(got) != 2 || got[1] != want[1])) {
			t.Errorf("%s: shape %v, want %v", name, got, want)
		}
	}
}

// Each weight type stores gemma-3-270m in the size llama.cpp's quantizer
// would, Q4_K falling back to Q5_0 for the 640-wide rows as llama.cpp does.
func TestGemma3_270MTypes(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	for _, tc := range []struct {
		weights, embedding Type
		mib                float64 // tensor data: values × bytes per value, plus 0.2 MiB of f32 norms
		kinds              map[string]Type
	}{
		// 167.8 M embedding values, 100.3 M in the layers' matrices, of
		// which 64.9 M read 640-wide rows and 35.4 M do not. Bytes per
		// value: Q8_0 34/32, Q4_0 and IQ4_NL 18/32, Q5_0 22/32, Q4_K 144/256.
		{TypeQ8_0, "", 271.9, map[string]Type{"token_embd.weight": TypeQ8_0, "blk.0.ffn_down.weight": TypeQ8_0}},
		{TypeQ4_0, "", 144.0, map[string]Type{"token_embd.weight": TypeQ4_0, "blk.0.attn_q.weight": TypeQ4_0}},
		{TypeIQ4NL, "", 144.0, map[string]Type{"token_embd.weight": TypeIQ4NL, "blk.3.ffn_up.weight": TypeIQ4NL}},
		{TypeQ4_K, "", 171.7, map[string]Type{
			"token_embd.weight": TypeQ5_0, "blk.0.attn_q.weight": TypeQ5_0, "blk.0.ffn_gate.weight": TypeQ5_0,
			"blk.0.attn_output.weight": TypeQ4_K, "blk.0.ffn_down.weight": TypeQ4_K,
		}},
		{TypeQ4_0, TypeQ8_0, 224.0, map[string]Type{"token_embd.weight": TypeQ8_0, "blk.17.ffn_down.weight": TypeQ4_0}},
	} {
		cfg, err := Preset(PresetGemma3_270M)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Weights, cfg.Embedding = tc.weights, tc.embedding
		if err := cfg.check(); err != nil {
			t.Fatal(err)
		}
		var bytes uint64
		kinds := map[string]uint32{}
		for _, ts := range tensors(cfg) {
			bytes += ts.Size()
			kinds[ts.Name] = ts.Kind
		}
		if got := float64(bytes) / mib; got < tc.mib-0.5 || got > tc.mib+0.5 {
			t.Errorf("%s/%s: %.1f MiB of tensor data, want %.1f", tc.weights, tc.embedding, got, tc.mib)
		}
		for name, want := range tc.kinds {
			if kinds[name] != uint32(formats[want].tensorType) {
				t.Errorf("%s/%s: %s is GGML type %d, want %s (%d)", tc.weights, tc.embedding, name, kinds[name], want, formats[want].tensorType)
			}
		}
	}
}

// functiongemma-270m is gemma-3-270m with seven more control tokens in the
// same 262,144 (the fillers make room): the same tensors, byte for byte in
// size.
func TestFunctionGemma270MTensors(t *testing.T) {
	t.Parallel()
	fg, err := Preset(PresetFunctionGemma270M)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := Preset(PresetGemma3_270M)
	if fg.architecture() != ArchGemma3 || len(fg.ControlTokens) != 7 || fg.ChatTemplate != FunctionGemmaChatTemplate {
		t.Errorf("preset %+v", fg)
	}
	count := func(c Config) (params uint64, n int) {
		for _, ts := range tensors(c) {
			params += ts.Elements()
			n++
		}
		return params, n
	}
	if p, n := count(fg); p != 268_098_176 || n != 2+13*18 {
		t.Errorf("%d parameters in %d tensors, want 268098176 in %d", p, n, 2+13*18)
	}
	if fg.VocabSize != g.VocabSize || fg.EmbeddingLength != g.EmbeddingLength || fg.BlockCount != g.BlockCount {
		t.Error("functiongemma-270m's shapes differ from gemma3-270m's")
	}
}

// embeddinggemma-300m has EmbeddingGemma-300m's 307,581,696 parameters
// (302,863,104 in the encoder, 4,718,592 in the two projections).
func TestEmbeddingGemma300MTensors(t *testing.T) {
	t.Parallel()
	cfg, err := Preset(PresetEmbeddingGemma300M)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	var params uint64
	shapes := map[string][]uint64{}
	for _, ts := range tensors(cfg) {
		params += ts.Elements()
		shapes[ts.Name] = ts.Shape
	}
	if params != 307_581_696 {
		t.Errorf("%d parameters, want 307581696", params)
	}
	for name, want := range map[string][2]uint64{
		"token_embd.weight":         {768, 262144},
		"dense_2.weight":            {768, 3072},
		"dense_3.weight":            {3072, 768},
		"blk.0.attn_q.weight":       {768, 768},
		"blk.0.attn_k.weight":       {768, 256},
		"blk.23.attn_output.weight": {768, 768},
		"blk.23.ffn_up.weight":      {768, 1152},
		"blk.23.ffn_down.weight":    {1152, 768},
	} {
		got := shapes[name]
		if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("%s: shape %v, want %v", name, got, want)
		}
	}
	if _, ok := shapes["blk.24.attn_q.weight"]; ok {
		t.Error("more than 24 layers")
	}
}

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

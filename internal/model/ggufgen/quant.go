package ggufgen

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"

	"github.com/ollama/ollama/fs/ggml"
	"github.com/x448/float16"
)

// Type is the storage type of the generated weight matrices, named as
// llama.cpp's quantize tool names them.
type Type string

// The types Write can generate. All but Q8_0 and Q5_0 have repacked
// (interleaved) AVX2 kernels in llama.cpp's CPU backend; Q5_0 is what
// llama.cpp's quantizer writes instead of Q4_K for rows whose length is
// not a multiple of 256, and Write does the same.
const (
	TypeQ8_0  Type = "q8_0"
	TypeQ4_0  Type = "q4_0"
	TypeQ4_K  Type = "q4_k"
	TypeIQ4NL Type = "iq4_nl"
	TypeQ5_0  Type = "q5_0"
)

// Types lists the types a Config may ask for.
func Types() []Type { return []Type{TypeQ8_0, TypeQ4_0, TypeQ4_K, TypeIQ4NL, TypeQ5_0} }

// TypeNames is Types as one comma-separated string, for messages.
func TypeNames() string {
	var names []string
	for _, t := range Types() {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}

// ParseType reads a type name such as "Q4_0" or "iq4_nl".
func ParseType(s string) (Type, error) {
	t := Type(strings.ToLower(s))
	if _, ok := formats[t]; !ok {
		return "", fmt.Errorf("unknown weight type %q (known: %s)", s, TypeNames())
	}
	return t, nil
}

// iq4nlValues is IQ4_NL's non-linear table of the 16 levels a 4-bit index
// stands for (kvalues_iq4nl in ggml).
var iq4nlValues = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// format is how one type stores a block of values, and how to fill a block
// with random values whose standard deviation is weightStdDev.
type format struct {
	tensorType ggml.TensorType
	fileType   ggml.FileType
	block      int // values per block
	size       int // bytes per block
	// fill writes the fixed fields (scales) over a block of random bytes.
	fill func(block []byte)
}

// weightStdDev is the usual initialisation's standard deviation, which keeps
// activations finite through the layers.
const weightStdDev = 0.02

// scale is the float16 bits of the scale that maps integer levels with
// standard deviation levelStdDev to weights with weightStdDev.
func scale(levelStdDev float64) uint16 {
	return float16.Fromfloat32(float32(weightStdDev / levelStdDev)).Bits()
}

// llama.cpp's FileType numbers the enum in ollama's ggml package leaves
// unexported.
const (
	fileTypeQ4_0    ggml.FileType   = 2
	fileTypeQ5_0    ggml.FileType   = 8
	fileTypeIQ4_NL  ggml.FileType   = 25
	tensorTypeIQ4NL ggml.TensorType = 20
)

var formats = map[Type]format{
	// d (f16), 32 × int8: levels uniform over -128..127 (sd ≈ 74).
	TypeQ8_0: {ggml.TensorTypeQ8_0, ggml.FileTypeQ8_0, 32, 34, func(b []byte) {
		binary.LittleEndian.PutUint16(b, scale(74))
	}},
	// d (f16), 16 bytes of nibbles: levels q-8, q uniform over 0..15 (sd ≈ 4.6).
	TypeQ4_0: {ggml.TensorTypeQ4_0, fileTypeQ4_0, 32, 18, func(b []byte) {
		binary.LittleEndian.PutUint16(b, scale(4.61))
	}},
	// d (f16), 4 bytes of fifth bits, 16 bytes of nibbles: levels q-16, q
	// uniform over 0..31 (sd ≈ 9.2).
	TypeQ5_0: {ggml.TensorTypeQ5_0, fileTypeQ5_0, 32, 22, func(b []byte) {
		binary.LittleEndian.PutUint16(b, scale(9.23))
	}},
	// d (f16), 16 bytes of nibbles indexing iq4nlValues (sd ≈ 67.4).
	TypeIQ4NL: {tensorTypeIQ4NL, fileTypeIQ4_NL, 32, 18, func(b []byte) {
		binary.LittleEndian.PutUint16(b, scale(67.4))
	}},
	// A super-block of 256: d and dmin (f16), 12 bytes packing eight 6-bit
	// scales and mins, 128 bytes of nibbles; value = d·sc·q − dmin·m.
	// Every scale byte 0x55 makes sc = m = 21 in all eight sub-blocks
	// (get_scale_min_k4), and dmin = 7.5·d centres the levels: 21·d·(q−7.5).
	TypeQ4_K: {ggml.TensorTypeQ4_K, ggml.FileTypeQ4_K_M, 256, 144, func(b []byte) {
		d := float32(weightStdDev / (21 * 4.61))
		binary.LittleEndian.PutUint16(b, float16.Fromfloat32(d).Bits())
		binary.LittleEndian.PutUint16(b[2:], float16.Fromfloat32(7.5*d).Bits())
		for i := 4; i < 16; i++ {
			b[i] = 0x55
		}
	}},
}

// storage is the type a matrix of rows of cols values is written in when t
// is asked for: Q4_K needs rows that are whole super-blocks, and, like
// llama.cpp's quantizer, Write falls back to Q5_0 where they are not (in
// gemma-3-270m every matrix that reads the 640-wide embedding).
func storage(t Type, cols int) Type {
	if t == TypeQ4_K && cols%formats[TypeQ4_K].block != 0 {
		return TypeQ5_0
	}
	return t
}

// randomBlocks writes blocks of random values of one format, a chunk at a
// time, so that even the 170 MiB embedding of gemma3-270m never sits in
// memory whole.
type randomBlocks struct {
	format format
	blocks int
	seed   [32]byte
}

func (r randomBlocks) WriteTo(w io.Writer) (int64, error) {
	const chunkBlocks = 4096
	rng := rand.NewChaCha8(r.seed)
	size := r.format.size
	buf := make([]byte, chunkBlocks*size)
	var written int64
	for left := r.blocks; left > 0; {
		n := min(left, chunkBlocks)
		chunk := buf[:n*size]
		rng.Read(chunk)
		for b := range n {
			r.format.fill(chunk[b*size : (b+1)*size])
		}
		m, err := w.Write(chunk)
		written += int64(m)
		if err != nil {
			return written, err
		}
		left -= n
	}
	return written, nil
}

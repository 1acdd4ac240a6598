package model

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/ollama/ollama/fs/ggml"
)

// Info is what Validate learns from a GGUF file's header.
type Info struct {
	Path         string
	FileSize     int64
	Version      uint32 // GGUF format version
	Architecture string // general.architecture, e.g. "gemma3", "llama"
	Name         string // general.name; may be empty
	// ContextLength is the context the model was trained with
	// (<arch>.context_length); 0 when the file does not say.
	ContextLength int
	// HeadDimK and HeadDimV are the sizes of one attention head's key and
	// value (<arch>.attention.key_length, value_length, or the embedding
	// length over the head count); 0 when the file does not say.
	HeadDimK, HeadDimV int
	// ChatTemplate is tokenizer.chat_template (Jinja); empty for base models.
	ChatTemplate string
	// Tokenizer is tokenizer.ggml.model: "llama" (SentencePiece), "gpt2"
	// (byte-level BPE), "t5", "bert", ...
	Tokenizer string
	// PoolingType is <arch>.pooling_type as llama.cpp numbers it (1 mean,
	// 2 CLS, 3 last, ...): set by embedding models, whose output is one
	// vector per input rather than text; 0 for a generative model.
	PoolingType int
	Tensors     int
	Parameters  uint64
	FileType    string // e.g. "Q8_0", "F32"
}

// ggufMagic starts every little-endian GGUF file. llama.cpp reads only
// little-endian files, so the big-endian variant is refused as not GGUF.
var ggufMagic = []byte("GGUF")

// Supported GGUF versions: llama.cpp reads 2 and 3; version 1 predates
// 64-bit counts and was dropped.
const (
	minVersion = 2
	maxVersion = 3
)

// Validate checks that path is a GGUF file llama.cpp can load — right
// magic, supported version, a header that decodes, tensor data all present —
// and returns what its header says. It reads the header only, not the
// tensors.
//
// The header is trusted not to be hostile: lengths inside it are used to
// allocate, so a deliberately crafted file could exhaust memory. Downloads
// are pinned by sha256, which covers the files Fetch provides.
func Validate(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("model: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("model: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Info{}, fmt.Errorf("model %s: not a regular file", path)
	}
	info := Info{Path: path, FileSize: st.Size()}

	var head [8]byte // magic, then the uint32 version
	n, err := io.ReadFull(f, head[:])
	switch {
	case n == 0:
		return info, fmt.Errorf("%w: %s is empty", ErrNotGGUF, path)
	case !bytes.HasPrefix(head[:n], ggufMagic) && !bytes.HasPrefix(ggufMagic, head[:n]):
		return info, fmt.Errorf("%w: %s starts with %q, not %q", ErrNotGGUF, path, head[:min(n, 4)], ggufMagic)
	case err != nil:
		return info, fmt.Errorf("%w: %s has only %d bytes", ErrTruncated, path, n)
	}
	info.Version = binary.LittleEndian.Uint32(head[4:])
	if info.Version < minVersion || info.Version > maxVersion {
		return info, fmt.Errorf("%w: %s is GGUF version %d; supported: %d to %d", ErrUnsupportedVersion, path, info.Version, minVersion, maxVersion)
	}

	// ggml.Decode refuses a file whose tensors run past its end, but with an
	// untyped error. Showing it a reader without an end (a section as long
	// as can be) lets it decode the header alone; the size check below then
	// names the truncation precisely.
	g, err := ggml.Decode(io.NewSectionReader(f, 0, math.MaxInt64), 0)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return info, fmt.Errorf("%w: %s ends inside its header (%d bytes)", ErrTruncated, path, info.FileSize)
	}
	if err != nil {
		return info, fmt.Errorf("%w: %s: %v", ErrMalformed, path, err)
	}

	kv, ts := g.KV(), g.Tensors()
	if len(ts.Items()) == 0 {
		// A vocabulary-only GGUF decodes but cannot generate anything.
		return info, fmt.Errorf("%w: %s has no tensors", ErrMalformed, path)
	}
	need := int64(ts.Offset)
	for _, t := range ts.Items() {
		need = max(need, int64(ts.Offset+t.Offset+t.Size()))
	}
	if info.FileSize < need {
		return info, fmt.Errorf("%w: %s has %d bytes, its header describes %d", ErrTruncated, path, info.FileSize, need)
	}

	info.Architecture = kv.String("general.architecture")
	if info.Architecture == "" {
		return info, fmt.Errorf("%w: %s has no general.architecture", ErrMalformed, path)
	}
	info.Name = kv.String("general.name")
	info.ContextLength = int(uintValue(kv, info.Architecture+".context_length"))
	info.HeadDimK, info.HeadDimV = headDims(kv, info.Architecture)
	info.ChatTemplate = kv.ChatTemplate()
	info.Tokenizer = kv.String("tokenizer.ggml.model")
	info.PoolingType = int(uintValue(kv, info.Architecture+".pooling_type"))
	info.Tensors = len(ts.Items())
	info.Parameters = kv.ParameterCount()
	// kv.FileType() would call 0 (all F32) unknown, so the key is read here.
	if ft, ok := kv["general.file_type"].(uint32); ok {
		info.FileType = fileTypeName(ft)
	}
	return info, nil
}

// fileTypeName is llama.cpp's name for general.file_type. ollama's ggml
// package names the types it runs itself and calls the others "unknown";
// the i-quants among them load in llama.cpp and are named here.
func fileTypeName(ft uint32) string {
	if s := ggml.FileType(ft).String(); s != "unknown" {
		return s
	}
	if s, ok := llamaFileTypes[ft]; ok {
		return s
	}
	return fmt.Sprintf("unknown (%d)", ft)
}

// llamaFileTypes: llama.cpp's llama_ftype values (LLAMA_FTYPE_MOSTLY_*)
// that ollama's ggml package does not name.
var llamaFileTypes = map[uint32]string{
	19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS",
	24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
	29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
}

func headDims(kv ggml.KV, arch string) (k, v int) {
	k = int(uintValue(kv, arch+".attention.key_length"))
	v = int(uintValue(kv, arch+".attention.value_length"))
	if heads := uintValue(kv, arch+".attention.head_count"); heads > 0 {
		dim := int(uintValue(kv, arch+".embedding_length") / heads)
		k, v = cmp.Or(k, dim), cmp.Or(v, dim)
	}
	return k, v
}

// uintValue reads an integer key whatever integer type the converter wrote
// it as (ggml.KV's accessors want one exact type).
func uintValue(kv ggml.KV, key string) uint64 {
	switch v := kv[key].(type) {
	case uint32:
		return uint64(v)
	case uint64:
		return v
	case int32:
		return uint64(max(v, 0))
	case int64:
		return uint64(max(v, 0))
	}
	return 0
}

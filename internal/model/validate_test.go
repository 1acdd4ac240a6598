package model

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

func TestValidateStories(t *testing.T) {
	t.Parallel()
	info, err := Validate(modeltest.Stories(t))
	if err != nil {
		t.Fatal(err)
	}
	// The values shared/models/README.md documents for stories260K.
	want := Info{
		Path: info.Path, FileSize: 1185376, Version: 3, Architecture: "llama", Name: "llama",
		ContextLength: 2048, HeadDimK: 8, HeadDimV: 8, Tokenizer: "llama", Tensors: 48, Parameters: info.Parameters,
	}
	if info != want {
		t.Errorf("Validate = %+v\nwant       %+v", info, want)
	}
	if info.Parameters < 290_000 || info.Parameters > 300_000 {
		t.Errorf("Parameters = %d, want about 292.8 K", info.Parameters)
	}
}

// tinyModel writes the tiny generated gemma3 model into a temporary
// directory and returns its path.
func tinyModel(t *testing.T) string {
	return modeltest.Tiny(t, nil)
}

func TestValidateGenerated(t *testing.T) {
	t.Parallel()
	info, err := Validate(tinyModel(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Architecture != "gemma3" || info.Name != "gemma3-tiny-random" || info.ContextLength != 2048 ||
		info.HeadDimK != 32 || info.HeadDimV != 32 || info.ChatTemplate != ggufgen.Gemma3ChatTemplate || info.FileType != "Q8_0" {
		t.Errorf("Validate = %+v", info)
	}
}

// A file type ollama's ggml package does not name is given llama.cpp's name.
func TestValidateFileTypeNames(t *testing.T) {
	t.Parallel()
	for typ, want := range map[ggufgen.Type]string{ggufgen.TypeIQ4NL: "IQ4_NL", ggufgen.TypeQ4_0: "Q4_0"} {
		info, err := Validate(modeltest.Tiny(t, func(c *ggufgen.Config) { c.Weights = typ }))
		if err != nil {
			t.Fatal(err)
		}
		if info.FileType != want {
			t.Errorf("%s file: FileType %q, want %q", typ, info.FileType, want)
		}
	}
	if got := fileTypeName(1000); got != "unknown (1000)" {
		t.Errorf("fileTypeName(1000) = %q", got)
	}
}

// Files that are not complete, loadable GGUF are refused with a typed
// error, whatever the damage.
func TestValidateRefuses(t *testing.T) {
	t.Parallel()
	good, err := os.ReadFile(tinyModel(t))
	if err != nil {
		t.Fatal(err)
	}
	withVersion := func(v uint32) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint32(b[4:], v)
		return b
	}
	for _, tc := range []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"empty", nil, ErrNotGGUF},
		{"text", []byte("this is not a model, just some text"), ErrNotGGUF},
		{"safetensors-like", append([]byte{0x10, 0, 0, 0, 0, 0, 0, 0}, `{"a":1}`...), ErrNotGGUF},
		{"big-endian GGUF", append([]byte("FUGG"), good[4:]...), ErrNotGGUF},
		{"magic only", good[:4], ErrTruncated},
		{"half the magic", good[:2], ErrTruncated},
		{"version 1", withVersion(1), ErrUnsupportedVersion},
		{"version 4", withVersion(4), ErrUnsupportedVersion},
		{"cut in the key/values", good[:100], ErrTruncated},
		{"cut in the tensor data", good[:len(good)/2], ErrTruncated},
		{"one byte short", good[:len(good)-1], ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "bad.gguf")
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Validate(path); !errors.Is(err, tc.wantErr) {
				t.Errorf("Validate = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// Every prefix of a good file is refused as truncated: the header decoder
// must neither panic nor accept a short file, wherever the cut falls.
func TestValidateEveryCutIsTruncated(t *testing.T) {
	t.Parallel()
	good, err := os.ReadFile(tinyModel(t))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cut.gguf")
	// Every byte through the header (the tokenizer makes it long), then
	// coarser steps through the tensor data.
	for n := 4; n < len(good); {
		if err := os.WriteFile(path, good[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Validate(path); !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d of %d bytes: Validate = %v, want ErrTruncated", n, len(good), err)
		}
		if n < 20_000 {
			n += 31
		} else {
			n += 4099
		}
	}
}

func TestValidateMissingFile(t *testing.T) {
	t.Parallel()
	if _, err := Validate(filepath.Join(t.TempDir(), "absent.gguf")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Validate = %v, want os.ErrNotExist", err)
	}
}

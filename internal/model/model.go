// Package model says where the inference service's GGUF file comes from:
// a local path, or an https URL that is downloaded once into a cache and
// checked against its sha256 (Fetch), and whether a file is a GGUF that
// llama.cpp can load (Validate).
package model

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// The default model: Google's Gemma 3 270M instruction-tuned, quantised to
// Q8_0 by ggml-org. Its size and sha256 are pinned here so that the default
// needs no flags and a corrupted or replaced upstream file is refused.
const (
	DefaultName   = "gemma-3-270m-it"
	DefaultURL    = "https://huggingface.co/ggml-org/gemma-3-270m-it-GGUF/resolve/main/gemma-3-270m-it-Q8_0.gguf"
	DefaultSize   = 291545600
	DefaultSHA256 = "0ef57d2c838458a1952664260dcba38e5bdda37494f3af732f06e4add24068e3"
)

// Errors returned by Fetch and Validate; check them with errors.Is. The
// error values carry the detail (URL, expected and actual values).
var (
	// ErrChecksumRequired: a URL was given without a sha256. Downloads are
	// only trusted when their content is pinned.
	ErrChecksumRequired = errors.New("a sha256 is required for a model URL")
	// ErrInsecureURL: the URL is not https (plain http is allowed only to
	// loopback hosts, for tests).
	ErrInsecureURL = errors.New("model URL must be https")
	// ErrChecksumMismatch: the file's sha256 is not the expected one.
	ErrChecksumMismatch = errors.New("sha256 mismatch")
	// ErrSizeMismatch: the file's size is not the expected one.
	ErrSizeMismatch = errors.New("size mismatch")

	// ErrNotGGUF: the file does not start with the GGUF magic.
	ErrNotGGUF = errors.New("not a GGUF file")
	// ErrTruncated: the file ends before the header or the tensor data it
	// describes (typically an interrupted copy or download).
	ErrTruncated = errors.New("GGUF file is truncated")
	// ErrUnsupportedVersion: a GGUF version llama.cpp cannot read.
	ErrUnsupportedVersion = errors.New("unsupported GGUF version")
	// ErrMalformed: the GGUF header cannot be decoded or lacks required keys.
	ErrMalformed = errors.New("malformed GGUF file")
)

// Source is where a model comes from: Ref is a local path or an http(s)
// URL. SHA256 (hex) is required for URLs and, when set for a path, the file
// is checked against it. Size in bytes is optional; when set it is checked
// too, and lets an interrupted download be judged before hashing it.
type Source struct {
	Ref    string
	SHA256 string
	Size   int64
}

// DefaultSource is the pinned default model.
func DefaultSource() Source {
	return Source{Ref: DefaultURL, SHA256: DefaultSHA256, Size: DefaultSize}
}

// Name is the name a model from this source is served under: the default
// model's name for the default URL, else the file name without its
// extension (of the path, or of the URL's last segment).
func (s Source) Name() string {
	if s.Ref == "" || s.Ref == DefaultURL {
		return DefaultName
	}
	base := s.Ref
	if s.IsURL() {
		if u, err := url.Parse(s.Ref); err == nil {
			base = u.Path
		}
	}
	base = path.Base(filepath.ToSlash(base))
	return strings.TrimSuffix(base, path.Ext(base))
}

// IsURL reports whether Ref is a URL rather than a local path.
func (s Source) IsURL() bool {
	return strings.HasPrefix(s.Ref, "https://") || strings.HasPrefix(s.Ref, "http://")
}

// withDefaults fills an empty Ref with the default model, and the default
// model's checksum and size when Ref is the default URL without them, so
// that `-model` alone (or nothing) works.
func (s Source) withDefaults() Source {
	if s.Ref == "" {
		s.Ref = DefaultURL
	}
	if s.Ref == DefaultURL && s.SHA256 == "" {
		s.SHA256, s.Size = DefaultSHA256, DefaultSize
	}
	s.SHA256 = strings.ToLower(strings.TrimSpace(s.SHA256))
	return s
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// check reports a Source that cannot be fetched, before any I/O.
func (s Source) check() (*url.URL, error) {
	if s.SHA256 != "" && !sha256Hex.MatchString(s.SHA256) {
		return nil, fmt.Errorf("sha256 %q: want 64 hex digits", s.SHA256)
	}
	if s.Size < 0 {
		return nil, fmt.Errorf("size %d: must not be negative", s.Size)
	}
	if !s.IsURL() {
		return nil, nil
	}
	u, err := url.Parse(s.Ref)
	if err != nil {
		return nil, fmt.Errorf("model URL: %w", err)
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())) {
		return nil, fmt.Errorf("%w: %s (plain http is only allowed to loopback hosts)", ErrInsecureURL, redact(u))
	}
	if s.SHA256 == "" {
		return nil, fmt.Errorf("%w: %s (pass its sha256, e.g. -model-sha256)", ErrChecksumRequired, redact(u))
	}
	return u, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redact drops credentials and query strings (which may hold signed tokens)
// from a URL before it is logged or put in an error.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	return c.String()
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/model"
)

// ErrModel: the model to release cannot be read or downloaded, does not
// match its sha256, or is not a GGUF file. The model package's error
// (model.ErrChecksumMismatch, model.ErrNotGGUF, ...) is wrapped too.
var ErrModel = errors.New("model refused")

// modelPrefix is where models live in the artifacts bucket, each under
// its own sha256: releases that ship the same file share one object.
const modelPrefix = "models/"

// shaMetadata is the object metadata key that records the sha256 of an
// uploaded model, which a later release compares before uploading again.
// (S3's own SHA256 checksum of a multipart upload is a checksum of the
// parts' checksums, not the file's.)
const shaMetadata = "sha256"

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkModel validates the model settings, before anything runs.
func (r *Release) checkModel() error {
	r.ModelSHA256 = strings.ToLower(strings.TrimSpace(r.ModelSHA256))
	switch {
	case r.Model == "" && r.ModelSHA256 == "":
		return nil
	case r.Model == "":
		return fmt.Errorf("%w: -model-sha256 without -model", ErrUsage)
	case !sha256Hex.MatchString(r.ModelSHA256):
		return fmt.Errorf("%w: -model-sha256 %q: want the model file's sha256, 64 hex digits (a model is always pinned)", ErrUsage, r.ModelSHA256)
	}
	if strings.Contains(r.Model, "://") {
		u, err := url.Parse(r.Model)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%w: -model %q: want a local path or an https URL", ErrUsage, r.Model)
		}
	}
	return nil
}

// FetchModel makes the model a local file that matches ModelSHA256: a
// path is checked as it is; a URL is downloaded once into ModelCacheDir
// (the service's download cache by default, so a model that a local run
// has downloaded is not downloaded again) and checked. The file must be a
// GGUF file, so that a wrong file fails here rather than on every node.
func (r *Release) FetchModel(ctx context.Context) error {
	log := hclog.New(&hclog.LoggerOptions{Name: "model", Output: r.Log, Level: hclog.Info})
	p, err := model.Fetch(ctx, model.Source{Ref: r.Model, SHA256: r.ModelSHA256}, model.FetchOptions{
		CacheDir: r.ModelCacheDir, Logger: log, Progress: r.Log,
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrModel, err)
	}
	if _, err := model.Validate(p); err != nil {
		return fmt.Errorf("%w: %w", ErrModel, err)
	}
	r.modelPath = p
	return nil
}

// ModelKey is the model's S3 key: models/<sha256>/<file name>, the file
// name that of the path or of the URL's last segment.
func (r *Release) ModelKey() string {
	base := r.Model
	if u, err := url.Parse(r.Model); err == nil && u.Scheme != "" && u.Host != "" {
		base = u.Path
	}
	name := strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
			return c
		}
		return '_'
	}, path.Base(filepath.ToSlash(base)))
	if strings.Trim(name, "._") == "" {
		name = "model.gguf"
	}
	return modelPrefix + r.ModelSHA256 + "/" + name
}

// headObject is what `aws s3api head-object --output json` says of an
// object, the part of it a release reads.
type headObject struct {
	ContentLength int64
	Metadata      map[string]string
}

// UploadModel copies the model to ModelKey unless the bucket already holds
// it: an object of the same size whose metadata records the same sha256.
// Anything else there (or a failed look-up) is replaced. The nodes check
// the sha256 of what they fetch in any case.
func (r *Release) UploadModel(ctx context.Context) error {
	st, err := os.Stat(r.modelPath)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrModel, err)
	}
	dst := "s3://" + r.Bucket + "/" + r.ModelKey()
	head := []string{"s3api", "head-object", "--region", r.Region, "--bucket", r.Bucket, "--key", r.ModelKey(), "--output", "json"}
	var out bytes.Buffer
	if err := r.Runner(ctx, r.Root, nil, &out, "aws", head...); err == nil {
		var h headObject
		// The JSON document is all of stdout; anything before it is a
		// warning of the CLI's.
		if i := bytes.IndexByte(out.Bytes(), '{'); i >= 0 && json.Unmarshal(out.Bytes()[i:], &h) == nil &&
			h.ContentLength == st.Size() && h.Metadata[shaMetadata] == r.ModelSHA256 {
			fmt.Fprintf(r.Log, "==> %s is in the bucket already: not uploaded again\n", dst)
			return nil
		}
	}
	args := []string{"s3", "cp", "--only-show-errors", "--region", r.Region,
		"--metadata", shaMetadata + "=" + r.ModelSHA256, r.modelPath, dst}
	fmt.Fprintf(r.Log, "==> aws %s\n", strings.Join(args, " "))
	if err := r.Runner(ctx, r.Root, nil, r.Log, "aws", args...); err != nil {
		return fmt.Errorf("%w: aws %s: %v (are AWS credentials set for this account?)", ErrUpload, strings.Join(args, " "), err)
	}
	return nil
}

// ModelURL is the artifact source of the model (see URL).
func (r *Release) ModelURL() string { return r.objectURL(r.ModelKey()) }

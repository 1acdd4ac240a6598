package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/model"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
	"github.com/slm-mesh/slm-mesh/jobs"
)

// The tests below run releases with the recorder, whose bucket stands in
// for S3 (the aws CLI cannot reach AWS here); the model itself is a real
// GGUF file (modeltest.Tiny), served over http by a local server where the
// release downloads it.

// tinyModel is a tiny GGUF file and its sha256.
func tinyModel(t *testing.T) (path, sum string) {
	t.Helper()
	path = modeltest.Tiny(t, nil)
	sum, err := model.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, sum
}

// modelCopies are the `aws s3 cp` commands that uploaded a model.
func modelCopies(rec *recorder) []string {
	var out []string
	for _, c := range rec.named("aws") {
		if strings.HasPrefix(c, "aws s3 cp ") && strings.Contains(c, " s3://slm-mesh-artifacts-1a2b/models/") {
			out = append(out, c)
		}
	}
	return out
}

// renderedModel is the model_url and model_sha256 the inference job gets
// from the release's variables file.
func renderedModel(t *testing.T, r *Release) (url, sum string) {
	t.Helper()
	var vals jobs.Values
	if err := vals.AddFile(r.VarsFile, mustRead(t, r.VarsFile)); err != nil {
		t.Fatal(err)
	}
	inference, err := jobs.Lookup("inference")
	if err != nil {
		t.Fatal(err)
	}
	j, err := jobs.Render(inference, &vals)
	if err != nil {
		t.Fatal(err)
	}
	return j.String("model_url"), j.String("model_sha256")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestModelUpload: the model goes to models/<sha256>/<file name>, with its
// sha256 in the object's metadata, before the binaries; the variables
// file points the inference job at it through the bucket's regional host.
// A later release finds it there and does not upload it again.
func TestModelUpload(t *testing.T) {
	t.Parallel()
	path, sum := tinyModel(t)
	rec := &recorder{}
	r := testRelease(t, rec)
	r.Model, r.ModelSHA256 = path, sum
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	key := "models/" + sum + "/tiny.gguf"
	aws := rec.named("aws")
	want := []string{
		"aws s3api head-object --region eu-central-1 --bucket slm-mesh-artifacts-1a2b --key " + key + " --output json",
		"aws s3 cp --only-show-errors --region eu-central-1 --metadata sha256=" + sum + " " + path + " s3://slm-mesh-artifacts-1a2b/" + key,
	}
	if len(aws) != 2+len(Services)+1 || aws[0] != want[0] || aws[1] != want[1] {
		t.Fatalf("aws commands:\n%s\nwant first:\n%s", strings.Join(aws, "\n"), strings.Join(want, "\n"))
	}
	if obj := rec.bucket["s3://slm-mesh-artifacts-1a2b/"+key]; obj.sha256 != sum {
		t.Errorf("the bucket holds %+v at %s, want the model (sha256 %s)", obj, key, sum)
	}
	url, gotSum := renderedModel(t, r)
	if want := "s3::https://slm-mesh-artifacts-1a2b.s3.eu-central-1.amazonaws.com/" + key; url != want || gotSum != sum {
		t.Errorf("inference job: model_url %q, model_sha256 %q; want %q, %q", url, gotSum, want, sum)
	}

	// The next release ships the same file: it is there, not uploaded again.
	next := testRelease(t, rec)
	next.Version, next.Model, next.ModelSHA256 = "v1.0.1", path, sum
	if err := next.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cps := modelCopies(rec); len(cps) != 1 {
		t.Errorf("model uploaded %d times, want once:\n%s", len(cps), strings.Join(cps, "\n"))
	}
	if url2, _ := renderedModel(t, next); url2 != url {
		t.Errorf("second release: model_url %q, want %q", url2, url)
	}
	if !strings.Contains(strings.Join(rec.named("aws"), "\n"), "s3://slm-mesh-artifacts-1a2b/releases/v1.0.1/linux_amd64/inference") {
		t.Errorf("second release did not upload its binaries:\n%s", strings.Join(rec.named("aws"), "\n"))
	}
}

// TestModelReplacedWhenDifferent: an object at the model's key that is not
// the model (another size, or no or another sha256 recorded) is replaced.
func TestModelReplacedWhenDifferent(t *testing.T) {
	t.Parallel()
	path, sum := tinyModel(t)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, obj := range map[string]s3Object{
		"truncated":       {size: st.Size() - 1, metadata: map[string]string{"sha256": sum}},
		"other sha256":    {size: st.Size(), metadata: map[string]string{"sha256": strings.Repeat("0", 64)}},
		"no sha256 noted": {size: st.Size(), metadata: map[string]string{}},
	} {
		rec := &recorder{bucket: map[string]s3Object{"s3://slm-mesh-artifacts-1a2b/models/" + sum + "/tiny.gguf": obj}}
		r := testRelease(t, rec)
		r.Model, r.ModelSHA256 = path, sum
		if err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if cps := modelCopies(rec); len(cps) != 1 {
			t.Errorf("%s: model uploaded %d times, want once", name, len(cps))
		}
	}
}

// TestModelChecksumMismatch: a model that is not the file its sha256 names
// is refused before anything is built or uploaded, and no variables file
// is written.
func TestModelChecksumMismatch(t *testing.T) {
	t.Parallel()
	path, _ := tinyModel(t)
	rec := &recorder{}
	r := testRelease(t, rec)
	r.Model, r.ModelSHA256 = path, "0ef57d2c838458a1952664260dcba38e5bdda37494f3af732f06e4add24068e3"
	err := r.Run(context.Background())
	if !errors.Is(err, ErrModel) || !errors.Is(err, model.ErrChecksumMismatch) {
		t.Fatalf("err = %v, want ErrModel and model.ErrChecksumMismatch", err)
	}
	if len(rec.cmds) != 0 {
		t.Errorf("ran %v for a model that does not match", rec.cmds)
	}
	if _, err := os.Stat(r.VarsFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("release.vars.hcl written (%v)", err)
	}
}

// TestModelNotGGUF: a file that matches its sha256 but is no GGUF file
// would fail on every node: the release refuses it.
func TestModelNotGGUF(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := os.WriteFile(path, []byte("<html>not a model</html>"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := model.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	r := testRelease(t, rec)
	r.Model, r.ModelSHA256 = path, sum
	if err := r.Run(context.Background()); !errors.Is(err, ErrModel) || !errors.Is(err, model.ErrNotGGUF) {
		t.Fatalf("err = %v, want ErrModel and model.ErrNotGGUF", err)
	}
	if len(rec.cmds) != 0 {
		t.Errorf("ran %v", rec.cmds)
	}
}

// TestModelFromURL: a URL is downloaded once (a local http server stands
// in for the model's host), checked, and uploaded under its sha256 with
// the URL's file name; a later release uploads the downloaded copy
// without downloading it again. A URL whose file does not match is
// refused and nothing is uploaded.
func TestModelFromURL(t *testing.T) {
	t.Parallel()
	path, sum := tinyModel(t)
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/org/tiny-GGUF/resolve/main/tiny-Q8_0.gguf" {
			http.NotFound(w, req)
			return
		}
		gets.Add(1)
		http.ServeFile(w, req, path)
	}))
	t.Cleanup(srv.Close)
	cache := t.TempDir()
	src := srv.URL + "/org/tiny-GGUF/resolve/main/tiny-Q8_0.gguf"

	for _, version := range []string{"v1.0.0", "v1.0.1"} {
		rec := &recorder{} // an empty bucket each time: both upload
		r := testRelease(t, rec)
		r.Version, r.Model, r.ModelSHA256, r.ModelCacheDir = version, src, sum, cache
		if err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		key := "s3://slm-mesh-artifacts-1a2b/models/" + sum + "/tiny-Q8_0.gguf"
		if obj, ok := rec.bucket[key]; !ok || obj.sha256 != sum || obj.metadata["sha256"] != sum {
			t.Errorf("%s: bucket holds %+v at %s, want the model", version, rec.bucket, key)
		}
		if url, _ := renderedModel(t, r); !strings.HasSuffix(url, ".amazonaws.com/models/"+sum+"/tiny-Q8_0.gguf") {
			t.Errorf("%s: model_url %q", version, url)
		}
	}
	if n := gets.Load(); n != 1 {
		t.Errorf("the model was downloaded %d times, want once", n)
	}

	// The same URL pinned to another file: downloaded, refused.
	rec := &recorder{}
	r := testRelease(t, rec)
	r.Model, r.ModelSHA256, r.ModelCacheDir = src, strings.Repeat("e", 64), t.TempDir()
	if err := r.Run(context.Background()); !errors.Is(err, model.ErrChecksumMismatch) {
		t.Fatalf("err = %v, want model.ErrChecksumMismatch", err)
	}
	if len(rec.cmds) != 0 || len(rec.bucket) != 0 {
		t.Errorf("ran %v, bucket %v", rec.cmds, rec.bucket)
	}
}

// TestModelVarsWithoutUpload: -upload=false still checks the model and
// writes its variables (for the same later upload the binaries need).
func TestModelVarsWithoutUpload(t *testing.T) {
	t.Parallel()
	path, sum := tinyModel(t)
	rec := &recorder{}
	r := testRelease(t, rec)
	r.Model, r.ModelSHA256, r.Upload = path, sum, false
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if aws := rec.named("aws"); len(aws) != 0 {
		t.Errorf("ran %v with -upload=false", aws)
	}
	if !regexp.MustCompile(`(?m)^model_sha256\s+= "` + sum + `"$`).Match(mustRead(t, r.VarsFile)) {
		t.Errorf("release.vars.hcl:\n%s", mustRead(t, r.VarsFile))
	}
}

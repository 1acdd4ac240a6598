package main

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/model"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
	"github.com/slm-mesh/slm-mesh/jobs"
)

// TestReleaseBuild builds the three services for real, as a release does
// (upload off: no AWS here), and checks the binaries, SHA256SUMS and the
// variables file, which the jobs and `submit render` must accept.
func TestReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the three services (llama.cpp for x86-64-v3: ~5 minutes on 2 CPUs unless Go's build cache has it)")
	}
	if host := runtime.GOOS + "_" + runtime.GOARCH; host != Platform {
		t.Skipf("builds for %s on %s: needs a C cross compiler", Platform, host)
	}
	dir := t.TempDir()
	var log bytes.Buffer
	r := &Release{
		Root: modeltest.RepoRoot(), Version: "v0.9.1-test", Bucket: "slm-mesh-artifacts-1a2b", Region: "eu-west-1",
		Dir: filepath.Join(dir, "bin"), VarsFile: filepath.Join(dir, "release.vars.hcl"), Upload: false,
		LookPath: func(string) (string, error) { return "", errors.New("no aws: the build must not need it") },
		Log:      &log,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("%v\n%s", err, log.Bytes())
	}

	// The binaries: for the nodes, stamped with the version, and what
	// SHA256SUMS says.
	sums, err := os.ReadFile(filepath.Join(r.Dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(sums), "\n"), "\n")
	if len(lines) != len(Services) {
		t.Fatalf("SHA256SUMS has %d lines:\n%s", len(lines), sums)
	}
	for i, svc := range Services {
		bin := filepath.Join(r.Dir, svc)
		sum, err := model.FileSHA256(bin)
		if err != nil {
			t.Fatal(err)
		}
		if want := sum + "  " + svc; lines[i] != want {
			t.Errorf("SHA256SUMS line %d = %q, want %q", i, lines[i], want)
		}
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: %v", svc, err)
		}
		if f.Machine != elf.EM_X86_64 {
			t.Errorf("%s: machine %v, want x86-64", svc, f.Machine)
		}
		f.Close()
		out, err := exec.Command(bin, "-version").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != svc+" v0.9.1-test" {
			t.Errorf("%s -version: %q, %v; want %q", svc, out, err, svc+" v0.9.1-test")
		}
	}
	// sha256sum, where installed, agrees.
	if _, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command("sha256sum", "-c", "SHA256SUMS")
		cmd.Dir = r.Dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v\n%s", err, out)
		}
	}

	// The variables file renders into jobs that fetch these binaries.
	src, err := os.ReadFile(r.VarsFile)
	if err != nil {
		t.Fatal(err)
	}
	var vals jobs.Values
	if err := vals.AddFile(r.VarsFile, src); err != nil {
		t.Fatal(err)
	}
	rendered, err := jobs.RenderAll(nil, &vals)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range rendered {
		svc := j.Job.Name
		url := "s3::https://slm-mesh-artifacts-1a2b.s3.eu-west-1.amazonaws.com/releases/v0.9.1-test/linux_amd64/" + svc
		if got := j.String(svc + "_binary_url"); got != url {
			t.Errorf("%s: binary url %q, want %q", svc, got, url)
		}
		if got := j.String(svc + "_binary_sha256"); got != r.Sums[svc] {
			t.Errorf("%s: sha256 %q, want %q", svc, got, r.Sums[svc])
		}
		if got := j.String("version"); got != "v0.9.1-test" {
			t.Errorf("%s: version %q", svc, got)
		}
	}

	// And submit render takes it as an operator would pass it.
	cmd := exec.CommandContext(ctx, "go", "run", "./tools/submit", "render", "-var-file", r.VarsFile)
	cmd.Dir = r.Root
	cmd.Env = append(os.Environ(), "NOMAD_ADDR=http://127.0.0.1:1") // render contacts nothing
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("submit render: %v\n%s", err, out)
	}
	for _, svc := range Services {
		if !bytes.Contains(out, []byte(r.Sums[svc])) {
			t.Errorf("submit render output lacks %s's sha256", svc)
		}
	}
}

// recorder is a Runner for the tests that must not run the commands: the
// aws CLI cannot reach AWS here, so the tests check the exact command
// lines a release would run instead. "go build" writes a stand-in binary
// (TestReleaseBuild builds for real). The bucket stands in for S3 as far
// as a release sees it: `aws s3 cp` of a local file to s3:// stores its
// size, sha256 and --metadata, and `aws s3api head-object` answers with
// them as the CLI does (JSON), or fails as the CLI does for a missing key.
type recorder struct {
	mu      sync.Mutex
	cmds    []string
	cflags  []string // CGO_CFLAGS and CGO_CXXFLAGS of each go build, as the command sees them
	failAWS bool
	git     string              // git describe's output
	bucket  map[string]s3Object // by s3://bucket/key
}

// s3Object is what the stand-in bucket keeps of an upload.
type s3Object struct {
	size     int64
	sha256   string // of the bytes uploaded
	metadata map[string]string
}

func (rec *recorder) run(_ context.Context, _ string, env []string, out io.Writer, name string, args ...string) error {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.cmds = append(rec.cmds, name+" "+strings.Join(args, " "))
	switch {
	case name == "go" && len(args) > 0 && args[0] == "build":
		rec.cflags = append(rec.cflags, envValue(env, "CGO_CFLAGS"), envValue(env, "CGO_CXXFLAGS"))
		i := slices.Index(args, "-o")
		return os.WriteFile(args[i+1], []byte("binary of "+args[len(args)-1]), 0o755)
	case name == "aws" && rec.failAWS:
		return errors.New("exit status 1")
	case name == "aws" && len(args) > 1 && args[0] == "s3" && args[1] == "cp":
		return rec.put(args[len(args)-2], args[len(args)-1], flagValue(args, "--metadata"))
	case name == "aws" && len(args) > 1 && args[0] == "s3api" && args[1] == "head-object":
		obj, ok := rec.bucket["s3://"+flagValue(args, "--bucket")+"/"+flagValue(args, "--key")]
		if !ok {
			// The CLI prints "An error occurred (404) when calling the
			// HeadObject operation: Not Found" and exits 254.
			fmt.Fprintln(out, "An error occurred (404) when calling the HeadObject operation: Not Found")
			return errors.New("exit status 254")
		}
		return json.NewEncoder(out).Encode(map[string]any{
			"AcceptRanges": "bytes", "ContentLength": obj.size, "ContentType": "binary/octet-stream", "Metadata": obj.metadata,
		})
	case name == "git":
		fmt.Fprintln(out, rec.git)
	}
	return nil
}

// put is `aws s3 cp src dst` into the stand-in bucket; metadata is the
// --metadata flag's k=v[,k=v].
func (rec *recorder) put(src, dst, metadata string) error {
	if !strings.HasPrefix(dst, "s3://") {
		return nil
	}
	sum, err := model.FileSHA256(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	obj := s3Object{size: st.Size(), sha256: sum, metadata: map[string]string{}}
	for _, kv := range strings.Split(metadata, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			obj.metadata[k] = v
		}
	}
	if rec.bucket == nil {
		rec.bucket = map[string]s3Object{}
	}
	rec.bucket[dst] = obj
	return nil
}

// flagValue is the argument after flag in args ("" without it).
func flagValue(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// envValue is what a command run with env sees as key: the last entry's.
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// TestBuildArch: the release compiles llama.cpp for the level it is given,
// x86-64-v3 by default, never for the build machine's own CPU, which is
// what the Makefile exports (CGO_CFLAGS with -march=native); a build for
// AVX-512 keeps the inference job to nodes that report it, one for AVX2
// places it anywhere.
func TestBuildArch(t *testing.T) {
	t.Setenv("CGO_CFLAGS", localmesh.DefaultCFlags)
	t.Setenv("CGO_CXXFLAGS", localmesh.DefaultCFlags)
	for arch, want := range map[string]string{"": "-march=x86-64-v3 ", "x86-64-v3": "-march=x86-64-v3 ", "x86-64-v4": "-march=x86-64-v4 "} {
		rec := &recorder{}
		r := testRelease(t, rec)
		r.Arch, r.Upload = arch, false
		if err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(rec.cflags) != 2*len(Services) {
			t.Fatalf("-arch %q: %d builds, want %d", arch, len(rec.cflags)/2, len(Services))
		}
		for _, f := range rec.cflags {
			if !strings.Contains(f, want) || strings.Contains(f, "native") || !strings.Contains(f, "GGML_USE_CPU_REPACK") {
				t.Errorf("-arch %q: built with %q, want %s and the project's other flags", arch, f, want)
			}
		}
		var vals jobs.Values
		if err := vals.AddFile(r.VarsFile, r.Vars()); err != nil {
			t.Fatal(err)
		}
		rendered, err := jobs.RenderAll(nil, &vals)
		if err != nil {
			t.Fatal(err)
		}
		wantLevel := map[string]string{"x86-64-v4": "v4"}[arch]
		// Each level in a folder of its own: one version built for both
		// never replaces the other's objects.
		wantDir := map[string]string{"x86-64-v4": "/linux_amd64_x86-64-v4/"}[arch]
		if wantDir == "" {
			wantDir = "/linux_amd64/"
		}
		for _, j := range rendered {
			if j.Job.Name == "inference" {
				if got := j.String("inference_x86_64_level"); got != wantLevel {
					t.Errorf("-arch %q: inference_x86_64_level %q, want %q", arch, got, wantLevel)
				}
				if got := j.String("inference_binary_url"); !strings.HasSuffix(got, "/releases/v1.0.0"+wantDir+"inference") {
					t.Errorf("-arch %q: binary url %q, want it in %s", arch, got, wantDir)
				}
			}
		}
	}
}

func (rec *recorder) named(name string) []string {
	var out []string
	for _, c := range rec.cmds {
		if strings.HasPrefix(c, name+" ") {
			out = append(out, c)
		}
	}
	return out
}

func testRelease(t *testing.T, rec *recorder) *Release {
	dir := t.TempDir()
	return &Release{
		Root: modeltest.RepoRoot(), Version: "v1.0.0", Bucket: "slm-mesh-artifacts-1a2b", Region: "eu-central-1",
		Dir: filepath.Join(dir, "bin"), VarsFile: filepath.Join(dir, "release.vars.hcl"), Upload: true,
		Runner: rec.run, LookPath: func(string) (string, error) { return "/usr/bin/aws", nil },
	}
}

func TestUploadCommands(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	r := testRelease(t, rec)
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, name := range []string{"gateway", "caller", "inference", "SHA256SUMS"} {
		want = append(want, fmt.Sprintf("aws s3 cp --only-show-errors --region eu-central-1 %s s3://slm-mesh-artifacts-1a2b/releases/v1.0.0/linux_amd64/%s",
			filepath.Join(r.Dir, name), name))
	}
	if got := rec.named("aws"); !slices.Equal(got, want) {
		t.Errorf("aws commands:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The builds: trimmed, stamped, one per service.
	builds := rec.named("go")
	if len(builds) != 3 || !strings.Contains(builds[2], "go build -trimpath -ldflags -s -w -X "+versionVar+"=v1.0.0 -o ") ||
		!strings.HasSuffix(builds[2], " ./services/inference") {
		t.Errorf("builds:\n%s", strings.Join(builds, "\n"))
	}
	vars, err := os.ReadFile(r.VarsFile)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^inference_binary_url\s+= "s3::https://slm-mesh-artifacts-1a2b\.s3\.eu-central-1\.amazonaws\.com/releases/v1\.0\.0/linux_amd64/inference"$`).Match(vars) {
		t.Errorf("release.vars.hcl:\n%s", vars)
	}
}

func TestUploadFailureWritesNoVars(t *testing.T) {
	t.Parallel()
	rec := &recorder{failAWS: true}
	r := testRelease(t, rec)
	err := r.Run(context.Background())
	if !errors.Is(err, ErrUpload) || !strings.Contains(err.Error(), "s3://slm-mesh-artifacts-1a2b/releases/v1.0.0/linux_amd64/gateway") {
		t.Fatalf("err = %v, want ErrUpload naming the object", err)
	}
	if _, err := os.Stat(r.VarsFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("release.vars.hcl written for binaries that are not in S3 (%v)", err)
	}
}

func TestNoAWSCLIFailsBeforeBuilding(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	r := testRelease(t, rec)
	r.LookPath = func(string) (string, error) { return "", exec.ErrNotFound }
	if err := r.Run(context.Background()); !errors.Is(err, ErrNoAWSCLI) || !strings.Contains(err.Error(), "-upload=false") {
		t.Fatalf("err = %v, want ErrNoAWSCLI saying -upload=false", err)
	}
	if len(rec.cmds) != 0 {
		t.Errorf("ran %v without the aws CLI", rec.cmds)
	}
}

func TestSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*Release)
		want   string
	}{
		{name: "no bucket", modify: func(r *Release) { r.Bucket = "" }, want: "-bucket"},
		{name: "dotted bucket", modify: func(r *Release) { r.Bucket = "slm.mesh" }, want: "-bucket"},
		{name: "no region", modify: func(r *Release) { r.Region = "" }, want: "-region"},
		{name: "bad region", modify: func(r *Release) { r.Region = "Frankfurt" }, want: "-region"},
		{name: "bad version", modify: func(r *Release) { r.Version = "v1/../x" }, want: "-version"},
		{name: "native arch", modify: func(r *Release) { r.Arch = "native" }, want: "-arch"},
		{name: "flags as arch", modify: func(r *Release) { r.Arch = "x86-64-v3 -O0" }, want: "-arch"},
		{name: "a CPU no node reports", modify: func(r *Release) { r.Arch = "sapphirerapids" }, want: "-arch"},
		{name: "model without its sha256", modify: func(r *Release) { r.Model = "tiny.gguf" }, want: "-model-sha256"},
		{name: "sha256 without a model", modify: func(r *Release) { r.ModelSHA256 = strings.Repeat("a", 64) }, want: "-model"},
		{name: "short model sha256", modify: func(r *Release) { r.Model, r.ModelSHA256 = "tiny.gguf", "0ef57d2c" }, want: "-model-sha256"},
		{name: "model over ftp", modify: func(r *Release) { r.Model, r.ModelSHA256 = "ftp://example.com/m.gguf", strings.Repeat("a", 64) }, want: "-model"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			r := testRelease(t, rec)
			tc.modify(r)
			if err := r.Run(context.Background()); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrUsage about %s", err, tc.want)
			}
			if len(rec.cmds) != 0 {
				t.Errorf("ran %v", rec.cmds)
			}
		})
	}
}

// TestVersionFromGit: without -version, git describe names the release;
// uncommitted work gets the time too, so its objects never replace those
// of another build under the same name.
func TestVersionFromGit(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 13, 4, 5, 0, time.UTC)
	for describe, want := range map[string]string{
		"v1.2.0":                  "v1.2.0",
		"v1.2.0-3-gabcdef1":       "v1.2.0-3-gabcdef1",
		"abcdef1-dirty":           "abcdef1-dirty-20261205T130405Z",
		"v1.2.0-3-gabcdef1-dirty": "v1.2.0-3-gabcdef1-dirty-20261205T130405Z",
	} {
		rec := &recorder{git: describe}
		r := testRelease(t, rec)
		r.Version, r.Upload, r.Now = "", false, func() time.Time { return now }
		if err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if r.Version != want {
			t.Errorf("git describe %q: version %q, want %q", describe, r.Version, want)
		}
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-upload=false", "extra"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `unexpected argument "extra"`) {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"-region", "eu-west-1", "-upload=false"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "-bucket") {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
}

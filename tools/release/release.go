package main

import (
	"bytes"
	"cmp"
	"context"
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
	"time"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/model"
)

// Errors of a release; the messages carry the detail.
var (
	// ErrUsage: a missing or malformed setting.
	ErrUsage = errors.New("bad release settings")
	// ErrNoAWSCLI: uploading needs the aws CLI, which is not on PATH.
	ErrNoAWSCLI = errors.New("the aws CLI is not on PATH")
	// ErrBuild: building a service, or running tools/setup.sh, failed.
	ErrBuild = errors.New("build failed")
	// ErrUpload: an aws s3 cp failed.
	ErrUpload = errors.New("upload failed")
)

// Services are the binaries of a release, in the order they are built.
var Services = []string{"gateway", "caller", "inference"}

// Platform is the nodes' OS and architecture, as the S3 layout names it.
const (
	goos     = "linux"
	goarch   = "amd64"
	Platform = goos + "_" + goarch
)

// versionVar is the variable -ldflags -X stamps with the version.
const versionVar = "github.com/slm-mesh/slm-mesh/internal/cli.Version"

// Runner runs a command: name and args, with env as its whole environment
// (nil: the process's) in dir, its output to out. Release runs every
// command through it, so tests can see the aws command lines that they
// cannot run.
type Runner func(ctx context.Context, dir string, env []string, out io.Writer, name string, args ...string) error

// execRunner runs the command for real.
func execRunner(ctx context.Context, dir string, env []string, out io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, out, out
	return cmd.Run()
}

// Release is one release of the three services.
type Release struct {
	// Root is the repository's root directory.
	Root string
	// Version names the release; empty: from git describe.
	Version string
	// Bucket and Region are the artifacts bucket and its region.
	Bucket, Region string
	// Dir receives the binaries and SHA256SUMS; empty:
	// Root/.cache/release/<version>/linux_amd64.
	Dir string
	// VarsFile is where the job variables are written.
	VarsFile string
	// Upload copies the files to S3 with the aws CLI.
	Upload bool
	// Arch is the x86-64 level the inference's llama.cpp is compiled for
	// (gcc's -march): x86-64-v3 (AVX2; the default, localmesh.PortableArch)
	// or x86-64-v4 (AVX-512). A v4 binary dies of an illegal instruction on
	// a CPU without AVX-512, so its variables file keeps the inference job
	// to nodes that report v4 (inference_x86_64_level).
	Arch string
	// Model, when set, is the model to release beside the binaries: a
	// local path or an https URL of a GGUF file, which must match
	// ModelSHA256 (hex). It is uploaded once to
	// models/<sha256>/<file name> in the bucket, shared by every release
	// that ships it, and the variables file makes the inference job fetch
	// it from there.
	Model, ModelSHA256 string
	// ModelCacheDir receives a Model downloaded from a URL; empty: the
	// service's own download cache (model.DefaultCacheDir).
	ModelCacheDir string
	// Log receives progress and the commands' output.
	Log io.Writer

	// Runner and LookPath default to running commands for real.
	Runner   Runner
	LookPath func(string) (string, error)
	// Now dates a dirty tree's version (time.Now when nil).
	Now func() time.Time

	// Sums is each service's sha256, in hex, once built.
	Sums map[string]string
	// modelPath is Model as a checked local file, once fetched.
	modelPath string
}

// archs are the levels a release is built for: each is one the nodes can
// report (meta.slm_x86_64_levels, written by Terraform's cpu-meta.sh).
var archs = []string{localmesh.PortableArch, "x86-64-v4"}

// bucketName is what S3 accepts as a bucket name and go-getter's S3 URL
// can carry: no dots (they would break the bucket's TLS host name).
var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

// versionName keeps a version usable as an S3 key part and an HCL string.
var versionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// regionName is an AWS region: eu-west-1, us-gov-east-1.
var regionName = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

func (r *Release) defaults(ctx context.Context) error {
	if r.Runner == nil {
		r.Runner = execRunner
	}
	if r.LookPath == nil {
		r.LookPath = exec.LookPath
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Log == nil {
		r.Log = io.Discard
	}
	if !bucketName.MatchString(r.Bucket) {
		return fmt.Errorf("%w: -bucket %q: want the artifacts bucket's name (terraform output -raw artifacts_bucket)", ErrUsage, r.Bucket)
	}
	if !regionName.MatchString(r.Region) {
		return fmt.Errorf("%w: -region %q: want an AWS region such as eu-west-1 (terraform output -raw region)", ErrUsage, r.Region)
	}
	if err := r.checkModel(); err != nil {
		return err
	}
	r.Arch = r.arch()
	if !slices.Contains(archs, r.Arch) {
		return fmt.Errorf("%w: -arch %q: want x86-64-v3 (AVX2, any node) or x86-64-v4 (AVX-512 nodes only); the build machine's own CPU (native) says nothing of the nodes'", ErrUsage, r.Arch)
	}
	if r.Version == "" {
		v, err := r.gitVersion(ctx)
		if err != nil {
			return err
		}
		r.Version = v
	}
	if !versionName.MatchString(r.Version) {
		return fmt.Errorf("%w: -version %q: letters, digits and . _ + - only", ErrUsage, r.Version)
	}
	if r.Dir == "" {
		r.Dir = filepath.Join(r.Root, ".cache", "release", r.Version, r.platformDir())
	}
	if r.VarsFile == "" {
		r.VarsFile = "release.vars.hcl"
	}
	return nil
}

// gitVersion is `git describe --tags --always --dirty`. A dirty tree's
// version gets the time, so that two builds of uncommitted work never
// share a version (a version's objects must not change under running
// jobs: their checksums are in the jobs).
func (r *Release) gitVersion(ctx context.Context) (string, error) {
	var out bytes.Buffer
	if err := r.Runner(ctx, r.Root, nil, &out, "git", "describe", "--tags", "--always", "--dirty"); err != nil {
		return "", fmt.Errorf("%w: no -version and git describe failed (%v): pass -version", ErrUsage, err)
	}
	v := strings.TrimSpace(out.String())
	if strings.HasSuffix(v, "-dirty") {
		v += "-" + r.Now().UTC().Format("20060102T150405Z")
	}
	return v, nil
}

// Run builds, writes SHA256SUMS and the variables file, and uploads.
func (r *Release) Run(ctx context.Context) error {
	if err := r.defaults(ctx); err != nil {
		return err
	}
	// Fail before a build of minutes, not after it.
	if r.Upload {
		if _, err := r.LookPath("aws"); err != nil {
			return fmt.Errorf("%w: install it (https://docs.aws.amazon.com/cli/), or pass -upload=false to only build", ErrNoAWSCLI)
		}
	}
	if r.Model != "" {
		if err := r.FetchModel(ctx); err != nil {
			return err
		}
	}
	if err := r.Build(ctx); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "SHA256SUMS"), r.SHA256SUMS(), 0o644); err != nil {
		return err
	}
	if r.Upload && r.Model != "" {
		if err := r.UploadModel(ctx); err != nil {
			return err
		}
	}
	if r.Upload {
		for _, args := range r.UploadCommands() {
			fmt.Fprintf(r.Log, "==> aws %s\n", strings.Join(args, " "))
			if err := r.Runner(ctx, r.Root, nil, r.Log, "aws", args...); err != nil {
				return fmt.Errorf("%w: aws %s: %v (are AWS credentials set for this account?)", ErrUpload, strings.Join(args, " "), err)
			}
		}
	}
	// Last: a variables file exists only for binaries that do.
	return os.WriteFile(r.VarsFile, r.Vars(), 0o644)
}

// checkPlatform refuses a build the host cannot make: the inference
// binary links llama.cpp through cgo, so it cannot be built for
// linux/amd64 elsewhere without a C cross compiler.
func checkPlatform() error {
	if runtime.GOOS == goos && runtime.GOARCH == goarch {
		return nil
	}
	if os.Getenv("CC") != "" && os.Getenv("CXX") != "" {
		return nil
	}
	return fmt.Errorf("%w: the inference binary needs cgo for %s/%s: build on a %s/%s machine, or set CC and CXX to a cross compiler for it",
		ErrBuild, goos, goarch, goos, goarch)
}

// Env is the environment of the builds: the project's (localmesh.BuildEnv)
// with the cgo flags for r.Arch in place of the build machine's own, for
// the nodes' platform. (With the default Arch, llama.cpp is compiled once
// more than for `make build`; later releases reuse Go's build cache.)
func (r *Release) Env() []string {
	cflags := localmesh.CFlags(r.arch())
	// The last of duplicate keys wins.
	return append(localmesh.BuildEnv(r.Root), "CGO_CFLAGS="+cflags, "CGO_CXXFLAGS="+cflags,
		"GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=1")
}

// Build builds each service into Dir and records its sha256.
func (r *Release) Build(ctx context.Context) error {
	if err := checkPlatform(); err != nil {
		return err
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return err
	}
	// setup.sh checks (and as root installs) the headers the inference
	// build needs, as `make build` does; BuildEnv looks for them after.
	if err := r.Runner(ctx, r.Root, nil, r.Log, "sh", filepath.Join("tools", "setup.sh")); err != nil {
		return fmt.Errorf("%w: tools/setup.sh: %v", ErrBuild, err)
	}
	env := r.Env()
	r.Sums = map[string]string{}
	for _, svc := range Services {
		bin := filepath.Join(r.Dir, svc)
		fmt.Fprintf(r.Log, "==> build %s %s for %s (-march=%s)\n", svc, r.Version, Platform, r.Arch)
		err := r.Runner(ctx, r.Root, env, r.Log, "go", "build", "-trimpath",
			"-ldflags", "-s -w -X "+versionVar+"="+r.Version,
			"-o", bin, "./services/"+svc)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBuild, svc, err)
		}
		sum, err := model.FileSHA256(bin)
		if err != nil {
			return err
		}
		r.Sums[svc] = sum
	}
	return nil
}

// SHA256SUMS is the checksum file in sha256sum's format, so that
// `sha256sum -c SHA256SUMS` checks a download.
func (r *Release) SHA256SUMS() []byte {
	var b bytes.Buffer
	for _, svc := range Services {
		fmt.Fprintf(&b, "%s  %s\n", r.Sums[svc], svc)
	}
	return b.Bytes()
}

// Prefix is the S3 key prefix of the release's files. A build for more
// than the portable level has a folder of its own, so that building one
// version for both levels never replaces the objects of the other.
func (r *Release) Prefix() string {
	return "releases/" + r.Version + "/" + r.platformDir() + "/"
}

// platformDir names the release's folder: the platform, and the level when
// it is not the portable one (linux_amd64, linux_amd64_x86-64-v4).
func (r *Release) platformDir() string {
	if r.arch() == localmesh.PortableArch {
		return Platform
	}
	return Platform + "_" + r.arch()
}

// arch is Arch, or the portable level where it is unset (Env, Build or
// Vars called without Run).
func (r *Release) arch() string { return cmp.Or(r.Arch, localmesh.PortableArch) }

// UploadCommands are the aws CLI argument lists that upload the release:
// the binaries, then SHA256SUMS (a release with its checksum file is
// complete).
func (r *Release) UploadCommands() [][]string {
	var cmds [][]string
	for _, name := range append(append([]string{}, Services...), "SHA256SUMS") {
		cmds = append(cmds, []string{"s3", "cp", "--only-show-errors", "--region", r.Region,
			filepath.Join(r.Dir, name), "s3://" + r.Bucket + "/" + r.Prefix() + name})
	}
	return cmds
}

// URL is the artifact source of a service's binary: go-getter's S3 form
// with the bucket in the host name (virtual-hosted style). The path-style
// s3.<region>.amazonaws.com/<bucket>/... is misread by go-getter, which
// takes "s3" for the bucket; it reads the region from this host name and
// fetches with the node's instance role.
func (r *Release) URL(svc string) string { return r.objectURL(r.Prefix() + svc) }

// objectURL is go-getter's S3 source of the bucket's object key, through
// the bucket's regional host name, which the VPC's S3 gateway endpoint
// serves: the nodes fetch without the NAT gateway.
func (r *Release) objectURL(key string) string {
	return "s3::https://" + r.Bucket + ".s3." + r.Region + ".amazonaws.com/" + key
}

// Vars is release.vars.hcl: the version and, per service, the binary's
// URL and sha256, as the jobs' variables name them, and with a Model, its
// URL and sha256 (model_url, model_sha256).
func (r *Release) Vars() []byte {
	what := "these binaries"
	if r.Model != "" {
		what += " and the model"
	}
	f := hclwrite.NewEmptyFile()
	body := f.Body()
	body.AppendUnstructuredTokens(hclwrite.Tokens{{Type: hclsyntax.TokenComment, Bytes: []byte(
		"# slm-mesh release " + r.Version + " for " + Platform + ", written by go run ./tools/release:\n" +
			"# the jobs fetch " + what + " from S3 and check their sha256.\n" +
			"#   go run ./tools/submit -var-file <cluster vars> -var-file " + filepath.Base(r.VarsFile) + "\n")}})
	body.SetAttributeValue("version", cty.StringVal(r.Version))
	for _, svc := range Services {
		body.AppendNewline()
		body.SetAttributeValue(svc+"_binary_url", cty.StringVal(r.URL(svc)))
		body.SetAttributeValue(svc+"_binary_sha256", cty.StringVal(r.Sums[svc]))
	}
	if r.arch() != localmesh.PortableArch {
		// Built for more than every node has: only where the node says so.
		body.SetAttributeValue("inference_x86_64_level", cty.StringVal(strings.TrimPrefix(r.Arch, "x86-64-")))
	}
	if r.Model != "" {
		body.AppendNewline()
		body.SetAttributeValue("model_url", cty.StringVal(r.ModelURL()))
		body.SetAttributeValue("model_sha256", cty.StringVal(r.ModelSHA256))
	}
	return hclwrite.Format(f.Bytes())
}

// Command release builds the three service binaries for the cluster's
// nodes (linux/amd64), writes their SHA256SUMS, uploads both to the
// artifacts bucket that Terraform creates, and writes release.vars.hcl:
// the job variables that make the jobs fetch exactly these binaries.
//
//	go run ./tools/release -bucket B -region R [-version V] [-arch x86-64-v3] [-model PATH_OR_URL -model-sha256 HEX] [-upload=false] [-out release.vars.hcl]
//	go run ./tools/submit -var-file <(terraform output -raw submit_vars) -var-file release.vars.hcl
//
// The binaries land in s3://B/releases/V/linux_amd64/{gateway,caller,inference}
// (linux_amd64_x86-64-v4/ with -arch x86-64-v4)
// next to SHA256SUMS; the jobs fetch them with go-getter's S3 form and
// check each against its sha256. With -model, the model file (checked
// against -model-sha256 first; a URL is downloaded once) goes to
// s3://B/models/<sha256>/<file name> unless it is there already, and the
// inference job fetches it from there. The upload runs the aws CLI with
// the caller's credentials; -upload=false only builds.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: it returns the exit code (0 success,
// 1 failure, 2 usage).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bucket := fs.String("bucket", "", "artifacts bucket (terraform output -raw artifacts_bucket)")
	region := fs.String("region", "", "the bucket's AWS region (terraform output -raw region)")
	version := fs.String("version", "", "release version (default: git describe --tags --always --dirty; a dirty tree gets a timestamp)")
	upload := fs.Bool("upload", true, "upload with the aws CLI (false: only build and write the files)")
	out := fs.String("out", "release.vars.hcl", "where to write the job variables of the release")
	arch := fs.String("arch", localmesh.PortableArch, "CPU level the inference nodes have (gcc -march): x86-64-v3 (AVX2, any node) or x86-64-v4 (AVX-512: Q4_0 prompts ~1.7× faster, Q8_0 at 8 streams ~17% slower; the inference job then runs only on nodes that report AVX-512)")
	modelSrc := fs.String("model", "", "model to ship in the bucket: a GGUF file's path or https URL (default: none; the inference job's model_url stays as it is)")
	modelSHA := fs.String("model-sha256", "", "sha256 of the -model file, checked before the upload (required with -model)")
	dir := fs.String("dir", "", "directory for the binaries and SHA256SUMS (default .cache/release/<version>/linux_amd64[_x86-64-v4])")
	if code, ok := cli.ParseTool(fs, args, "go run ./tools/release -bucket B -region R [-version V] [-arch x86-64-v3] [-model PATH_OR_URL -model-sha256 HEX] [-upload=false] [-out release.vars.hcl]"); !ok {
		return code
	}

	r := &Release{
		Root: modeltest.RepoRoot(), Version: *version, Bucket: *bucket, Region: *region,
		Dir: *dir, VarsFile: *out, Upload: *upload, Arch: *arch, Log: stdout,
		Model: *modelSrc, ModelSHA256: *modelSHA,
	}
	if err := r.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "release:", err)
		return 1
	}
	if !filepath.IsAbs(r.VarsFile) {
		if wd, err := os.Getwd(); err == nil {
			r.VarsFile = filepath.Join(wd, r.VarsFile)
		}
	}
	fmt.Fprintf(stdout, "==> release %s: job variables in %s\n", r.Version, r.VarsFile)
	if !r.Upload {
		fmt.Fprintln(stdout, "    not uploaded (-upload=false): the jobs cannot fetch these binaries (or the model) yet")
	}
	return 0
}

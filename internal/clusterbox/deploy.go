package clusterbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/slm-mesh/slm-mesh/internal/model"
)

// ModelName is the name the box serves its model under.
const ModelName = "stories260K"

// Release builds the three services with tools/release (for the portable
// CPU level, as for a cluster) and uploads them with the aws CLI to the
// emulator's artifacts bucket; it returns the job variables file that
// makes the jobs fetch them (releaseVars explains its one change).
func (b *Box) Release(ctx context.Context) (string, error) {
	out := filepath.Join(b.cfg.Dir, "release.vars.hcl")
	cmd := exec.CommandContext(ctx, "go", "run", "./tools/release", "-bucket", bucket, "-region", b.cfg.Region, "-out", out)
	cmd.Dir = b.cfg.Root
	cmd.Env = append(os.Environ(), "PATH="+b.binDir()+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = b.cfg.Log, b.cfg.Log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("tools/release: %w", err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return "", err
	}
	boxVars := filepath.Join(b.cfg.Dir, "release-box.vars.hcl")
	return boxVars, os.WriteFile(boxVars, b.releaseVars(data), 0o644)
}

// releaseVars rewrites the binaries' URLs of tools/release's variables
// file for the emulator. On AWS the URL names the bucket's own host
// (s3::https://<bucket>.s3.<region>.amazonaws.com/...) and go-getter
// signs with the instance role. go-getter reaches any other S3 endpoint
// only in the path style with credentials in the URL (it sets a custom
// endpoint only then), so here the URL is
// s3::https://<emulator>/<bucket>/<key>?aws_access_key_id=...; the
// credentials are the emulator's dummy ones. The checksums are unchanged.
func (b *Box) releaseVars(data []byte) []byte {
	re := regexp.MustCompile(`"s3::https://` + regexp.QuoteMeta(bucket) + `\.s3\.` + regexp.QuoteMeta(b.cfg.Region) + `\.amazonaws\.com/([^"?]+)"`)
	return re.ReplaceAll(data, []byte(`"s3::`+b.state.Endpoint+`/`+bucket+`/$1?aws_access_key_id=`+emulatorKeyID+
		`&aws_access_key_secret=`+emulatorSecret+`&region=`+b.cfg.Region+`"`))
}

// JobVars writes the box's job variables: the production defaults (exec
// driver, the host volume model cache, rate limits, canaries) with two
// gateways and two inference instances, and what the box needs:
//
//   - a canary for the gateway (there is a third gateway host for it) and
//     the inference (its instances share CPUs by MHz, so a canary fits
//     beside them);
//   - inference_cores = 0: every host of the box shares the machine's CPUs,
//     and each Nomad client believes they are all its own, so a reserved
//     core keeps nothing off it; two instances reserving the same two
//     cores would be worse than sharing them (llama.cpp's threads spin).
//     Without cores, -threads=0 gives each instance one thread per CPU
//     but one;
//   - the tiny test model, uploaded to the emulator's S3 and downloaded by
//     the inference service itself over https, as on AWS from its model
//     host.
func (b *Box) JobVars(ctx context.Context, model string) (string, error) {
	url, sum, err := b.PutObject(ctx, "models/"+filepath.Base(model), model)
	if err != nil {
		return "", err
	}
	vars := fmt.Sprintf(`# The cluster in a box (internal/clusterbox): production values but these.
gateway_count    = 2
gateway_canary   = 1
inference_count  = 2
inference_canary = 1
inference_cores  = 0

model_url    = %q
model_sha256 = %q
model_name   = %q
`, url, sum, ModelName)
	path := filepath.Join(b.cfg.Dir, "box.vars.hcl")
	return path, os.WriteFile(path, []byte(vars), 0o644)
}

// ServeModels has the inference job serve, beside the box's model, each
// model of extra (its name → a GGUF file) in a task group of its own
// (the job's extra_models), each file uploaded to the emulator's S3 and
// pinned by its sha256 as the box's model is; with none, the job goes back
// to the box's model alone. It submits the three jobs as Deploy did.
func (b *Box) ServeModels(ctx context.Context, extra map[string]string) error {
	var list strings.Builder
	list.WriteString("extra_models = [\n")
	for _, name := range slices.Sorted(maps.Keys(extra)) {
		url, sum, err := b.PutObject(ctx, "models/"+filepath.Base(extra[name]), extra[name])
		if err != nil {
			return err
		}
		fmt.Fprintf(&list, "  { name = %q, url = %q, sha256 = %q, count = 1 },\n", name, url, sum)
	}
	list.WriteString("]\n")
	vars := filepath.Join(b.cfg.Dir, "models.vars.hcl")
	if err := os.WriteFile(vars, []byte(list.String()), 0o644); err != nil {
		return err
	}
	return b.Submit(ctx, filepath.Join(b.cfg.Dir, "box.vars.hcl"), filepath.Join(b.cfg.Dir, "release-box.vars.hcl"), vars)
}

// PutObject uploads file to the emulator's artifacts bucket under key,
// readable without credentials, and returns its https URL (which the
// hosts trust) and its sha256, what a job's artifact or download checks.
func (b *Box) PutObject(ctx context.Context, key, file string) (url, sum string, err error) {
	if err := b.ensureEmulator(); err != nil {
		return "", "", err
	}
	if sum, err = model.FileSHA256(file); err != nil {
		return "", "", err
	}
	if err := b.emulator.putPublicObject(ctx, bucket, key, file); err != nil {
		return "", "", err
	}
	return b.state.Endpoint + "/" + bucket + "/" + key, sum, nil
}

// Submit runs `go run ./tools/submit` with the variables files given
// against the box's Nomad, with the operator's token (never the
// management token).
func (b *Box) Submit(ctx context.Context, varFiles ...string) error {
	args := []string{"run", "./tools/submit"}
	for _, f := range varFiles {
		args = append(args, "-var-file", f)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = b.cfg.Root
	cmd.Env = append(os.Environ(), b.NomadEnv(b.state.OperatorToken)...)
	cmd.Stdout, cmd.Stderr = b.cfg.Log, b.cfg.Log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tools/submit: %w", err)
	}
	return nil
}

// Deploy releases the services, writes the job variables and submits the
// three jobs: what an operator does on AWS after `terraform apply`.
func (b *Box) Deploy(ctx context.Context, model string) error {
	if err := b.ensureEmulator(); err != nil {
		return err
	}
	t := time.Now()
	release, err := b.Release(ctx)
	if err != nil {
		return err
	}
	b.logf("release: done in %s", time.Since(t).Round(time.Second))
	vars, err := b.JobVars(ctx, model)
	if err != nil {
		return err
	}
	t = time.Now()
	if err := b.Submit(ctx, vars, release); err != nil {
		return err
	}
	b.logf("submit: done in %s", time.Since(t).Round(time.Second))
	return nil
}

// ensureEmulator sets up the emulator's client for a box opened from its
// state.
func (b *Box) ensureEmulator() error {
	if b.emulator != nil {
		return nil
	}
	ca, err := os.ReadFile(filepath.Join(b.cfg.Dir, "etc", "emulator-ca.pem"))
	if err != nil {
		return err
	}
	b.emulator = &emulator{endpoint: b.state.Endpoint, region: b.cfg.Region, client: trustingClient(string(ca))}
	return nil
}

// GatewayURLs are the base URLs of the running gateway instances, from
// Nomad's allocations: http://<host>:<port>.
func (b *Box) GatewayURLs(ctx context.Context) ([]string, error) {
	c, err := b.Nomad(b.state.NomadManagement)
	if err != nil {
		return nil, err
	}
	allocs, _, err := c.Jobs().Allocations("slm-gateway", false, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, a := range allocs {
		if a.ClientStatus != nomad.AllocClientStatusRunning {
			continue
		}
		full, _, err := c.Allocations().Info(a.ID, nil)
		if err != nil {
			return nil, err
		}
		if full.AllocatedResources == nil {
			continue
		}
		for _, p := range full.AllocatedResources.Shared.Ports {
			if p.Label == "http" {
				urls = append(urls, fmt.Sprintf("http://%s:%d", p.HostIP, p.Value))
			}
		}
	}
	return urls, nil
}

// Chat sends one chat completion to a gateway at baseURL with the box's
// API key and returns the answer's text.
func (b *Box) Chat(ctx context.Context, baseURL, prompt string) (string, error) {
	body, _ := json.Marshal(map[string]any{
		"model":      ModelName,
		"messages":   []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens": 24,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+b.state.APIKey)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST %s/v1/chat/completions: %s: %s", baseURL, resp.Status, bytes.TrimSpace(data))
	}
	var out struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return "", fmt.Errorf("chat completion: %w: %s", err, data)
	}
	if len(out.Choices) == 0 || strings.TrimSpace(out.Choices[0].Message.Content) == "" {
		return "", fmt.Errorf("chat completion without text: %s", data)
	}
	return out.Choices[0].Message.Content, nil
}

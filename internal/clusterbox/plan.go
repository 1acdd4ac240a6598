package clusterbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// PlanInput is what the box passes to terraform/modules/plan: the values
// terraform/aws would pass, with the box's region, names and addresses.
type PlanInput struct {
	ClusterName     string   `json:"cluster_name"`
	Region          string   `json:"region"`
	ArtifactsBucket string   `json:"artifacts_bucket"`
	EC2Endpoint     string   `json:"ec2_endpoint"`
	Secrets         *Secrets `json:"-"` // a variable of its own: sensitive
}

// Plan is what the box reads back from the module's outputs.
type Plan struct {
	// NodeFiles are the files of each kind of node (node_files).
	NodeFiles map[string][]File
	// SSMPrefix and SSMParameters (name relative to the prefix -> value)
	// are the secrets as terraform/aws stores them in SSM.
	SSMPrefix     string
	SSMParameters map[string]string
	// JoinTag is the tag that marks the servers for cloud auto-join.
	JoinTag struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
}

// planRoot is the root module the box applies: the plan module with the
// box's values, its outputs passed through.
const planRoot = `# Written by internal/clusterbox: terraform/modules/plan with the values
# of the cluster in a box.
variable "input" {
  type = object({
    cluster_name     = string
    region           = string
    artifacts_bucket = string
    ec2_endpoint     = string
  })
}

variable "secrets" {
  type      = any
  sensitive = true
}

module "plan" {
  source = %q

  cluster_name     = var.input.cluster_name
  region           = var.input.region
  artifacts_bucket = var.input.artifacts_bucket
  ec2_endpoint     = var.input.ec2_endpoint
  secrets          = var.secrets
}

output "node_files" {
  value = module.plan.node_files
}

output "ssm_prefix" {
  value = module.plan.ssm_prefix
}

output "ssm_parameters" {
  value     = module.plan.ssm_parameters
  sensitive = true
}

output "join_tag" {
  value = module.plan.join_tag
}
`

// applyPlan applies terraform/modules/plan (it has no provider: applying
// it only evaluates it) with tofu in dir and returns its outputs. The
// input, secrets included, is written to a 0600 file in dir.
func applyPlan(ctx context.Context, tofu, moduleDir, dir string, in PlanInput) (*Plan, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// A relative source, as terraform/aws has: an absolute one would be
	// copied into the data directory, away from the agent configurations
	// the module reads from the repository (../../.. of it).
	source, err := filepath.Rel(dir, moduleDir)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), fmt.Appendf(nil, planRoot, source), 0o644); err != nil {
		return nil, err
	}
	vars, err := json.Marshal(map[string]any{"input": in, "secrets": in.Secrets})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "box.auto.tfvars.json"), vars, 0o600); err != nil {
		return nil, err
	}
	// An empty CLI configuration and a data directory of its own: nothing
	// of the machine's Terraform setup changes the result.
	cliConfig := filepath.Join(dir, "tofurc")
	if err := os.WriteFile(cliConfig, nil, 0o644); err != nil {
		return nil, err
	}
	env := append(os.Environ(), "TF_CLI_CONFIG_FILE="+cliConfig, "TF_DATA_DIR="+filepath.Join(dir, ".terraform"), "TF_IN_AUTOMATION=1")
	tf := func(out io.Writer, args ...string) error {
		cmd := exec.CommandContext(ctx, tofu, args...)
		cmd.Dir, cmd.Env = dir, env
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = out, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("tofu %s: %w: %s", args[0], err, bytes.TrimSpace(stderr.Bytes()))
		}
		return nil
	}
	if err := tf(io.Discard, "init", "-input=false", "-no-color"); err != nil {
		return nil, err
	}
	if err := tf(io.Discard, "apply", "-input=false", "-auto-approve", "-no-color"); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := tf(&out, "output", "-json"); err != nil {
		return nil, err
	}
	return parsePlanOutputs(out.Bytes())
}

// parsePlanOutputs reads `tofu output -json`.
func parsePlanOutputs(data []byte) (*Plan, error) {
	var outputs map[string]struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(data, &outputs); err != nil {
		return nil, fmt.Errorf("tofu output -json: %w", err)
	}
	p := &Plan{}
	for name, dst := range map[string]any{
		"node_files":     &p.NodeFiles,
		"ssm_prefix":     &p.SSMPrefix,
		"ssm_parameters": &p.SSMParameters,
		"join_tag":       &p.JoinTag,
	} {
		o, ok := outputs[name]
		if !ok {
			return nil, fmt.Errorf("the plan module has no output %q", name)
		}
		if err := json.Unmarshal(o.Value, dst); err != nil {
			return nil, fmt.Errorf("output %s: %w", name, err)
		}
	}
	for _, kind := range kindOrder {
		if len(p.NodeFiles[kind]) == 0 {
			return nil, fmt.Errorf("the plan module renders no files for the %s kind", kind)
		}
	}
	return p, nil
}

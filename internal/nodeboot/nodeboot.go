// Package nodeboot renders what a node of the AWS cluster boots with: the
// files of terraform/modules/plan (its agent_configs output) and each
// server's cloud-init document (server_user_data), by planning that module
// with OpenTofu or Terraform, as terraform/aws does. The module has no
// provider and no resource, so a plan needs no network and creates nothing.
//
// Its tests check the boot those files make: every systemd unit under
// systemd-analyze verify, the way install.sh enables and starts the units,
// and how a server finds, formats and mounts its data volume.
package nodeboot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// EnvTofu names the environment variable that points at an OpenTofu (or
// Terraform) binary.
const EnvTofu = "SLM_TOFU"

// FindTofu returns the binary named by SLM_TOFU, else .cache/bin/tofu under
// root (where tools/iac/check.sh builds it), else tofu or terraform on PATH.
func FindTofu(root string) (string, error) {
	if bin := os.Getenv(EnvTofu); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvTofu, bin, err)
		}
		return bin, nil
	}
	if root != "" {
		bin := filepath.Join(root, ".cache", "bin", "tofu")
		if st, err := os.Stat(bin); err == nil && !st.IsDir() {
			return bin, nil
		}
	}
	for _, name := range []string{"tofu", "terraform"} {
		if bin, err := exec.LookPath(name); err == nil {
			return bin, nil
		}
	}
	return "", errors.New("no OpenTofu or Terraform binary: build it with tools/iac/check.sh, or set " + EnvTofu + ", or put tofu or terraform on PATH")
}

// Outputs are the plan module's outputs that a node boots from.
type Outputs struct {
	// Files holds the files of each kind of node (server, gateway, caller,
	// inference) by path: the agent_configs output.
	Files map[string]map[string]string `json:"agent_configs"`
	// ServerUserData is each server's cloud-init document by server name
	// (one per entry of the server_data_volume_ids variable).
	ServerUserData map[string]string `json:"server_user_data"`
}

// Render plans the module in moduleDir with vars (the module's input
// variables, JSON-encodable) and returns its outputs. Nothing is written
// into moduleDir: the CLI configuration is empty (no mirror, credential or
// plugin cache of the machine applies), and the data directory and the plan
// file are temporary.
func Render(ctx context.Context, bin, moduleDir string, vars map[string]any) (*Outputs, error) {
	moduleDir, err := filepath.Abs(moduleDir)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "nodeboot-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	varsJSON, err := json.Marshal(vars)
	if err != nil {
		return nil, fmt.Errorf("encode variables: %w", err)
	}
	varFile := filepath.Join(tmp, "vars.tfvars.json")
	cliConfig := filepath.Join(tmp, "cli.tfrc")
	if err := os.WriteFile(varFile, varsJSON, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cliConfig, nil, 0o600); err != nil {
		return nil, err
	}

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TF_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"TF_CLI_CONFIG_FILE="+cliConfig,
		"TF_DATA_DIR="+filepath.Join(tmp, "data"),
		"TF_IN_AUTOMATION=1",
	)
	run := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, bin, append([]string{"-chdir=" + moduleDir}, args...)...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(bin), args[0], err, stdout.Bytes(), stderr.Bytes())
		}
		return stdout.Bytes(), nil
	}

	planFile := filepath.Join(tmp, "plan")
	if _, err := run("init", "-backend=false", "-input=false", "-no-color"); err != nil {
		return nil, err
	}
	if _, err := run("plan", "-input=false", "-no-color", "-lock=false", "-var-file="+varFile, "-out="+planFile); err != nil {
		return nil, err
	}
	shown, err := run("show", "-json", "-no-color", planFile)
	if err != nil {
		return nil, err
	}

	var plan struct {
		PlannedValues struct {
			Outputs map[string]struct {
				Value json.RawMessage `json:"value"`
			} `json:"outputs"`
		} `json:"planned_values"`
	}
	if err := json.Unmarshal(shown, &plan); err != nil {
		return nil, fmt.Errorf("read the plan: %w", err)
	}
	var out Outputs
	for name, dst := range map[string]any{"agent_configs": &out.Files, "server_user_data": &out.ServerUserData} {
		o, ok := plan.PlannedValues.Outputs[name]
		if !ok {
			return nil, fmt.Errorf("the plan has no output %q", name)
		}
		if err := json.Unmarshal(o.Value, dst); err != nil {
			return nil, fmt.Errorf("output %s: %w", name, err)
		}
	}
	return &out, nil
}

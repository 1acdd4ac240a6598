package jobs

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// The agent configurations in nomad/ and consul/ are Terraform
// templatefile() templates. These tests hold them to what the Terraform
// code relies on: every ${placeholder} is documented in the file's header
// comment, every documented one is used, and once filled in the file is
// valid, formatted HCL.

var (
	placeholder = regexp.MustCompile(`\$\{([a-z_][a-z0-9_]*)\}`)
	// A documented placeholder: a header comment line "#   ${name}  text".
	documented = regexp.MustCompile(`(?m)^#\s+\$\{([a-z_][a-z0-9_]*)\}\s+\S`)
)

// agentConfigs lists the agent configuration files and the placeholders
// each must have; dev.hcl is used as is and has none.
var agentConfigs = map[string][]string{
	"nomad/server.hcl":  {"bootstrap_expect", "datacenter", "region", "retry_join"},
	"nomad/client.hcl":  {"datacenter", "node_role", "region", "retry_join"},
	"nomad/dev.hcl":     nil,
	"consul/server.hcl": {"bootstrap_expect", "datacenter", "retry_join"},
	"consul/client.hcl": {"datacenter", "retry_join"},
}

// sampleValues fill the placeholders the way Terraform would.
var sampleValues = map[string]string{
	"bootstrap_expect": "3",
	"datacenter":       "dc1",
	"region":           "global",
	"retry_join":       "provider=aws tag_key=slm-mesh-nomad tag_value=server",
	"node_role":        "inference",
}

func TestAgentConfigs(t *testing.T) {
	t.Parallel()
	for file, want := range agentConfigs {
		src, err := os.ReadFile(filepath.Join("..", file))
		if err != nil {
			t.Fatal(err)
		}
		header := headerComment(src)
		var used, docs []string
		// Mentions in the header are documentation, not uses.
		for _, m := range placeholder.FindAllSubmatch(src[len(header):], -1) {
			used = append(used, string(m[1]))
		}
		for _, m := range documented.FindAllSubmatch(header, -1) {
			docs = append(docs, string(m[1]))
		}
		slices.Sort(used)
		used = slices.Compact(used)
		slices.Sort(docs)
		if !slices.Equal(used, want) {
			t.Errorf("%s uses placeholders %v, want %v", file, used, want)
		}
		if !slices.Equal(docs, want) {
			t.Errorf("%s documents placeholders %v in its header, want %v", file, docs, want)
		}
		if want != nil && !bytes.Contains(header, []byte("templatefile()")) {
			t.Errorf("%s: the header does not say it is a templatefile() template", file)
		}

		rendered := fill(t, file, src)
		if _, diags := hclsyntax.ParseConfig(rendered, file, hcl.InitialPos); diags.HasErrors() {
			t.Errorf("%s, filled in: %s", file, diags.Error())
		}
		if !bytes.Equal(hclwrite.Format(rendered), rendered) {
			t.Errorf("%s is not formatted (terraform fmt style)", file)
		}
	}
}

// headerComment is the file's leading block of # comment lines.
func headerComment(src []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(src, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("#")) {
			break
		}
		out = append(out, line...)
	}
	return out
}

// fill replaces the placeholders as templatefile() does ($${ is a literal
// ${), failing on one without a sample value.
func fill(t *testing.T, file string, src []byte) []byte {
	t.Helper()
	const escaped = "\x00"
	s := strings.ReplaceAll(string(src), "$${", escaped)
	s = placeholder.ReplaceAllStringFunc(s, func(m string) string {
		name := placeholder.FindStringSubmatch(m)[1]
		v, ok := sampleValues[name]
		if !ok {
			t.Errorf("%s: no sample value for ${%s}", file, name)
		}
		return v
	})
	if strings.Contains(s, "${") || strings.Contains(s, "%{") {
		t.Errorf("%s: a template sequence is left after filling the placeholders", file)
	}
	return []byte(strings.ReplaceAll(s, escaped, "${"))
}

// TestAgentsDoNotCallHome: the cluster's agents must not ask HashiCorp's
// checkpoint service for new versions (found running them in the cluster in
// a box: every agent did, through the NAT gateway on AWS).
func TestAgentsDoNotCallHome(t *testing.T) {
	t.Parallel()
	setting := regexp.MustCompile(`(?m)^disable_update_check\s*=\s*true\s*$`)
	for file, placeholders := range agentConfigs {
		if placeholders == nil {
			continue // nomad/dev.hcl: the dev agent on a laptop
		}
		src, err := os.ReadFile(filepath.Join("..", file))
		if err != nil {
			t.Fatal(err)
		}
		if !setting.Match(src) {
			t.Errorf("%s does not set disable_update_check = true at the top level", file)
		}
	}
}

package jobs

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// localValues are the values of jobs/local.vars.hcl plus the bin_dir that
// the README passes on the command line (a fixed path here, so that the
// golden file does not depend on the machine).
func localValues(t *testing.T) *Values {
	t.Helper()
	var v Values
	if err := v.AddFile("local.vars.hcl", LocalVars()); err != nil {
		t.Fatal(err)
	}
	if err := v.AddFlag("bin_dir=/home/dev/slm-mesh/.cache/bin"); err != nil {
		t.Fatal(err)
	}
	return &v
}

// variants are the renderings that have golden files.
func variants(t *testing.T) map[string]*Values {
	return map[string]*Values{"default": {}, "local": localValues(t)}
}

func TestGolden(t *testing.T) {
	for variant, vals := range variants(t) {
		rendered, err := RenderAll(nil, vals)
		if err != nil {
			t.Fatalf("%s: %v", variant, err)
		}
		for _, r := range rendered {
			path := filepath.Join("testdata", variant, r.Job.File)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, r.HCL, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./jobs -update to create it)", err)
			}
			if !bytes.Equal(r.HCL, want) {
				t.Errorf("%s differs from the rendering; review the change and run go test ./jobs -update", path)
			}
		}
	}
}

// TestTemplatesParse: the templates, their renderings and the variables
// files are all valid HCL and formatted as terraform fmt / hclwrite would.
func TestTemplatesParse(t *testing.T) {
	t.Parallel()
	check := func(name string, src []byte) {
		t.Helper()
		if _, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos); diags.HasErrors() {
			t.Errorf("%s: %s", name, diags.Error())
		}
		if got := hclwrite.Format(src); !bytes.Equal(got, src) {
			t.Errorf("%s is not formatted (terraform fmt style)", name)
		}
	}
	for _, j := range All {
		check(j.File, j.Source())
	}
	check("local.vars.hcl", LocalVars())
	for variant, vals := range variants(t) {
		rendered, err := RenderAll(nil, vals)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rendered {
			check(variant+"/"+r.Job.File, r.HCL)
			check(variant+"/"+r.Job.Name+".vars", r.Variables)
		}
	}
}

func TestRenderAppliesValues(t *testing.T) {
	t.Parallel()
	var v Values
	mustNil(t, v.AddFile("ops.vars.hcl", []byte("caller_count = 4\nversion = \"0.9.0\"\n")))
	mustNil(t, v.AddFlag("version=1.2")) // a string variable: taken literally, and later wins
	mustNil(t, v.AddFlag(`datacenters=["eu-1", "eu-2"]`))
	rendered, err := RenderAll(nil, &v)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rendered {
		if got := r.String("version"); got != "1.2" {
			t.Errorf("%s: version = %q, want 1.2", r.Job.Name, got)
		}
		if !strings.Contains(string(r.HCL), `default     = "1.2"`) {
			t.Errorf("%s: rendered HCL does not carry version 1.2", r.Job.Name)
		}
		if !strings.Contains(string(r.HCL), `default     = ["eu-1", "eu-2"]`) {
			t.Errorf("%s: rendered HCL does not carry the datacenters", r.Job.Name)
		}
		if !regexp.MustCompile(`(?m)^version\s*= "1.2"$`).Match(r.Variables) {
			t.Errorf("%s: variables file:\n%s", r.Job.Name, r.Variables)
		}
		// The caller's count is not the other jobs' business.
		hasCount := strings.Contains(string(r.Variables), "caller_count = 4")
		if hasCount != (r.Job.Name == "caller") {
			t.Errorf("%s: variables file has caller_count=%v:\n%s", r.Job.Name, hasCount, r.Variables)
		}
	}
	caller := rendered[1]
	if n, _ := caller.Values["caller_count"].AsBigFloat().Int64(); n != 4 {
		t.Errorf("caller_count = %d, want 4", n)
	}
}

func TestRenderErrors(t *testing.T) {
	t.Parallel()
	required := Job{Name: "needy", ID: "needy", File: "needy.nomad.hcl", src: []byte(`
variable "image" {
  type = string
}

job "needy" {}
`)}
	tests := []struct {
		name  string
		jobs  []Job
		file  string
		flags []string
		want  error
		text  string
	}{
		{name: "missing variable", jobs: []Job{required}, want: ErrMissingVariable, text: "-var image="},
		{name: "undeclared -var", flags: []string{"rpc_token=hunter2"}, want: ErrUndeclaredVariable, text: "rpc_token"},
		{name: "-var without =", flags: []string{"caller_count"}, want: ErrBadValue, text: "name=value"},
		{name: "number from -var", flags: []string{"caller_count=two"}, want: ErrBadValue, text: "caller_count"},
		{name: "syntax error in file", file: "caller_count = = 3\n", want: ErrBadValue, text: "bad.vars.hcl:1"},
		{name: "block in file", file: "job \"x\" {}\n", want: ErrBadValue, text: "name = value"},
		{name: "wrong type in file", file: "datacenters = 3\n", want: ErrBadValue, text: "list of string"},
		{name: "reference in file", file: "caller_count = var.x\n", want: ErrBadValue, text: "bad.vars.hcl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var v Values
			err := func() error {
				if tc.file != "" {
					if err := v.AddFile("bad.vars.hcl", []byte(tc.file)); err != nil {
						return err
					}
				}
				for _, f := range tc.flags {
					if err := v.AddFlag(f); err != nil {
						return err
					}
				}
				_, err := RenderAll(tc.jobs, &v)
				return err
			}()
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("err = %q, want it to mention %q", err, tc.text)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"gateway", "slm-gateway"} {
		if j, err := Lookup(name); err != nil || j.ID != "slm-gateway" {
			t.Errorf("Lookup(%q) = %v, %v", name, j, err)
		}
	}
	if _, err := Lookup("router"); !errors.Is(err, ErrUnknownJob) {
		t.Errorf("Lookup(router) err = %v", err)
	}
}

// TestNoSecrets: no token, key or password is written in a job; the RPC
// tokens reach the tasks only through the Nomad Variables template.
func TestNoSecrets(t *testing.T) {
	t.Parallel()
	assignment := regexp.MustCompile(`(?i)(token|api_keys?|secret|password)[a-z_]*\s*=\s*"[^"$]`)
	for variant, vals := range variants(t) {
		rendered, err := RenderAll(nil, vals)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rendered {
			text := string(r.HCL)
			if m := assignment.FindString(text); m != "" {
				t.Errorf("%s/%s writes a secret: %q", variant, r.Job.Name, m)
			}
			for _, bad := range []string{"-rpc-token", "-inference-token", "-api-keys", "SLM_RPC_TOKEN=", "SLM_INFERENCE_TOKEN="} {
				for _, line := range strings.Split(text, "\n") {
					if strings.Contains(line, bad) && !strings.Contains(line, "_token }}") {
						t.Errorf("%s/%s: %q", variant, r.Job.Name, strings.TrimSpace(line))
					}
				}
			}
		}
	}
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

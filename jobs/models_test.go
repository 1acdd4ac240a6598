package jobs

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/nomad/api"

	"github.com/slm-mesh/slm-mesh/internal/nomadtest"
)

const (
	embedSHA = "1111111111111111111111111111111111111111111111111111111111111111"
	toolsSHA = "2222222222222222222222222222222222222222222222222222222222222222"
	embedS3  = "s3::https://slm-mesh-artifacts-1a2b.s3.eu-west-1.amazonaws.com/models/" + embedSHA + "/embeddinggemma-300m-Q8_0.gguf"
	toolsURL = "https://models.example.com/functiongemma-270m-it-Q8_0.gguf"
)

// familyValues serve two models beside the default one: an embedding
// model from the artifacts bucket and a function-calling model by URL.
func familyValues(t *testing.T) *Values {
	t.Helper()
	var v Values
	mustNil(t, v.AddFile("family.vars.hcl", []byte(`extra_models = [
  { name = "embeddinggemma-300m", url = "`+embedS3+`", sha256 = "`+embedSHA+`", count = 2 },
  { name = "functiongemma-270m", url = "`+toolsURL+`", sha256 = "`+toolsSHA+`", count = 1 },
]
`)))
	return &v
}

// servedModel is what one task group of the inference job serves.
type servedModel struct {
	name, sha256, source string // source: the model flag, or the artifact's URL
	count                int64
	sticky               bool // a sticky ephemeral disk (an s3:: model)
}

// TestExtraModels: extra_models adds one task group per model, named after
// it, with its own count, model, checksum and Consul meta model=<name>
// (which the caller routes on), beside the default model's group
// "inference", which keeps its name; the caller sends a request that
// names no model to model_name.
func TestExtraModels(t *testing.T) {
	t.Parallel()
	rendered, err := RenderAll(nil, familyValues(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]servedModel{
		"inference":                     {name: "gemma-3-270m-it", sha256: "0ef57d2c838458a1952664260dcba38e5bdda37494f3af732f06e4add24068e3", source: "-model=https://huggingface.co/ggml-org/gemma-3-270m-it-GGUF/resolve/main/gemma-3-270m-it-Q8_0.gguf", count: 1},
		"inference-embeddinggemma-300m": {name: "embeddinggemma-300m", sha256: embedSHA, source: embedS3, count: 2, sticky: true},
		"inference-functiongemma-270m":  {name: "functiongemma-270m", sha256: toolsSHA, source: "-model=" + toolsURL, count: 1},
	}
	for _, r := range rendered {
		s := parseSpec(t, "family/"+r.Job.Name, r)
		switch r.Job.Name {
		case "caller":
			if args := s.args(s.one(s.group(), "task")); !slices.Contains(args, "-default-model=gemma-3-270m-it") {
				t.Errorf("caller args %q: want -default-model=gemma-3-270m-it", args)
			}
		case "inference":
			got := map[string]servedModel{}
			s.eachGroup(func(name string, g *hclsyntax.Body) {
				task := s.one(g, "task")
				args := s.args(task)
				m := servedModel{count: s.num(g, "count"), sticky: len(s.dynamic(g, "ephemeral_disk")) == 1}
				for _, a := range args {
					switch {
					case strings.HasPrefix(a, "-model-name="):
						m.name = strings.TrimPrefix(a, "-model-name=")
					case strings.HasPrefix(a, "-model-sha256="):
						m.sha256 = strings.TrimPrefix(a, "-model-sha256=")
					case strings.HasPrefix(a, "-model=") && a != "-model=${NOMAD_TASK_DIR}/model.gguf":
						m.source = a
					}
				}
				for _, a := range s.dynamic(task, "artifact") {
					m.source = s.str(a, "source")
					if c := s.str(s.one(a, "options"), "checksum"); c != "sha256:"+m.sha256 {
						t.Errorf("group %s: artifact checksum %s, model sha256 %s", name, c, m.sha256)
					}
				}
				if meta := s.eval(s.one(s.one(g, "service"), "meta"), "model"); meta.AsString() != m.name {
					t.Errorf("group %s: service meta model=%s, serves %s", name, meta.AsString(), m.name)
				}
				got[name] = m
			})
			if len(got) != len(want) {
				t.Errorf("groups %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
			}
			for name, w := range want {
				if got[name] != w {
					t.Errorf("group %s: %+v, want %+v", name, got[name], w)
				}
			}
		}
	}
}

// TestExtraModelsValidation: each way to get an extra model wrong fails its
// own validation.
func TestExtraModelsValidation(t *testing.T) {
	t.Parallel()
	inference, _ := Lookup("inference")
	model := func(name, sha string, count string) string {
		return `{ name = "` + name + `", url = "https://m.example.com/x.gguf", sha256 = "` + sha + `", count = ` + count + ` }`
	}
	for what, list := range map[string]string{
		"a name with a space":    model("my model", embedSHA, "1"),
		"an upper-case name":     model("Gemma", embedSHA, "1"),
		"no name":                model("", embedSHA, "1"),
		"two models of one name": model("a", embedSHA, "1") + ", " + model("a", toolsSHA, "1"),
		"a short sha256":         model("a", "0ef57d2c", "1"),
		"a negative count":       model("a", embedSHA, "-1"),
		"a fractional count":     model("a", embedSHA, "1.5"),
	} {
		var v Values
		mustNil(t, v.AddFlag("extra_models=["+list+"]"))
		r, err := Render(inference, &v)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if failed := validations(t, r); !slices.Equal(failed, []string{"extra_models"}) {
			t.Errorf("%s: failed validations %v, want [extra_models]", what, failed)
		}
	}
}

// TestSharedVariables: a variable that several jobs declare (the values of
// one submission go to every job) has one type and one default, but for
// secrets_var, whose default is each job's own variable path.
func TestSharedVariables(t *testing.T) {
	t.Parallel()
	seen := map[string]variable{}
	from := map[string]string{}
	for _, j := range All {
		decls, err := declarations(j)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range decls {
			if d.name == "secrets_var" {
				continue
			}
			if prev, ok := seen[d.name]; ok {
				if !prev.typ.Equals(d.typ) || prev.hasDefault != d.hasDefault || (d.hasDefault && !prev.def.RawEquals(d.def)) {
					t.Errorf("variable %s: %s declares %s = %#v, %s declares %s = %#v",
						d.name, from[d.name], prev.typ.FriendlyName(), prev.def, j.Name, d.typ.FriendlyName(), d.def)
				}
				continue
			}
			seen[d.name], from[d.name] = d, j.Name
		}
	}
	if _, ok := seen["model_name"]; !ok || from["model_name"] == "" {
		t.Error("no job declares model_name")
	}
}

// TestNomadParsesTheJobs hands every rendering (the defaults, local.vars.hcl
// and a model family) to Nomad's own job parser — `nomad job run -output`,
// which parses the job file and its variables as a submission does and
// prints the job as the API receives it — and checks the task groups it
// makes of the inference job: names, counts, and the meta model that
// callers route on. Nomad's parser expands dynamic blocks and evaluates
// variable validations; the hcl/v2 checks of the other tests only
// approximate both.
func TestNomadParsesTheJobs(t *testing.T) {
	t.Parallel()
	nomad := nomadtest.Binary(t)
	type group struct {
		count int
		model string
	}
	cases := map[string]struct {
		vals *Values
		want map[string]group
	}{
		"default": {&Values{}, map[string]group{"inference": {1, "gemma-3-270m-it"}}},
		"local":   {localValues(t), map[string]group{"inference": {1, "gemma-3-270m-it"}}},
		"family": {familyValues(t), map[string]group{
			"inference":                     {1, "gemma-3-270m-it"},
			"inference-embeddinggemma-300m": {2, "embeddinggemma-300m"},
			"inference-functiongemma-270m":  {1, "functiongemma-270m"},
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rendered, err := RenderAll(nil, tc.vals)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rendered {
				job := nomadParse(t, nomad, r)
				if job.ID == nil || *job.ID != r.Job.ID {
					t.Fatalf("%s: Nomad parsed job %v", r.Job.Name, job.ID)
				}
				if r.Job.Name != "inference" {
					continue
				}
				got := map[string]group{}
				for _, g := range job.TaskGroups {
					if len(g.Services) != 1 || g.Count == nil {
						t.Fatalf("group %s: %d services, count %v", *g.Name, len(g.Services), g.Count)
					}
					got[*g.Name] = group{*g.Count, g.Services[0].Meta["model"]}
				}
				if len(got) != len(tc.want) {
					t.Errorf("Nomad made groups %v, want %v", got, tc.want)
				}
				for n, w := range tc.want {
					if got[n] != w {
						t.Errorf("group %s: %+v, want %+v", n, got[n], w)
					}
				}
			}
		})
	}

	// A refused value: Nomad's parser runs the validation too.
	var v Values
	mustNil(t, v.AddFlag(`extra_models=[{ name = "Bad Name", url = "https://m.example.com/x.gguf", sha256 = "`+embedSHA+`", count = 1 }]`))
	inference, _ := Lookup("inference")
	r, err := Render(inference, &v)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := nomadRun(t, nomad, r); err == nil || !strings.Contains(string(out), "needs a name of its own") {
		t.Errorf("Nomad accepted a bad extra_models name (err %v): %s", err, out)
	}
}

// nomadRun runs `nomad job run -output` on r's job file and variables.
func nomadRun(t *testing.T, nomad string, r *Rendered) ([]byte, error) {
	t.Helper()
	dir := t.TempDir()
	job, vars := filepath.Join(dir, r.Job.File), filepath.Join(dir, r.Job.Name+".vars.hcl")
	mustNil(t, os.WriteFile(job, r.HCL, 0o644))
	mustNil(t, os.WriteFile(vars, r.Variables, 0o644))
	cmd := exec.Command(nomad, "job", "run", "-output", "-var-file", vars, job)
	// -output never contacts an agent; an address nothing listens on makes
	// sure of it.
	cmd.Env = append(os.Environ(), "NOMAD_ADDR=http://127.0.0.1:1")
	return cmd.CombinedOutput()
}

// nomadParse is the job as Nomad's parser makes it of r.
func nomadParse(t *testing.T, nomad string, r *Rendered) *api.Job {
	t.Helper()
	out, err := nomadRun(t, nomad, r)
	if err != nil {
		t.Fatalf("nomad job run -output %s: %v\n%s", r.Job.File, err, out)
	}
	var reg struct{ Job *api.Job }
	if err := json.Unmarshal(out, &reg); err != nil || reg.Job == nil {
		t.Fatalf("nomad job run -output %s: %v\n%s", r.Job.File, err, out)
	}
	return reg.Job
}

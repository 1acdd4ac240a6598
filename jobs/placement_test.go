package jobs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// TestInferencePlacement: inference gets CPU cores of its own, as many
// llama.cpp threads as cores, and instances on different nodes when there
// is room. A thread more than the cores, or a core shared with another
// task, makes llama.cpp's spinning threads wait on each other at every
// decode step (docs/PERFORMANCE.md), so these links must not break.
func TestInferencePlacement(t *testing.T) {
	t.Parallel()
	inference, _ := Lookup("inference")
	tests := []struct {
		name    string
		local   bool
		flags   []string
		cores   int64 // reserved cores; 0: cpu in MHz instead
		cpu     int64
		threads int64 // -threads; 0: the service's default, one per CPU
	}{
		{name: "default", cores: 2, threads: 2},
		{name: "more cores", flags: []string{"inference_cores=4"}, cores: 4, threads: 4},
		{name: "fewer threads than cores", flags: []string{"inference_threads=1"}, cores: 2, threads: 1},
		{name: "no cores", flags: []string{"inference_cores=0", "inference_cpu=3000"}, cpu: 3000, threads: 0},
		{name: "local", local: true, cpu: 1000, threads: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vals := &Values{}
			if tc.local {
				vals = localValues(t)
			}
			for _, f := range tc.flags {
				mustNil(t, vals.AddFlag(f))
			}
			r, err := Render(inference, vals)
			if err != nil {
				t.Fatal(err)
			}
			if failed := validations(t, r); len(failed) > 0 {
				t.Fatalf("validations fail for %v", failed)
			}
			s := parseSpec(t, tc.name, r)
			group := s.group()
			task := s.one(group, "task")
			res := s.one(task, "resources")
			if cores, cpu := s.optNum(res, "cores"), s.optNum(res, "cpu"); cores != tc.cores || cpu != tc.cpu {
				t.Errorf("resources cores=%d cpu=%d, want cores=%d cpu=%d", cores, cpu, tc.cores, tc.cpu)
			}
			if args := s.text(s.one(task, "config"), "args"); !strings.Contains(args, `"-threads=${local.threads}"`) {
				t.Errorf("-threads is not local.threads: %s", args)
			}
			threads, _ := s.ctx.Variables["local"].GetAttr("threads").AsBigFloat().Int64()
			if threads != tc.threads {
				t.Errorf("threads = %d, want %d", threads, tc.threads)
			}

			// Spread over nodes, not distinct_hosts (see the job's comment).
			spread := s.one(group, "spread")
			if s.text(spread, "attribute") != `"${node.unique.id}"` || s.num(spread, "weight") < 50 {
				t.Errorf("spread attribute %s weight %s", s.text(spread, "attribute"), s.text(spread, "weight"))
			}
			for _, c := range append(blocksOf(group, "constraint"), blocksOf(s.job, "constraint")...) {
				if op, ok := c.Body.Attributes["operator"]; ok && strings.Contains(string(op.Expr.Range().SliceBytes(s.src)), "distinct_hosts") {
					t.Errorf("a distinct_hosts constraint would leave canaries unplaceable on a full cluster")
				}
			}
		})
	}

	// Values the validations must refuse.
	for _, flag := range []string{"inference_cores=-1", "inference_cores=1.5", "inference_threads=-2"} {
		var v Values
		mustNil(t, v.AddFlag(flag))
		r, err := Render(inference, &v)
		if err != nil {
			t.Fatal(err)
		}
		want, _, _ := strings.Cut(flag, "=")
		if failed := validations(t, r); !slices.Equal(failed, []string{want}) {
			t.Errorf("-var %s: failed validations %v, want [%s]", flag, failed, want)
		}
	}
}

// TestInferenceCPULevel: an inference binary built for AVX-512
// (inference_x86_64_level, which tools/release writes) keeps the group to
// nodes whose meta lists that level (Terraform's cpu-meta.sh), so that it
// waits for one rather than dies of an illegal instruction; by default
// nothing is asked of the CPU.
func TestInferenceCPULevel(t *testing.T) {
	t.Parallel()
	inference, _ := Lookup("inference")
	for level, want := range map[string]int{"": 0, "v4": 1} {
		var v Values
		if level != "" {
			mustNil(t, v.AddFlag("inference_x86_64_level="+level))
		}
		r, err := Render(inference, &v)
		if err != nil {
			t.Fatal(err)
		}
		s := parseSpec(t, "level "+level, r)
		cs := s.dynamic(s.group(), "constraint")
		if len(cs) != want {
			t.Fatalf("level %q: %d CPU constraints, want %d", level, len(cs), want)
		}
		for _, c := range cs {
			if attr, op, val := s.str(c, "attribute"), s.str(c, "operator"), s.str(c, "value"); attr != "${meta.slm_x86_64_levels}" || op != "set_contains" || val != level {
				t.Errorf("level %q: constraint %s %s %q", level, attr, op, val)
			}
		}
	}
}

// TestGatewayEdge: on a cluster the gateway listens on the node's address
// (the one Consul registers and the load balancer reaches) with a rate
// limit; the local run keeps loopback and no limit.
func TestGatewayEdge(t *testing.T) {
	t.Parallel()
	gateway, _ := Lookup("gateway")
	tests := []struct {
		name        string
		vals        *Values
		bind        string
		rate, burst int64
	}{
		{name: "default", vals: &Values{}, bind: "${NOMAD_IP_http}", rate: 5, burst: 10},
		{name: "local", vals: localValues(t), bind: "127.0.0.1", rate: 0, burst: 10},
	}
	for _, tc := range tests {
		r, err := Render(gateway, tc.vals)
		if err != nil {
			t.Fatal(err)
		}
		s := parseSpec(t, tc.name, r)
		group := s.group()
		if got := s.ctx.Variables["local"].GetAttr("bind").AsString(); got != tc.bind {
			t.Errorf("%s: bind %q, want %q", tc.name, got, tc.bind)
		}
		port := blocksOf(s.one(group, "network"), "port")[0]
		if s.num(port.Body, "static") != 3111 {
			t.Errorf("%s: the load balancer's target port is 3111, the job has %s", tc.name, s.text(port.Body, "static"))
		}
		args := s.text(s.one(s.one(group, "task"), "config"), "args")
		for _, want := range []string{`"-addr=${local.bind}:${NOMAD_PORT_http}"`, `"-rate-limit=${var.gateway_rate_limit}"`, `"-rate-burst=${var.gateway_rate_burst}"`} {
			if !strings.Contains(args, want) {
				t.Errorf("%s: args lack %s: %s", tc.name, want, args)
			}
		}
		rate, _ := r.Values["gateway_rate_limit"].AsBigFloat().Int64()
		burst, _ := r.Values["gateway_rate_burst"].AsBigFloat().Int64()
		if rate != tc.rate || burst != tc.burst {
			t.Errorf("%s: rate limit %d burst %d, want %d and %d", tc.name, rate, burst, tc.rate, tc.burst)
		}
		// The API keys come from the Nomad Variable, into SLM_API_KEYS.
		if data := s.text(s.one(s.one(group, "task"), "template"), "data"); !strings.Contains(data, `eq $key "api_keys"`) || !strings.Contains(data, "SLM_API_KEYS={{ $value }}") {
			t.Errorf("%s: the template does not pass api_keys: %s", tc.name, data)
		}
	}
	for _, flag := range []string{"gateway_rate_limit=-1", "gateway_rate_burst=0"} {
		var v Values
		mustNil(t, v.AddFlag(flag))
		r, err := Render(gateway, &v)
		if err != nil {
			t.Fatal(err)
		}
		want, _, _ := strings.Cut(flag, "=")
		if failed := validations(t, r); !slices.Equal(failed, []string{want}) {
			t.Errorf("-var %s: failed validations %v, want [%s]", flag, failed, want)
		}
	}
}

// TestRoles: on a cluster each tier has a node role of its own (Terraform
// gives every client exactly one), and the local values ask only for roles
// the dev agent's node has (nomad/dev.hcl), so that the local run places.
func TestRoles(t *testing.T) {
	t.Parallel()
	devRoles := devAgentRoles(t)
	for variant, vals := range variants(t) {
		rendered, err := RenderAll(nil, vals)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for _, r := range rendered {
			s := parseSpec(t, variant+"/"+r.Job.Name, r)
			role := s.str(s.one(s.job, "constraint"), "value")
			switch variant {
			case "default":
				if role != r.Job.Name {
					t.Errorf("%s: role %q, want %q", s.name, role, r.Job.Name)
				}
				if other, dup := seen[role]; dup {
					t.Errorf("%s shares role %q with %s", s.name, role, other)
				}
				seen[role] = r.Job.Name
			case "local":
				if !slices.Contains(devRoles, role) {
					t.Errorf("%s: role %q is not one of the dev agent's %v (nomad/dev.hcl)", s.name, role, devRoles)
				}
			}
		}
	}
}

// devAgentRoles reads client.meta.slm_role of nomad/dev.hcl.
func devAgentRoles(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "nomad", "dev.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclsyntax.ParseConfig(src, "nomad/dev.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	for _, client := range blocksOf(f.Body.(*hclsyntax.Body), "client") {
		for _, meta := range blocksOf(client.Body, "meta") {
			if a, ok := meta.Body.Attributes["slm_role"]; ok {
				v, diags := a.Expr.Value(nil)
				if diags.HasErrors() {
					t.Fatal(diags.Error())
				}
				return strings.Split(v.AsString(), ",")
			}
		}
	}
	t.Fatal("nomad/dev.hcl sets no client.meta.slm_role")
	return nil
}

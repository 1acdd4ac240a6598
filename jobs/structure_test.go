package jobs

import (
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// spec is a rendered job parsed with hcl/v2, with an evaluation context
// holding its variables and the locals that do not depend on Nomad's
// run-time interpolation (${NOMAD_...}), which only Nomad can evaluate.
type spec struct {
	t    *testing.T
	name string
	src  []byte
	ctx  *hcl.EvalContext
	job  *hclsyntax.Body
	// iter holds the context of a dynamic block's content, where the
	// iterator (artifact.value, ...) is defined.
	iter map[*hclsyntax.Body]*hcl.EvalContext
}

func parseSpec(t *testing.T, name string, r *Rendered) *spec {
	t.Helper()
	f, diags := hclsyntax.ParseConfig(r.HCL, r.Job.File, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", name, diags.Error())
	}
	s := &spec{t: t, name: name, src: r.HCL, iter: map[*hclsyntax.Body]*hcl.EvalContext{}}
	s.ctx = &hcl.EvalContext{Variables: map[string]cty.Value{
		"var":   cty.ObjectVal(r.Values),
		"local": cty.EmptyObjectVal,
	}, Functions: nomadFunctions}
	body := f.Body.(*hclsyntax.Body)
	// Locals may refer to each other: evaluate until nothing new resolves.
	locals := map[string]cty.Value{}
	for before := -1; len(locals) > before; {
		before = len(locals)
		for _, b := range blocksOf(body, "locals") {
			for n, a := range b.Body.Attributes {
				if v, diags := a.Expr.Value(s.ctx); !diags.HasErrors() {
					locals[n] = v
				}
			}
		}
		s.ctx.Variables["local"] = cty.ObjectVal(locals)
	}
	jobs := blocksOf(body, "job")
	if len(jobs) != 1 || len(jobs[0].Labels) != 1 || jobs[0].Labels[0] != r.Job.ID {
		t.Fatalf("%s: want one job %q", name, r.Job.ID)
	}
	s.job = jobs[0].Body
	return s
}

func blocksOf(body *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

// one returns the only block of typ in body.
func (s *spec) one(body *hclsyntax.Body, typ string) *hclsyntax.Body {
	s.t.Helper()
	bs := blocksOf(body, typ)
	if len(bs) != 1 {
		s.t.Fatalf("%s: want one %s block, found %d", s.name, typ, len(bs))
	}
	return bs[0].Body
}

// dynamic returns the content of the dynamic block of typ whose for_each
// is not empty, or nil when every such block is switched off.
func (s *spec) dynamic(body *hclsyntax.Body, typ string) []*hclsyntax.Body {
	s.t.Helper()
	var out []*hclsyntax.Body
	for _, b := range blocksOf(body, "dynamic") {
		if b.Labels[0] != typ {
			continue
		}
		each := s.eval(b.Body, "for_each")
		if each.LengthInt() == 0 {
			continue
		}
		// The tests look at the first element only.
		it := each.ElementIterator()
		it.Next()
		key, val := it.Element()
		ctx := s.ctxOf(b.Body).NewChild()
		ctx.Variables = map[string]cty.Value{typ: cty.ObjectVal(map[string]cty.Value{"key": key, "value": val})}
		content := s.one(b.Body, "content")
		s.scope(content, ctx)
		out = append(out, content)
	}
	return out
}

// eachGroup calls fn with each task group of the job, by name: its group
// blocks, and one group per element of its dynamic "group" blocks, whose
// content is scoped to that element while fn runs.
func (s *spec) eachGroup(fn func(name string, group *hclsyntax.Body)) {
	s.t.Helper()
	for _, b := range blocksOf(s.job, "group") {
		fn(b.Labels[0], b.Body)
	}
	for _, b := range blocksOf(s.job, "dynamic") {
		if b.Labels[0] != "group" {
			continue
		}
		for it := s.eval(b.Body, "for_each").ElementIterator(); it.Next(); {
			key, val := it.Element()
			ctx := s.ctxOf(b.Body).NewChild()
			ctx.Variables = map[string]cty.Value{"group": cty.ObjectVal(map[string]cty.Value{"key": key, "value": val})}
			labels, diags := b.Body.Attributes["labels"].Expr.Value(ctx)
			if diags.HasErrors() || labels.LengthInt() != 1 {
				s.t.Fatalf("%s: dynamic group labels: %s", s.name, diags.Error())
			}
			content := s.one(b.Body, "content")
			s.scope(content, ctx)
			fn(labels.Index(cty.NumberIntVal(0)).AsString(), content)
		}
	}
}

// group returns the job's only task group.
func (s *spec) group() *hclsyntax.Body {
	s.t.Helper()
	var names []string
	var only *hclsyntax.Body
	s.eachGroup(func(name string, g *hclsyntax.Body) {
		names = append(names, name)
		only = g
	})
	if len(names) != 1 {
		s.t.Fatalf("%s: want one task group, found %v", s.name, names)
	}
	return only
}

// ctxOf is the evaluation context of body: its dynamic block's element,
// or the job's.
func (s *spec) ctxOf(body *hclsyntax.Body) *hcl.EvalContext {
	if c, ok := s.iter[body]; ok {
		return c
	}
	return s.ctx
}

// scope makes ctx the evaluation context of body and its nested blocks.
func (s *spec) scope(body *hclsyntax.Body, ctx *hcl.EvalContext) {
	s.iter[body] = ctx
	for _, b := range body.Blocks {
		s.scope(b.Body, ctx)
	}
}

func (s *spec) eval(body *hclsyntax.Body, attr string) cty.Value {
	s.t.Helper()
	a, ok := body.Attributes[attr]
	if !ok {
		s.t.Fatalf("%s: no attribute %s", s.name, attr)
	}
	v, diags := a.Expr.Value(s.ctxOf(body))
	if diags.HasErrors() {
		s.t.Fatalf("%s: %s: %s", s.name, attr, diags.Error())
	}
	return v
}

func (s *spec) str(body *hclsyntax.Body, attr string) string {
	s.t.Helper()
	v := s.eval(body, attr)
	if v.Type() != cty.String {
		s.t.Fatalf("%s: %s is a %s, want a string", s.name, attr, v.Type().FriendlyName())
	}
	return v.AsString()
}

func (s *spec) num(body *hclsyntax.Body, attr string) int64 {
	s.t.Helper()
	v := s.eval(body, attr)
	if v.Type() != cty.Number {
		s.t.Fatalf("%s: %s is a %s, want a number", s.name, attr, v.Type().FriendlyName())
	}
	n, _ := v.AsBigFloat().Int64()
	return n
}

// optNum is num for an attribute that may be absent or null (0 then).
func (s *spec) optNum(body *hclsyntax.Body, attr string) int64 {
	s.t.Helper()
	if _, ok := body.Attributes[attr]; !ok {
		return 0
	}
	v := s.eval(body, attr)
	if v.IsNull() {
		return 0
	}
	return s.num(body, attr)
}

func (s *spec) boolean(body *hclsyntax.Body, attr string) bool {
	s.t.Helper()
	v := s.eval(body, attr)
	if v.Type() != cty.Bool {
		s.t.Fatalf("%s: %s is a %s, want a bool", s.name, attr, v.Type().FriendlyName())
	}
	return v.True()
}

// text is the source text of an attribute's expression.
func (s *spec) text(body *hclsyntax.Body, attr string) string {
	s.t.Helper()
	a, ok := body.Attributes[attr]
	if !ok {
		s.t.Fatalf("%s: no attribute %s", s.name, attr)
	}
	return string(a.Expr.Range().SliceBytes(s.src))
}

// TestStructure checks the rules the jobs must keep, for the default
// (cluster) and the local variables.
func TestStructure(t *testing.T) {
	t.Parallel()
	type want struct {
		role       string // value meta.slm_role must contain
		port       string
		static     int64 // 0: dynamic port
		minCanary  int64
		discovery  bool // reads its peers from Consul
		checkRoute bool // /health check carries check_restart itself
	}
	wants := map[string]want{
		"gateway":   {role: "gateway", port: "http", static: 3111, discovery: true},
		"caller":    {role: "caller", port: "rpc", minCanary: 1, discovery: true},
		"inference": {role: "inference", port: "rpc", checkRoute: true},
	}
	// The dev node places the inference's canary too (see local.vars.hcl).
	localCanary := map[string]int64{"inference": 1}
	// The dev agent's single node has the roles nomad/dev.hcl gives it.
	localRoles := map[string]string{"caller": "private", "inference": "private"}
	for variant, vals := range variants(t) {
		rendered, err := RenderAll(nil, vals)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rendered {
			w := wants[r.Job.Name]
			if role, ok := localRoles[r.Job.Name]; ok && variant == "local" {
				w.role = role
			}
			if c, ok := localCanary[r.Job.Name]; ok && variant == "local" {
				w.minCanary = c
			}
			s := parseSpec(t, variant+"/"+r.Job.Name, r)
			if got := s.str(s.job, "type"); got != "service" {
				t.Errorf("%s: type %q", s.name, got)
			}

			// Placement: a set_contains constraint on the node's role.
			c := s.one(s.job, "constraint")
			if s.text(c, "attribute") != `"${meta.slm_role}"` || s.str(c, "operator") != "set_contains" || s.str(c, "value") != w.role {
				t.Errorf("%s: constraint %s %s %s", s.name, s.text(c, "attribute"), s.text(c, "operator"), s.text(c, "value"))
			}

			group := s.group()
			if s.num(group, "count") < 1 {
				t.Errorf("%s: count < 1", s.name)
			}

			// Networking: the gateway on its static port, the others dynamic.
			port := blocksOf(s.one(group, "network"), "port")
			if len(port) != 1 || port[0].Labels[0] != w.port {
				t.Fatalf("%s: want one port %q", s.name, w.port)
			}
			if _, has := port[0].Body.Attributes["static"]; has != (w.static != 0) {
				t.Errorf("%s: static port set = %v", s.name, has)
			} else if has && s.num(port[0].Body, "static") != w.static {
				t.Errorf("%s: static port %d, want %d", s.name, s.num(port[0].Body, "static"), w.static)
			}

			// Update: one at a time, canaries, revert on failure.
			u := s.one(group, "update")
			canary := s.num(u, "canary")
			if s.num(u, "max_parallel") != 1 || !s.boolean(u, "auto_revert") || s.str(u, "health_check") != "checks" ||
				s.boolean(u, "auto_promote") != (canary > 0) || canary < w.minCanary {
				t.Errorf("%s: update block max_parallel=%s canary=%d auto_promote=%s auto_revert=%s health_check=%s",
					s.name, s.text(u, "max_parallel"), canary, s.text(u, "auto_promote"), s.text(u, "auto_revert"), s.text(u, "health_check"))
			}
			for _, d := range []string{"min_healthy_time", "healthy_deadline", "progress_deadline"} {
				s.str(u, d)
			}
			restart := s.one(group, "restart")
			if s.num(restart, "attempts") < 1 || s.str(restart, "mode") != "fail" {
				t.Errorf("%s: restart block", s.name)
			}
			s.str(s.one(group, "reschedule"), "delay")

			// Service: registered in Consul under the tier's name, with an
			// HTTP check on /health and a check that restarts the task.
			svc := s.one(group, "service")
			if s.str(svc, "provider") != "consul" || s.str(svc, "name") != r.Job.ID || s.str(svc, "port") != w.port {
				t.Errorf("%s: service provider/name/port = %s/%s/%s", s.name, s.text(svc, "provider"), s.text(svc, "name"), s.text(svc, "port"))
			}
			var httpHealth, restarts bool
			for _, chk := range blocksOf(svc, "check") {
				b := chk.Body
				s.str(b, "interval")
				s.str(b, "timeout")
				isHealth := s.str(b, "type") == "http" && s.str(b, "path") == "/health"
				httpHealth = httpHealth || isHealth
				if cr := blocksOf(b, "check_restart"); len(cr) == 1 {
					restarts = true
					if s.num(cr[0].Body, "limit") < 1 {
						t.Errorf("%s: check_restart limit < 1", s.name)
					}
					if isHealth != w.checkRoute {
						t.Errorf("%s: check_restart on the /health check = %v, want %v", s.name, isHealth, w.checkRoute)
					}
				}
			}
			if !httpHealth || !restarts {
				t.Errorf("%s: http /health check %v, check_restart %v", s.name, httpHealth, restarts)
			}

			task := s.one(group, "task")
			driver := s.str(task, "driver")
			if want := map[string]string{"default": "exec", "local": "raw_exec"}[variant]; driver != want {
				t.Errorf("%s: driver %q, want %q", s.name, driver, want)
			}
			if s.str(task, "shutdown_delay") == "" || !strings.HasSuffix(s.str(task, "kill_timeout"), "s") {
				t.Errorf("%s: shutdown_delay/kill_timeout", s.name)
			}
			config := s.one(task, "config")
			args := s.text(config, "args")
			if strings.Contains(args, `"-discovery=consul"`) != w.discovery {
				t.Errorf("%s: -discovery=consul in args = %v, want %v", s.name, !w.discovery, w.discovery)
			}
			if w.discovery && (strings.Contains(args, "-caller=") || strings.Contains(args, "-inference=")) {
				t.Errorf("%s: peers are rendered into the args; they come from Consul", s.name)
			}
			command := s.str(config, "command")
			if !strings.HasSuffix(command, "/"+r.Job.Name) {
				t.Errorf("%s: command %q", s.name, command)
			}
			if variant == "local" && command != "/home/dev/slm-mesh/.cache/bin/"+r.Job.Name {
				t.Errorf("%s: command %q does not use bin_dir", s.name, command)
			}

			// The tokens: from the job's own Nomad Variable, each item the
			// job needs into the environment, and no other.
			tpl := s.one(task, "template")
			data := s.text(tpl, "data")
			if !s.boolean(tpl, "env") || !strings.Contains(data, `nomadVar "${var.secrets_var}"`) {
				t.Errorf("%s: template env=%s data=%s", s.name, s.text(tpl, "env"), data)
			}
			if p := r.String("secrets_var"); p != "nomad/jobs/"+r.Job.ID {
				t.Errorf("%s: secrets_var %q: a task reads only nomad/jobs/%s", s.name, p, r.Job.ID)
			}
			for _, item := range []string{"caller_token", "inference_token"} {
				if uses := strings.Contains(data, "{{ ."+item+" }}"); uses != slices.Contains(r.Job.Secrets, item) {
					t.Errorf("%s: template reads %s: %v, want %v", s.name, item, uses, !uses)
				}
			}
			res := s.one(task, "resources")
			if s.str(task, "driver") == "" || s.num(res, "memory") < 64 {
				t.Errorf("%s: resources", s.name)
			}
			// cores and cpu exclude each other; one of them is set.
			if cores, cpu := s.optNum(res, "cores"), s.optNum(res, "cpu"); (cores > 0) == (cpu > 0) {
				t.Errorf("%s: resources cores=%d cpu=%d: want exactly one", s.name, cores, cpu)
			}
		}
	}
}

// args is the task's config.args as Nomad receives them: every variable
// and local evaluated, and Nomad's run-time ${NOMAD_...} references kept as
// they are written, for the client to fill in.
func (s *spec) args(task *hclsyntax.Body) []string {
	s.t.Helper()
	config := s.one(task, "config")
	ctx := s.ctxOf(config).NewChild()
	ctx.Variables = map[string]cty.Value{}
	for _, tr := range config.Attributes["args"].Expr.Variables() {
		if name := tr.RootName(); strings.HasPrefix(name, "NOMAD_") {
			ctx.Variables[name] = cty.StringVal("${" + name + "}")
		}
	}
	v, diags := config.Attributes["args"].Expr.Value(ctx)
	if diags.HasErrors() {
		s.t.Fatalf("%s: args: %s", s.name, diags.Error())
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		out = append(out, e.AsString())
	}
	return out
}

// TestModelChecksum: the model is pinned by its sha256 every way it can
// arrive: downloaded by the service into the host volume cache (default),
// fetched by Nomad as an artifact (local), or, from the artifacts bucket
// (an s3:: URL, with the default and the local values), fetched by Nomad
// into an allocation whose disk a replacement on the node inherits.
func TestModelChecksum(t *testing.T) {
	t.Parallel()
	inference, _ := Lookup("inference")
	cases := variants(t)
	cases["cachedir"] = localValues(t)
	mustNil(t, cases["cachedir"].AddFlag("model_cache_dir=/var/cache/slm-mesh"))
	const s3Model = "s3::https://slm-mesh-artifacts-1a2b.s3.eu-west-1.amazonaws.com/models/0ef57d2c838458a1952664260dcba38e5bdda37494f3af732f06e4add24068e3/gemma-3-270m-it-Q8_0.gguf"
	cases["s3"] = &Values{}
	mustNil(t, cases["s3"].AddFlag("model_url="+s3Model))
	cases["s3-local"] = localValues(t)
	mustNil(t, cases["s3-local"].AddFlag("model_url="+s3Model))
	for variant, vals := range cases {
		r, err := Render(inference, vals)
		if err != nil {
			t.Fatal(err)
		}
		s := parseSpec(t, variant, r)
		group := s.group()
		task := s.one(group, "task")
		sha := r.String("model_sha256")
		if len(sha) != 64 {
			t.Fatalf("%s: model_sha256 %q", s.name, sha)
		}
		args := s.args(task)
		if !slices.Contains(args, "-model-sha256="+sha) {
			t.Errorf("%s: the service is not given the model's sha256: %q", s.name, args)
		}
		artifacts := s.dynamic(task, "artifact")
		volumes := s.dynamic(group, "volume")
		disks := s.dynamic(group, "ephemeral_disk")
		if s3 := strings.HasPrefix(variant, "s3"); s3 != (len(disks) == 1) {
			t.Errorf("%s: %d ephemeral_disk blocks; want the sticky one only for an s3:: model", s.name, len(disks))
		}
		switch variant {
		case "default":
			if len(artifacts) != 0 || len(volumes) != 1 || len(s.dynamic(task, "volume_mount")) != 1 {
				t.Fatalf("%s: want the model cache volume and no artifact; got %d artifacts, %d volumes", s.name, len(artifacts), len(volumes))
			}
			if s.str(volumes[0], "type") != "host" {
				t.Errorf("%s: model cache volume type %s", s.name, s.text(volumes[0], "type"))
			}
		case "cachedir":
			if len(artifacts) != 0 || len(volumes) != 0 || len(s.dynamic(task, "volume_mount")) != 0 {
				t.Fatalf("%s: want neither artifact nor volume; got %d artifacts, %d volumes", s.name, len(artifacts), len(volumes))
			}
			if !slices.Contains(args, "-cache-dir=/var/cache/slm-mesh") || !slices.Contains(args, "-model="+r.String("model_url")) {
				t.Errorf("%s: the service does not download the model into the cache directory: %q", s.name, args)
			}
		case "local":
			if len(artifacts) != 1 || len(volumes) != 0 {
				t.Fatalf("%s: want the model artifact and no volume; got %d artifacts, %d volumes", s.name, len(artifacts), len(volumes))
			}
			if got := s.str(s.one(artifacts[0], "options"), "checksum"); got != "sha256:"+sha {
				t.Errorf("%s: artifact checksum %q", s.name, got)
			}
		case "s3", "s3-local":
			// Only Nomad's fetcher holds the node's credentials: the
			// model is an artifact, checked by its sha256, whatever
			// cache the other variables name.
			if len(artifacts) != 1 || len(volumes) != 0 || len(s.dynamic(task, "volume_mount")) != 0 {
				t.Fatalf("%s: want the model artifact and no volume; got %d artifacts, %d volumes", s.name, len(artifacts), len(volumes))
			}
			a := artifacts[0]
			if s.str(a, "source") != s3Model || s.str(a, "mode") != "file" || s.str(s.one(a, "options"), "checksum") != "sha256:"+sha {
				t.Errorf("%s: artifact source %s mode %s checksum %s", s.name, s.text(a, "source"), s.text(a, "mode"), s.text(s.one(a, "options"), "checksum"))
			}
			// It lands in local/, the directory a sticky disk hands on to
			// the allocation that replaces this one on the node; the
			// service is started on that file.
			if dest := s.str(a, "destination"); dest != "local/model.gguf" {
				t.Errorf("%s: artifact lands in %q, want local/model.gguf", s.name, dest)
			}
			if !slices.Contains(args, "-model=${NOMAD_TASK_DIR}/model.gguf") || slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "-cache-dir=") }) {
				t.Errorf("%s: the service is started with %q, not on the artifact", s.name, args)
			}
			if len(disks) == 1 && (!s.boolean(disks[0], "sticky") || s.num(disks[0], "size") < 300) {
				t.Errorf("%s: ephemeral_disk sticky=%s size=%s", s.name, s.text(disks[0], "sticky"), s.text(disks[0], "size"))
			}
		}
	}
}

// TestBinaryArtifact: binaries fetched by URL always carry a checksum.
func TestBinaryArtifact(t *testing.T) {
	t.Parallel()
	const sum = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	for _, j := range All {
		var v Values
		mustNil(t, v.AddFlag(j.Name+"_binary_url=https://releases.example.com/slm-mesh/"+j.Name))
		mustNil(t, v.AddFlag(j.Name+"_binary_sha256="+sum))
		r, err := Render(j, &v)
		if err != nil {
			t.Fatal(err)
		}
		s := parseSpec(t, j.Name, r)
		task := s.one(s.group(), "task")
		var found bool
		for _, a := range s.dynamic(task, "artifact") {
			if s.str(a, "source") == "https://releases.example.com/slm-mesh/"+j.Name {
				found = true
				if got := s.str(s.one(a, "options"), "checksum"); got != "sha256:"+sum {
					t.Errorf("%s: checksum %q", j.Name, got)
				}
				if dest := s.str(a, "destination"); dest != s.str(s.one(task, "config"), "command") {
					t.Errorf("%s: artifact lands in %q, command is %q", j.Name, dest, s.str(s.one(task, "config"), "command"))
				}
			}
		}
		if !found {
			t.Errorf("%s: no artifact for the binary URL", j.Name)
		}
	}
}

// nomadFunctions are the functions the templates call, under the names
// Nomad's jobspec gives them. Nomad's `length` takes collections only (the
// string length is strlen) and it has no `regex`; a template that calls a
// function missing here fails TestVariableValidations, which is how such
// a mix-up is caught without a Nomad server.
var nomadFunctions = map[string]function.Function{
	"concat":        stdlib.ConcatFunc,
	"contains":      stdlib.ContainsFunc,
	"distinct":      stdlib.DistinctFunc,
	"floor":         stdlib.FloorFunc,
	"length":        stdlib.LengthFunc,
	"merge":         stdlib.MergeFunc,
	"regex_replace": stdlib.RegexReplaceFunc,
	"strlen":        stdlib.StrlenFunc,
	"substr":        stdlib.SubstrFunc,
}

// validations evaluates the condition of every variable validation block of
// r and returns the names of the variables whose condition is false.
func validations(t *testing.T, r *Rendered) []string {
	t.Helper()
	f, diags := hclsyntax.ParseConfig(r.HCL, r.Job.File, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(r.Values)},
		Functions: nomadFunctions,
	}
	var failed []string
	for _, b := range blocksOf(f.Body.(*hclsyntax.Body), "variable") {
		for _, v := range blocksOf(b.Body, "validation") {
			cond, diags := v.Body.Attributes["condition"].Expr.Value(ctx)
			if diags.HasErrors() {
				t.Fatalf("%s: variable %s: %s", r.Job.Name, b.Labels[0], diags.Error())
			}
			if cond.False() {
				failed = append(failed, b.Labels[0])
			}
		}
	}
	return failed
}

func TestVariableValidations(t *testing.T) {
	t.Parallel()
	for variant, vals := range variants(t) {
		rendered, err := RenderAll(nil, vals)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rendered {
			if failed := validations(t, r); len(failed) > 0 {
				t.Errorf("%s/%s: validation fails for %v", variant, r.Job.Name, failed)
			}
		}
	}

	// Values the validations must refuse.
	inference, _ := Lookup("inference")
	for flag, want := range map[string]string{
		"driver=docker":         "driver",
		"model_sha256=0ef57d2c": "model_sha256",
		"inference_binary_sha256=" + strings.Repeat("G", 64): "inference_binary_sha256",
		"inference_x86_64_level=x86-64-v4":                   "inference_x86_64_level",
		"secrets_var=nomad/jobs/slm-caller":                  "secrets_var",
		"secrets_var=nomad/jobs/slm-inferencer":              "secrets_var",
	} {
		var v Values
		mustNil(t, v.AddFlag(flag))
		r, err := Render(inference, &v)
		if err != nil {
			t.Fatal(err)
		}
		if failed := validations(t, r); len(failed) != 1 || failed[0] != want {
			t.Errorf("-var %s: failed validations %v, want [%s]", flag, failed, want)
		}
	}
}

// TestValidationMessagesAreSentences: Nomad's job parser refuses the whole
// job when a variable's validation error_message is not a sentence, the
// rule of its jobspec2 looksLikeSentences: a first letter in upper case
// and a last character of '.', '?' or '!'. hcl/v2 alone does not check
// it, so a lower-case message passes every other test here and breaks
// `submit` on a real server ("Invalid validation error message").
func TestValidationMessagesAreSentences(t *testing.T) {
	t.Parallel()
	for _, j := range All {
		f, diags := hclsyntax.ParseConfig(j.Source(), j.File, hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatal(diags.Error())
		}
		for _, b := range blocksOf(f.Body.(*hclsyntax.Body), "variable") {
			for _, v := range blocksOf(b.Body, "validation") {
				attr, ok := v.Body.Attributes["error_message"]
				if !ok {
					t.Errorf("%s: variable %s: validation without error_message", j.File, b.Labels[0])
					continue
				}
				msg, diags := attr.Expr.Value(nil)
				if diags.HasErrors() || msg.Type() != cty.String {
					t.Errorf("%s: variable %s: error_message is not a literal string", j.File, b.Labels[0])
					continue
				}
				if !looksLikeSentence(msg.AsString()) {
					t.Errorf("%s: variable %s: Nomad refuses error_message %q: it must start with an upper-case letter and end with '.', '?' or '!'",
						j.File, b.Labels[0], msg.AsString())
				}
			}
		}
	}
}

// looksLikeSentence is Nomad's rule for validation messages (jobspec2,
// looksLikeSentences).
func looksLikeSentence(s string) bool {
	runes := []rune(s)
	if len(runes) == 0 {
		return false
	}
	first, last := runes[0], runes[len(runes)-1]
	if unicode.IsLetter(first) && !unicode.IsUpper(first) {
		return false
	}
	return last == '.' || last == '?' || last == '!'
}

// Package jobs holds the Nomad job templates of slm-mesh (gateway, caller,
// inference) and renders them with an operator's variable values.
//
// The templates are HCL2 job files with variable blocks. Rendering does not
// evaluate the job: it only replaces the default of each variable that the
// operator set, so the result is still a complete job file that Nomad parses
// on its own (Jobs().ParseHCLOpts, or `nomad job run`), and what `submit
// render` prints is exactly what the server receives.
package jobs

import (
	"embed"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

//go:embed *.nomad.hcl local.vars.hcl
var files embed.FS

// Errors of rendering; check them with errors.Is. The error values carry
// the detail (variable, job, file and position).
var (
	// ErrUnknownJob: a job name that is not one of All.
	ErrUnknownJob = errors.New("unknown job")
	// ErrMissingVariable: a variable has no default and no value was given.
	ErrMissingVariable = errors.New("variable has no value")
	// ErrUndeclaredVariable: a value was given for a variable no job declares.
	ErrUndeclaredVariable = errors.New("variable is not declared by any job")
	// ErrBadValue: a variables file or a -var value cannot be parsed, or a
	// value does not have the variable's type.
	ErrBadValue = errors.New("bad variable value")
)

// Job is one of the job templates.
type Job struct {
	// Name is the short name used on the command line: "gateway".
	Name string
	// ID is the Nomad job ID, which is also the Consul service name:
	// "slm-gateway".
	ID string
	// File is the template's file name in this package: "gateway.nomad.hcl".
	File string
	// Secrets are the items the job's Nomad Variable (its secrets_var,
	// nomad/jobs/<ID> by default) must hold before its tasks can start;
	// TLSSecrets those it must hold too when rpc_tls is on.
	Secrets, TLSSecrets []string

	// src, when set, replaces the embedded file (tests use it).
	src []byte
}

// All lists the jobs in deployment order. Each tier's health check needs
// the tier below it to be healthy (the gateway's /health proves the whole
// chain), so inference goes first and the gateway last.
var All = []Job{
	{Name: "inference", ID: "slm-inference", File: "inference.nomad.hcl",
		Secrets: []string{"inference_token"}, TLSSecrets: []string{"inference_cert", "inference_key"}},
	{Name: "caller", ID: "slm-caller", File: "caller.nomad.hcl",
		Secrets: []string{"caller_token", "inference_token"}, TLSSecrets: []string{"caller_cert", "caller_key", "rpc_ca"}},
	{Name: "gateway", ID: "slm-gateway", File: "gateway.nomad.hcl",
		Secrets: []string{"caller_token"}, TLSSecrets: []string{"rpc_ca"}},
}

// Lookup returns the job with the given short name or ID.
func Lookup(name string) (Job, error) {
	for _, j := range All {
		if j.Name == name || j.ID == name {
			return j, nil
		}
	}
	names := make([]string, len(All))
	for i, j := range All {
		names[i] = j.Name
	}
	return Job{}, fmt.Errorf("%w %q (want one of %s)", ErrUnknownJob, name, strings.Join(names, ", "))
}

// Source is the template as committed.
func (j Job) Source() []byte {
	if j.src != nil {
		return j.src
	}
	b, err := files.ReadFile(j.File)
	if err != nil {
		// The file list is fixed at compile time by go:embed.
		panic(fmt.Sprintf("jobs: %s is not embedded: %v", j.File, err))
	}
	return b
}

// LocalVars is jobs/local.vars.hcl, the variables for a single-machine
// `nomad agent -dev` + `consul agent -dev`.
func LocalVars() []byte {
	b, _ := files.ReadFile("local.vars.hcl")
	return b
}

// Values are an operator's variable values, from variables files and
// -var name=value flags. The zero value holds none; later additions win.
type Values struct {
	byName map[string]value
}

// value is one operator value. A -var value stays raw until its variable's
// type is known: for a string variable it is taken literally, otherwise it
// is parsed as an HCL expression (as Terraform and Nomad do).
type value struct {
	val    cty.Value
	raw    string
	isRaw  bool
	origin string
}

func (v *Values) set(name string, val value) {
	if v.byName == nil {
		v.byName = make(map[string]value)
	}
	v.byName[name] = val
}

// AddFile adds the values of a variables file: HCL attributes
// `name = value`, nothing else. filename is used in error messages.
func (v *Values) AddFile(filename string, src []byte) error {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return fmt.Errorf("%w: %s", ErrBadValue, diags.Error())
	}
	body := f.Body.(*hclsyntax.Body)
	if len(body.Blocks) > 0 {
		b := body.Blocks[0]
		return fmt.Errorf("%w: %s: a variables file holds only name = value lines, not a %q block", ErrBadValue, b.Range(), b.Type)
	}
	for name, attr := range body.Attributes {
		val, diags := attr.Expr.Value(nil)
		if diags.HasErrors() {
			return fmt.Errorf("%w: %s", ErrBadValue, diags.Error())
		}
		v.set(name, value{val: val, origin: attr.SrcRange.String()})
	}
	return nil
}

// AddFlag adds one -var flag, "name=value".
func (v *Values) AddFlag(flag string) error {
	name, raw, ok := strings.Cut(flag, "=")
	name = strings.TrimSpace(name)
	if !ok || !hclsyntax.ValidIdentifier(name) {
		return fmt.Errorf("%w: -var %q: want name=value", ErrBadValue, flag)
	}
	v.set(name, value{raw: raw, isRaw: true, origin: "-var " + name})
	return nil
}

// Names lists the variables that have a value, sorted.
func (v *Values) Names() []string {
	return slices.Sorted(maps.Keys(v.byName))
}

// Rendered is a job template with an operator's values applied.
type Rendered struct {
	Job Job
	// HCL is the job file with the default of every variable the operator
	// set replaced by its value: a complete job that Nomad parses as is.
	HCL []byte
	// Variables is the operator's values for this job as a variables file,
	// for Jobs().ParseHCLOpts and the job submission Nomad keeps.
	Variables []byte
	// Values is the value of every variable the job declares.
	Values map[string]cty.Value
}

// String returns the value of a string variable, or "" when it has none.
func (r *Rendered) String(name string) string {
	v, ok := r.Values[name]
	if !ok || v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return ""
	}
	return v.AsString()
}

// Bool returns the value of a bool variable, false when it has none.
func (r *Rendered) Bool(name string) bool {
	v, ok := r.Values[name]
	return ok && !v.IsNull() && v.IsKnown() && v.Type() == cty.Bool && v.True()
}

// variable is a variable block of a template.
type variable struct {
	name       string
	typ        cty.Type
	def        cty.Value
	hasDefault bool
}

// declarations reads the variable blocks of a job template.
func declarations(j Job) ([]variable, error) {
	f, diags := hclsyntax.ParseConfig(j.Source(), j.File, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fmt.Errorf("job %s: %s", j.Name, diags.Error())
	}
	var vars []variable
	for _, b := range f.Body.(*hclsyntax.Body).Blocks {
		if b.Type != "variable" || len(b.Labels) != 1 {
			continue
		}
		decl := variable{name: b.Labels[0], typ: cty.DynamicPseudoType}
		if a, ok := b.Body.Attributes["type"]; ok {
			t, diags := typeexpr.TypeConstraint(a.Expr)
			if diags.HasErrors() {
				return nil, fmt.Errorf("job %s: %s", j.Name, diags.Error())
			}
			decl.typ = t
		}
		if a, ok := b.Body.Attributes["default"]; ok {
			val, diags := a.Expr.Value(nil)
			if diags.HasErrors() {
				return nil, fmt.Errorf("job %s: %s", j.Name, diags.Error())
			}
			decl.def, decl.hasDefault = val, true
		}
		vars = append(vars, decl)
	}
	return vars, nil
}

// resolve turns an operator value into a value of the variable's type.
func (decl variable) resolve(val value) (cty.Value, error) {
	v := val.val
	if val.isRaw {
		if decl.typ == cty.String || decl.typ == cty.DynamicPseudoType {
			v = cty.StringVal(val.raw)
		} else {
			expr, diags := hclsyntax.ParseExpression([]byte(val.raw), val.origin, hcl.InitialPos)
			if diags.HasErrors() {
				return cty.NilVal, fmt.Errorf("%w: %s: %q is not a valid %s", ErrBadValue, val.origin, val.raw, decl.typ.FriendlyName())
			}
			if v, diags = expr.Value(nil); diags.HasErrors() {
				return cty.NilVal, fmt.Errorf("%w: %s: %s", ErrBadValue, val.origin, diags.Error())
			}
		}
	}
	out, err := convert.Convert(v, decl.typ)
	if err != nil {
		return cty.NilVal, fmt.Errorf("%w: %s: variable %s wants a %s: %v", ErrBadValue, val.origin, decl.name, decl.typ.FriendlyName(), err)
	}
	return out, nil
}

// Render applies vals to the job template j. Values for variables that j
// does not declare are ignored here (another job may declare them; see
// RenderAll).
func Render(j Job, vals *Values) (*Rendered, error) {
	if vals == nil {
		vals = &Values{}
	}
	decls, err := declarations(j)
	if err != nil {
		return nil, err
	}
	file, diags := hclwrite.ParseConfig(j.Source(), j.File, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fmt.Errorf("job %s: %s", j.Name, diags.Error())
	}
	blocks := map[string]*hclwrite.Block{}
	for _, b := range file.Body().Blocks() {
		if b.Type() == "variable" && len(b.Labels()) == 1 {
			blocks[b.Labels()[0]] = b
		}
	}

	r := &Rendered{Job: j, Values: map[string]cty.Value{}}
	varsFile := hclwrite.NewEmptyFile()
	var missing []string
	for _, decl := range decls {
		given, ok := vals.byName[decl.name]
		switch {
		case ok:
			v, err := decl.resolve(given)
			if err != nil {
				return nil, fmt.Errorf("job %s: %w", j.Name, err)
			}
			r.Values[decl.name] = v
			blocks[decl.name].Body().SetAttributeValue("default", v)
		case decl.hasDefault:
			r.Values[decl.name] = decl.def
		default:
			missing = append(missing, decl.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: job %s needs %s: set it with -var %s=... or in a -var-file",
			ErrMissingVariable, j.Name, strings.Join(missing, ", "), missing[0])
	}
	for _, name := range vals.Names() {
		if v, ok := r.Values[name]; ok {
			varsFile.Body().SetAttributeValue(name, v)
		}
	}
	r.HCL = hclwrite.Format(file.Bytes())
	r.Variables = hclwrite.Format(varsFile.Bytes())
	return r, nil
}

// RenderAll renders the jobs (All when jobs is empty) in order. It refuses a
// value for a variable that none of All declares, which is how a typo in a
// -var or a variables file is caught.
func RenderAll(jobs []Job, vals *Values) ([]*Rendered, error) {
	if len(jobs) == 0 {
		jobs = All
	}
	if vals == nil {
		vals = &Values{}
	}
	declared := map[string]bool{}
	for _, j := range All {
		decls, err := declarations(j)
		if err != nil {
			return nil, err
		}
		for _, d := range decls {
			declared[d.name] = true
		}
	}
	for _, name := range vals.Names() {
		if !declared[name] {
			return nil, fmt.Errorf("%w: %s (from %s)", ErrUndeclaredVariable, name, vals.byName[name].origin)
		}
	}
	out := make([]*Rendered, 0, len(jobs))
	for _, j := range jobs {
		r, err := Render(j, vals)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

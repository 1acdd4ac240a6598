package provider

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// --- random_bytes ---------------------------------------------------------------

type randomBytes struct{ generated }

type randomBytesModel struct {
	Length  types.Int64  `tfsdk:"length"`
	Keepers types.Map    `tfsdk:"keepers"`
	Base64  types.String `tfsdk:"base64"`
	Hex     types.String `tfsdk:"hex"`
}

func newRandomBytes() resource.Resource { return randomBytes{} }

func (randomBytes) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_bytes"
}

func (randomBytes) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Random bytes from crypto/rand.",
		Attributes: map[string]schema.Attribute{
			"length":  schema.Int64Attribute{Required: true, PlanModifiers: replaceInt},
			"keepers": keepersAttribute(),
			"base64":  computedString(true),
			"hex":     computedString(true),
		},
	}
}

func (randomBytes) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m randomBytesModel
	if resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...); resp.Diagnostics.HasError() {
		return
	}
	n := m.Length.ValueInt64()
	if n < 1 {
		resp.Diagnostics.AddAttributeError(path.Root("length"), "Invalid length", "length must be at least 1.")
		return
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		resp.Diagnostics.AddError("Reading random bytes", err.Error())
		return
	}
	m.Base64 = types.StringValue(base64.StdEncoding.EncodeToString(b))
	m.Hex = types.StringValue(hex.EncodeToString(b))
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// --- random_uuid ----------------------------------------------------------------

type randomUUID struct{ generated }

type randomUUIDModel struct {
	ID      types.String `tfsdk:"id"`
	Keepers types.Map    `tfsdk:"keepers"`
	Result  types.String `tfsdk:"result"`
}

func newRandomUUID() resource.Resource { return randomUUID{} }

func (randomUUID) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_uuid"
}

func (randomUUID) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A random (version 4) UUID.",
		Attributes: map[string]schema.Attribute{
			"id":      computedString(false),
			"keepers": keepersAttribute(),
			"result":  computedString(false),
		},
	}
}

func (randomUUID) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m randomUUIDModel
	if resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...); resp.Diagnostics.HasError() {
		return
	}
	u, err := uuid4()
	if err != nil {
		resp.Diagnostics.AddError("Generating a UUID", err.Error())
		return
	}
	m.ID = types.StringValue(u)
	m.Result = types.StringValue(u)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// uuid4 returns a random UUID (RFC 9562 version 4) in its canonical form.
func uuid4() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// --- random_password ------------------------------------------------------------

type randomPassword struct{ generated }

type randomPasswordModel struct {
	ID              types.String `tfsdk:"id"`
	Length          types.Int64  `tfsdk:"length"`
	Special         types.Bool   `tfsdk:"special"`
	Upper           types.Bool   `tfsdk:"upper"`
	Lower           types.Bool   `tfsdk:"lower"`
	Numeric         types.Bool   `tfsdk:"numeric"`
	OverrideSpecial types.String `tfsdk:"override_special"`
	Keepers         types.Map    `tfsdk:"keepers"`
	Result          types.String `tfsdk:"result"`
}

func newRandomPassword() resource.Resource { return randomPassword{} }

func (randomPassword) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_password"
}

func (randomPassword) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	class := func() schema.BoolAttribute {
		return schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(true), PlanModifiers: replaceBool}
	}
	resp.Schema = schema.Schema{
		Description: "A random string of the chosen character classes, from crypto/rand.",
		Attributes: map[string]schema.Attribute{
			"id":               computedString(false),
			"length":           schema.Int64Attribute{Required: true, PlanModifiers: replaceInt},
			"special":          class(),
			"upper":            class(),
			"lower":            class(),
			"numeric":          class(),
			"override_special": schema.StringAttribute{Optional: true, PlanModifiers: replaceString},
			"keepers":          keepersAttribute(),
			"result":           computedString(true),
		},
	}
}

func (randomPassword) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m randomPasswordModel
	if resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...); resp.Diagnostics.HasError() {
		return
	}
	special := "!@#$%&*()-_=+[]{}<>:?"
	if !m.OverrideSpecial.IsNull() {
		special = m.OverrideSpecial.ValueString()
	}
	var set string
	for _, c := range []struct {
		on    bool
		chars string
	}{
		{m.Upper.ValueBool(), "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
		{m.Lower.ValueBool(), "abcdefghijklmnopqrstuvwxyz"},
		{m.Numeric.ValueBool(), "0123456789"},
		{m.Special.ValueBool(), special},
	} {
		if c.on {
			set += c.chars
		}
	}
	s, err := randomString(int(m.Length.ValueInt64()), set)
	if err != nil {
		resp.Diagnostics.AddError("Generating a password", err.Error())
		return
	}
	m.ID = types.StringValue("none")
	m.Result = types.StringValue(s)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// randomString returns n characters drawn uniformly from set.
func randomString(n int, set string) (string, error) {
	if n < 1 {
		return "", errors.New("length must be at least 1")
	}
	if set == "" {
		return "", errors.New("no character class is enabled")
	}
	max := big.NewInt(int64(len(set)))
	out := make([]byte, n)
	for i := range out {
		j, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", err
		}
		out[i] = set[j.Int64()]
	}
	return string(out), nil
}

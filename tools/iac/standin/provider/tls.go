package provider

import (
	"context"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// --- tls_private_key ------------------------------------------------------------

type privateKey struct{ generated }

type privateKeyModel struct {
	ID                 types.String `tfsdk:"id"`
	Algorithm          types.String `tfsdk:"algorithm"`
	RSABits            types.Int64  `tfsdk:"rsa_bits"`
	ECDSACurve         types.String `tfsdk:"ecdsa_curve"`
	PrivateKeyPEM      types.String `tfsdk:"private_key_pem"`
	PrivateKeyPEMPKCS8 types.String `tfsdk:"private_key_pem_pkcs8"`
	PublicKeyPEM       types.String `tfsdk:"public_key_pem"`
}

func newPrivateKey() resource.Resource { return privateKey{} }

func (privateKey) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_private_key"
}

func (privateKey) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A private key (RSA, ECDSA or ED25519) from crypto/rand.",
		Attributes: map[string]schema.Attribute{
			"id":                    computedString(false),
			"algorithm":             schema.StringAttribute{Required: true, PlanModifiers: replaceString},
			"rsa_bits":              schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(2048), PlanModifiers: replaceInt},
			"ecdsa_curve":           schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("P224"), PlanModifiers: replaceString},
			"private_key_pem":       computedString(true),
			"private_key_pem_pkcs8": computedString(true),
			"public_key_pem":        computedString(false),
		},
	}
}

func (privateKey) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m privateKeyModel
	if resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...); resp.Diagnostics.HasError() {
		return
	}
	k, err := generateKey(m.Algorithm.ValueString(), int(m.RSABits.ValueInt64()), m.ECDSACurve.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Generating a private key", err.Error())
		return
	}
	m.ID = types.StringValue(k.id)
	m.PrivateKeyPEM = types.StringValue(k.private)
	m.PrivateKeyPEMPKCS8 = types.StringValue(k.privatePKCS8)
	m.PublicKeyPEM = types.StringValue(k.public)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// --- the subject block and the names, shared by the next three ---------------------

type subjectModel struct {
	CommonName         types.String `tfsdk:"common_name"`
	Organization       types.String `tfsdk:"organization"`
	OrganizationalUnit types.String `tfsdk:"organizational_unit"`
	StreetAddress      types.List   `tfsdk:"street_address"`
	Locality           types.String `tfsdk:"locality"`
	Province           types.String `tfsdk:"province"`
	Country            types.String `tfsdk:"country"`
	PostalCode         types.String `tfsdk:"postal_code"`
	SerialNumber       types.String `tfsdk:"serial_number"`
}

func subjectBlock() schema.ListNestedBlock {
	s := func() schema.StringAttribute {
		return schema.StringAttribute{Optional: true, PlanModifiers: replaceString}
	}
	return schema.ListNestedBlock{
		PlanModifiers: replaceList,
		NestedObject: schema.NestedBlockObject{
			Attributes: map[string]schema.Attribute{
				"common_name":         s(),
				"organization":        s(),
				"organizational_unit": s(),
				"street_address":      stringList(false),
				"locality":            s(),
				"province":            s(),
				"country":             s(),
				"postal_code":         s(),
				"serial_number":       s(),
			},
		},
	}
}

func subjectOf(ctx context.Context, l []subjectModel) (subject, error) {
	if len(l) == 0 {
		return subject{}, nil
	}
	m := l[0]
	street, err := stringsOf(ctx, m.StreetAddress)
	if err != nil {
		return subject{}, err
	}
	return subject{
		CommonName:         m.CommonName.ValueString(),
		Organization:       m.Organization.ValueString(),
		OrganizationalUnit: m.OrganizationalUnit.ValueString(),
		StreetAddress:      street,
		Locality:           m.Locality.ValueString(),
		Province:           m.Province.ValueString(),
		Country:            m.Country.ValueString(),
		PostalCode:         m.PostalCode.ValueString(),
		SerialNumber:       m.SerialNumber.ValueString(),
	}, nil
}

func namesOf(ctx context.Context, dns, ip, uri types.List) (names, error) {
	var n names
	var err error
	if n.DNS, err = stringsOf(ctx, dns); err != nil {
		return n, err
	}
	if n.IP, err = stringsOf(ctx, ip); err != nil {
		return n, err
	}
	n.URI, err = stringsOf(ctx, uri)
	return n, err
}

// certificate attributes shared by the two kinds of certificate.
func certAttributes(extra map[string]schema.Attribute) map[string]schema.Attribute {
	a := map[string]schema.Attribute{
		"id":                    computedString(false),
		"validity_period_hours": schema.Int64Attribute{Required: true, PlanModifiers: replaceInt},
		"early_renewal_hours":   schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(0), PlanModifiers: replaceInt},
		"allowed_uses":          stringList(true),
		"is_ca_certificate":     schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false), PlanModifiers: replaceBool},
		"set_subject_key_id":    schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false), PlanModifiers: replaceBool},
		"cert_pem":              computedString(false),
		"validity_start_time":   computedString(false),
		"validity_end_time":     computedString(false),
		// Renewal inside early_renewal_hours is not modelled: a stand-in's
		// certificates live as long as one test run.
		"ready_for_renewal": schema.BoolAttribute{Computed: true, PlanModifiers: keepBool},
	}
	for k, v := range extra {
		a[k] = v
	}
	return a
}

func certOptionsOf(ctx context.Context, hours types.Int64, uses types.List, isCA, subjectKey types.Bool) (certOptions, error) {
	u, err := stringsOf(ctx, uses)
	return certOptions{
		ValidityHours: hours.ValueInt64(),
		AllowedUses:   u,
		IsCA:          isCA.ValueBool(),
		SetSubjectKey: subjectKey.ValueBool(),
	}, err
}

// --- tls_cert_request -----------------------------------------------------------

type certRequestResource struct{ generated }

type certRequestModel struct {
	ID             types.String   `tfsdk:"id"`
	PrivateKeyPEM  types.String   `tfsdk:"private_key_pem"`
	DNSNames       types.List     `tfsdk:"dns_names"`
	IPAddresses    types.List     `tfsdk:"ip_addresses"`
	URIs           types.List     `tfsdk:"uris"`
	Subject        []subjectModel `tfsdk:"subject"`
	CertRequestPEM types.String   `tfsdk:"cert_request_pem"`
	KeyAlgorithm   types.String   `tfsdk:"key_algorithm"`
}

func newCertRequest() resource.Resource { return certRequestResource{} }

func (certRequestResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cert_request"
}

func (certRequestResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A PKCS#10 certificate request.",
		Attributes: map[string]schema.Attribute{
			"id":               computedString(false),
			"private_key_pem":  schema.StringAttribute{Required: true, Sensitive: true, PlanModifiers: replaceString},
			"dns_names":        stringList(false),
			"ip_addresses":     stringList(false),
			"uris":             stringList(false),
			"cert_request_pem": computedString(false),
			"key_algorithm":    computedString(false),
		},
		Blocks: map[string]schema.Block{"subject": subjectBlock()},
	}
}

func (certRequestResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m certRequestModel
	if resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...); resp.Diagnostics.HasError() {
		return
	}
	subj, err := subjectOf(ctx, m.Subject)
	if err != nil {
		resp.Diagnostics.AddError("Reading the subject", err.Error())
		return
	}
	alt, err := namesOf(ctx, m.DNSNames, m.IPAddresses, m.URIs)
	if err != nil {
		resp.Diagnostics.AddError("Reading the names", err.Error())
		return
	}
	csr, algorithm, err := certRequest(m.PrivateKeyPEM.ValueString(), subj, alt)
	if err != nil {
		resp.Diagnostics.AddError("Creating the certificate request", err.Error())
		return
	}
	m.CertRequestPEM = types.StringValue(csr)
	m.KeyAlgorithm = types.StringValue(algorithm)
	m.ID = types.StringValue(hashID(csr))
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// --- tls_self_signed_cert -------------------------------------------------------

type selfSignedCert struct{ generated }

type selfSignedCertModel struct {
	ID                  types.String   `tfsdk:"id"`
	PrivateKeyPEM       types.String   `tfsdk:"private_key_pem"`
	DNSNames            types.List     `tfsdk:"dns_names"`
	IPAddresses         types.List     `tfsdk:"ip_addresses"`
	URIs                types.List     `tfsdk:"uris"`
	Subject             []subjectModel `tfsdk:"subject"`
	ValidityPeriodHours types.Int64    `tfsdk:"validity_period_hours"`
	EarlyRenewalHours   types.Int64    `tfsdk:"early_renewal_hours"`
	AllowedUses         types.List     `tfsdk:"allowed_uses"`
	IsCACertificate     types.Bool     `tfsdk:"is_ca_certificate"`
	SetSubjectKeyID     types.Bool     `tfsdk:"set_subject_key_id"`
	CertPEM             types.String   `tfsdk:"cert_pem"`
	ValidityStartTime   types.String   `tfsdk:"validity_start_time"`
	ValidityEndTime     types.String   `tfsdk:"validity_end_time"`
	ReadyForRenewal     types.Bool     `tfsdk:"ready_for_renewal"`
	KeyAlgorithm        types.String   `tfsdk:"key_algorithm"`
}

func newSelfSignedCert() resource.Resource { return selfSignedCert{} }

func (selfSignedCert) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_self_signed_cert"
}

func (selfSignedCert) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A certificate signed by its own key.",
		Attributes: certAttributes(map[string]schema.Attribute{
			"private_key_pem": schema.StringAttribute{Required: true, Sensitive: true, PlanModifiers: replaceString},
			"dns_names":       stringList(false),
			"ip_addresses":    stringList(false),
			"uris":            stringList(false),
			"key_algorithm":   computedString(false),
		}),
		Blocks: map[string]schema.Block{"subject": subjectBlock()},
	}
}

func (selfSignedCert) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m selfSignedCertModel
	if resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...); resp.Diagnostics.HasError() {
		return
	}
	subj, err := subjectOf(ctx, m.Subject)
	if err != nil {
		resp.Diagnostics.AddError("Reading the subject", err.Error())
		return
	}
	alt, err := namesOf(ctx, m.DNSNames, m.IPAddresses, m.URIs)
	if err != nil {
		resp.Diagnostics.AddError("Reading the names", err.Error())
		return
	}
	o, err := certOptionsOf(ctx, m.ValidityPeriodHours, m.AllowedUses, m.IsCACertificate, m.SetSubjectKeyID)
	if err != nil {
		resp.Diagnostics.AddError("Reading the certificate's options", err.Error())
		return
	}
	c, algorithm, err := selfSigned(m.PrivateKeyPEM.ValueString(), subj, alt, o, time.Now())
	if err != nil {
		resp.Diagnostics.AddError("Creating the certificate", err.Error())
		return
	}
	m.ID, m.CertPEM = types.StringValue(c.Serial), types.StringValue(c.PEM)
	m.ValidityStartTime, m.ValidityEndTime = types.StringValue(c.Start), types.StringValue(c.End)
	m.ReadyForRenewal = types.BoolValue(false)
	m.KeyAlgorithm = types.StringValue(algorithm)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// --- tls_locally_signed_cert ----------------------------------------------------

type locallySignedCert struct{ generated }

type locallySignedCertModel struct {
	ID                  types.String `tfsdk:"id"`
	CertRequestPEM      types.String `tfsdk:"cert_request_pem"`
	CAPrivateKeyPEM     types.String `tfsdk:"ca_private_key_pem"`
	CACertPEM           types.String `tfsdk:"ca_cert_pem"`
	ValidityPeriodHours types.Int64  `tfsdk:"validity_period_hours"`
	EarlyRenewalHours   types.Int64  `tfsdk:"early_renewal_hours"`
	AllowedUses         types.List   `tfsdk:"allowed_uses"`
	IsCACertificate     types.Bool   `tfsdk:"is_ca_certificate"`
	SetSubjectKeyID     types.Bool   `tfsdk:"set_subject_key_id"`
	CertPEM             types.String `tfsdk:"cert_pem"`
	ValidityStartTime   types.String `tfsdk:"validity_start_time"`
	ValidityEndTime     types.String `tfsdk:"validity_end_time"`
	ReadyForRenewal     types.Bool   `tfsdk:"ready_for_renewal"`
	CAKeyAlgorithm      types.String `tfsdk:"ca_key_algorithm"`
}

func newLocallySignedCert() resource.Resource { return locallySignedCert{} }

func (locallySignedCert) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_locally_signed_cert"
}

func (locallySignedCert) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A certificate for a request, signed by a CA given as PEM.",
		Attributes: certAttributes(map[string]schema.Attribute{
			"cert_request_pem":   schema.StringAttribute{Required: true, PlanModifiers: replaceString},
			"ca_private_key_pem": schema.StringAttribute{Required: true, Sensitive: true, PlanModifiers: replaceString},
			"ca_cert_pem":        schema.StringAttribute{Required: true, PlanModifiers: replaceString},
			"ca_key_algorithm":   computedString(false),
		}),
	}
}

func (locallySignedCert) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m locallySignedCertModel
	if resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...); resp.Diagnostics.HasError() {
		return
	}
	o, err := certOptionsOf(ctx, m.ValidityPeriodHours, m.AllowedUses, m.IsCACertificate, m.SetSubjectKeyID)
	if err != nil {
		resp.Diagnostics.AddError("Reading the certificate's options", err.Error())
		return
	}
	c, algorithm, err := locallySigned(m.CertRequestPEM.ValueString(), m.CAPrivateKeyPEM.ValueString(), m.CACertPEM.ValueString(), o, time.Now())
	if err != nil {
		resp.Diagnostics.AddError("Signing the certificate", err.Error())
		return
	}
	m.ID, m.CertPEM = types.StringValue(c.Serial), types.StringValue(c.PEM)
	m.ValidityStartTime, m.ValidityEndTime = types.StringValue(c.Start), types.StringValue(c.End)
	m.ReadyForRenewal = types.BoolValue(false)
	m.CAKeyAlgorithm = types.StringValue(algorithm)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

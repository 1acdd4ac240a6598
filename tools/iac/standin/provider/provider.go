// Package provider holds the stand-in random and tls providers: the resource
// types terraform/aws uses, with the real providers' names and semantics
// (every argument forces a new resource; values are generated once, at
// create, and kept in the state), so that a second plan shows no changes.
package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
)

// The two providers this package can be.
const (
	Random = "random"
	TLS    = "tls"
)

// Versions are those the stand-ins are laid out under: within the version
// constraints of terraform/aws, and above any real release, so a lock file
// written against them cannot be mistaken for one of the real providers.
var Versions = map[string]string{
	Random: "3.99.0",
	TLS:    "4.99.0",
}

type standin struct {
	name string
}

var _ provider.Provider = (*standin)(nil)

// New returns the provider called name (Random or TLS).
func New(name string) func() provider.Provider {
	return func() provider.Provider { return &standin{name: name} }
}

func (p *standin) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = p.name
	resp.Version = Versions[p.name]
}

// Schema: neither provider takes configuration.
func (p *standin) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{}
}

func (p *standin) Configure(context.Context, provider.ConfigureRequest, *provider.ConfigureResponse) {
}

func (p *standin) Resources(context.Context) []func() resource.Resource {
	if p.name == TLS {
		return []func() resource.Resource{
			newPrivateKey, newCertRequest, newSelfSignedCert, newLocallySignedCert,
		}
	}
	return []func() resource.Resource{newRandomBytes, newRandomUUID, newRandomPassword}
}

func (p *standin) DataSources(context.Context) []func() datasource.DataSource { return nil }

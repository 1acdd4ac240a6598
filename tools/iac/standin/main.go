// Command terraform-provider-standin serves, under the names hashicorp/random
// and hashicorp/tls, the resources of those two providers that terraform/aws
// uses, with real randomness and real keys and certificates.
//
// It exists because neither provider can be had where the project's checks
// run (only the provider registry serves their builds, and their sources are
// not served by the Go module proxy), while the AWS provider can. It is a
// stand-in, not a copy: the schemas hold the arguments terraform/aws sets and
// the attributes it reads, under the real providers' names, and nothing
// else. tools/iac/check.sh lays it out in a temporary provider mirror, with a
// version no real release has (random 3.99.0, tls 4.99.0), for the runs that
// apply terraform/aws against the AWS API emulator; an operator's deployment
// always gets the real providers from the registry.
//
// Which provider it is comes from its file name, as the mirror lays it out:
// terraform-provider-tls_v4.99.0 serves tls, terraform-provider-random_v3.99.0
// random.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/slm-mesh/slm-mesh/tools/iac/standin/provider"
)

func main() {
	debug := flag.Bool("debug", false, "serve for a debugger (prints TF_REATTACH_PROVIDERS)")
	flag.Parse()

	name := provider.Random
	if strings.HasPrefix(filepath.Base(os.Args[0]), "terraform-provider-tls") {
		name = provider.TLS
	}
	err := providerserver.Serve(context.Background(), provider.New(name), providerserver.ServeOpts{
		Address: "registry.terraform.io/hashicorp/" + name,
		Debug:   *debug,
	})
	if err != nil {
		log.Fatal(err)
	}
}

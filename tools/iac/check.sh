#!/bin/sh
# Offline checks of terraform/, for developers and CI:
#   1. tofu fmt -check over terraform/;
#   2. tofu init/validate/test of the provider-free module terraform/modules/plan
#      (address plan, security group rules, the load balancer's listeners,
#      where each secret goes, the rendered cloud-init with its IMDS guard);
#   3. tfsec over terraform/aws, where any finding that is not ignored with a
#      reasoned #tfsec:ignore:<rule> comment fails;
#   4. tofu init/validate/test of the AWS root module terraform/aws against a
#      mocked AWS provider (terraform/aws/tests), with its defaults and with
#      terraform.tfvars.example. Only when SLM_TF_PLUGIN_MIRROR names a
#      provider mirror holding hashicorp/aws, random and tls: OpenTofu needs
#      the providers' schemas, and only the provider registry serves them, so
#      without a mirror this step says SKIPPED.
#
# OpenTofu and tfsec are built from the Go module proxy (tools/iac/tofu and
# tools/iac/tfsec pin them) into .cache/bin, and rebuilt only when missing or
# older than their go.sum. FORCE=1 rebuilds anyway; IAC_BIN=dir builds there.
#
#   tools/iac/check.sh
#   SLM_TF_PLUGIN_MIRROR=/path/to/mirror tools/iac/check.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${IAC_BIN:-"$root/.cache/bin"}
case $bin in
/*) ;;
*) bin="$(pwd)/$bin" ;;
esac

# build NAME PACKAGE LDFLAGS: go build PACKAGE of the module tools/iac/NAME.
build() {
	name=$1 pkg=$2 ldflags=$3
	out="$bin/$name"
	if [ -z "${FORCE:-}" ] && [ -x "$out" ] && [ "$out" -nt "$here/$name/go.sum" ]; then
		return 0
	fi
	mkdir -p "$bin"
	echo "iac: building $out (several minutes on a cold build cache)"
	start=$(date +%s)
	# Static, reproducible; written under a temporary name so an interrupted
	# build never leaves a binary that looks up to date.
	(cd "$here/$name" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$out.part" "$pkg")
	mv "$out.part" "$out"
	echo "iac: built $name in $(($(date +%s) - start))s"
}

build tofu github.com/opentofu/opentofu/cmd/tofu \
	"-s -w -X github.com/opentofu/opentofu/version.dev=no"
build tfsec github.com/aquasecurity/tfsec/cmd/tfsec \
	"-s -w -X github.com/aquasecurity/tfsec/version.Version=v1.26.0"

tofu="$bin/tofu"
tfsec="$bin/tfsec"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# An empty CLI configuration: no provider mirrors, credentials or plugin
# cache from the machine (whatever TF_CLI_CONFIG_FILE pointed at) can change
# the result. TF_DATA_DIR keeps .terraform out of the checkout.
: >"$tmp/tofurc"
export TF_CLI_CONFIG_FILE="$tmp/tofurc"
export TF_DATA_DIR="$tmp/data"
export TF_IN_AUTOMATION=1
unset TF_PLUGIN_CACHE_DIR TF_CLI_ARGS TF_CLI_ARGS_init TF_CLI_ARGS_test TF_WORKSPACE

"$tofu" version | head -n 1
"$tfsec" --version

failed=0
step() {
	echo
	echo "== $1"
}
result() {
	if [ "$1" -eq 0 ]; then
		echo "ok: $2"
	else
		echo "FAIL: $2"
		failed=$((failed + 1))
	fi
}

step "tofu fmt -check -recursive terraform/"
rc=0
(cd "$root" && "$tofu" fmt -check -recursive -diff terraform/) || rc=$?
result $rc "formatting"

step "tofu init + validate + test: terraform/modules/plan"
rc=0
(
	cd "$root/terraform/modules/plan"
	"$tofu" init -backend=false -input=false -no-color >/dev/null
	"$tofu" validate -no-color
	"$tofu" test -no-color
) || rc=$?
result $rc "plan module"

step "tfsec terraform/aws"
rc=0
# The AWS module reads ../modules/plan, so tfsec sees the rule list as the
# resources will get it. Nothing is downloaded (local modules only).
"$tfsec" "$root/terraform/aws" --no-color --exclude-downloaded-modules --concise-output || rc=$?
result $rc "tfsec (unignored findings fail)"

step "tofu init + validate + test: terraform/aws (mocked AWS provider)"
mirror=${SLM_TF_PLUGIN_MIRROR:-}
if [ -z "$mirror" ]; then
	echo "SKIPPED: no AWS provider here. Set SLM_TF_PLUGIN_MIRROR to a directory laid out"
	echo "as a provider mirror (<host>/hashicorp/{aws,random,tls}/<version>/<os>_<arch>/)"
	echo "to validate and test terraform/aws (docs/terraform.md)."
else
	rc=0
	for p in aws random tls; do
		if ! ls -d "$mirror"/*/hashicorp/"$p"/* >/dev/null 2>&1; then
			echo "SLM_TF_PLUGIN_MIRROR=$mirror holds no hashicorp/$p"
			rc=1
		fi
	done
	if [ "$rc" -eq 0 ]; then
		# A copy, so that the lock file tofu init writes does not land in the
		# checkout, and an operator's terraform.tfvars, lock file or
		# .terraform there does not change the result.
		mkdir "$tmp/src"
		cp -R "$root/terraform" "$root/nomad" "$root/consul" "$tmp/src/"
		rm -rf "$tmp/src/terraform/aws/.terraform" "$tmp/src/terraform/aws/.terraform.lock.hcl" \
			"$tmp/src/terraform/aws/terraform.tfvars" "$tmp/src/terraform/aws/"*.auto.tfvars
		cat >"$tmp/tofurc-aws" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.opentofu.org/hashicorp/*", "registry.terraform.io/hashicorp/*"]
  }
  direct {
    exclude = ["registry.opentofu.org/hashicorp/*", "registry.terraform.io/hashicorp/*"]
  }
}
EOF
		(
			cd "$tmp/src/terraform/aws"
			export TF_CLI_CONFIG_FILE="$tmp/tofurc-aws" TF_DATA_DIR="$tmp/data-aws"
			"$tofu" init -backend=false -input=false -no-color >/dev/null
			"$tofu" version -no-color | sed -n '/provider/p'
			"$tofu" validate -no-color
			"$tofu" test -no-color
			echo "-- again with terraform.tfvars.example"
			"$tofu" test -no-color -var-file=terraform.tfvars.example
		) || rc=$?
	fi
	result $rc "terraform/aws with a mocked AWS provider"
fi

echo
if [ "$failed" -ne 0 ]; then
	echo "iac: $failed check(s) failed"
	exit 1
fi
echo "iac: all checks passed"

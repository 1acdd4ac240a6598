#!/bin/sh
# Offline checks of terraform/, for developers and CI:
#   1. tofu fmt -check over terraform/;
#   2. tofu init/validate/test of the provider-free module terraform/modules/plan
#      (address plan, security group rules, the load balancer's listeners,
#      where each secret goes, the rendered cloud-init with its IMDS guard),
#      then the rendered boot (internal/nodeboot) and the client nodes' drain
#      script against a real Nomad agent (tools/iac/drain);
#   3. tfsec over terraform/aws, where any finding that is not ignored with a
#      reasoned #tfsec:ignore:<rule> comment fails;
#   4. tofu init/validate/test of the AWS root module terraform/aws against a
#      mocked AWS provider (terraform/aws/tests), with its defaults and with
#      terraform.tfvars.example;
#   5. terraform/aws applied with the real AWS provider against moto_server,
#      an AWS API emulator started on a free loopback port: outputs checked
#      against what the emulator holds, a second plan that must change
#      nothing, destroy, and nothing of the module left (tools/iac/emulator.sh).
# Steps 4 and 5 need the hashicorp/aws provider: SLM_TF_PLUGIN_MIRROR names a
# provider mirror holding it, else the first one found on this machine; the
# random and tls providers, which cannot be had here, are stand-ins built from
# tools/iac/standin. Step 5 also needs moto_server; it runs Terraform when
# it is on the PATH, else the OpenTofu built here (IAC_TF=path chooses). A
# step that cannot run says SKIPPED and why.
#
# OpenTofu, tfsec and the stand-in providers are built from the Go module
# proxy (tools/iac/tofu, tools/iac/tfsec and tools/iac/standin pin them) into
# .cache/bin, and rebuilt only when missing or older than a file of their
# module. FORCE=1 rebuilds anyway; IAC_BIN=dir builds there.
#
#   tools/iac/check.sh
#   SLM_TF_PLUGIN_MIRROR=/path/to/mirror tools/iac/check.sh
set -eu

started=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${IAC_BIN:-"$root/.cache/bin"}
case $bin in
/*) ;;
*) bin="$(pwd)/$bin" ;;
esac

# build NAME PACKAGE LDFLAGS: go build PACKAGE of the module tools/iac/NAME,
# unless the binary is newer than every file of that module.
build() {
	name=$1 pkg=$2 ldflags=$3
	out="$bin/$name"
	if [ -z "${FORCE:-}" ] && [ -x "$out" ] && [ -z "$(find "$here/$name" -type f -newer "$out" | head -n 1)" ]; then
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
build standin . "-s -w"

tofu="$bin/tofu"
tfsec="$bin/tfsec"
standin="$bin/standin"

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
	step_started=$(date +%s)
}
result() {
	if [ "$1" -eq 0 ]; then
		echo "ok: $2 ($(($(date +%s) - step_started))s)"
	else
		echo "FAIL: $2 ($(($(date +%s) - step_started))s)"
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

# --- rendered node boot (internal/nodeboot) --------------------------------
# The files the plan module renders, booted as far as this machine allows:
# systemd-analyze verify on every unit, install.sh's start of the units with
# a systemctl under which Consul never gets ready, a server's data volume
# found by its id among loop devices (as root), the agents' own checks of
# their configurations. A test that cannot run here says SKIPPED and why.
step "go test ./internal/nodeboot: the rendered boot"
rc=0
(cd "$root" && SLM_TOFU="$tofu" go test -count=1 -v ./internal/nodeboot/ >"$tmp/nodeboot.log" 2>&1) || rc=$?
grep -E -e '^(--- |ok|FAIL)' -e '^ +--- ' -e 'SKIPPED' "$tmp/nodeboot.log" || true
[ "$rc" -eq 0 ] || cat "$tmp/nodeboot.log"
result $rc "rendered node boot"
# --- end of rendered node boot ----------------------------------------------

# drain.sh as slm-drain.service runs it on a client node, against a real
# Nomad agent (the project's build) with ACLs and mutual TLS; stand-ins for
# AWS only (the metadata service, the aws CLI). Without a nomad binary it
# says SKIPPED.
step "go test ./tools/iac/drain: the client nodes' drain"
rc=0
(cd "$root" && go test -count=1 -v ./tools/iac/drain/ >"$tmp/drain.log" 2>&1) || rc=$?
grep -E -e '^(--- |ok|FAIL)' -e '^ +--- ' -e 'SKIPPED' "$tmp/drain.log" || true
[ "$rc" -eq 0 ] || cat "$tmp/drain.log"
result $rc "client nodes' drain"

step "tfsec terraform/aws"
rc=0
# The AWS module reads ../modules/plan, so tfsec sees the rule list as the
# resources will get it. Nothing is downloaded (local modules only).
"$tfsec" "$root/terraform/aws" --no-color --exclude-downloaded-modules --concise-output || rc=$?
result $rc "tfsec (unignored findings fail)"

# skipped REASON: says a step did not run, and so again under CI.
skipped() {
	echo "SKIPPED: $1"
	if [ -n "${CI:-}" ]; then
		echo "SKIPPED under CI: this run did NOT check what the step above names."
	fi
}

step "stand-in random and tls providers (tools/iac/standin): go vet + go test"
rc=0
(cd "$here/standin" && go vet ./... && go test -count=1 ./...) || rc=$?
result $rc "stand-in providers"

step "providers for terraform/aws"
# The machine's AWS provider and the stand-ins, laid out as one mirror.
mirror="$tmp/mirror"
mirror_rc=0
sh "$here/emulator.sh" mirror "$mirror" "$standin" || mirror_rc=$?
if [ "$mirror_rc" -eq 1 ] || [ "$mirror_rc" -eq 2 ]; then
	result 1 "provider mirror"
fi

step "tofu init + validate + test: terraform/aws (mocked AWS provider)"
if [ "$mirror_rc" -ne 0 ]; then
	skipped "no provider mirror for terraform/aws (above)."
else
	rc=0
	# A copy, so that the lock file tofu init writes does not land in the
	# checkout, and an operator's terraform.tfvars, lock file, override files
	# or .terraform there does not change the result.
	mkdir "$tmp/src"
	cp -R "$root/terraform" "$root/nomad" "$root/consul" "$tmp/src/"
	rm -rf "$tmp/src/terraform/aws/.terraform" "$tmp/src/terraform/aws/.terraform.lock.hcl" \
		"$tmp/src/terraform/aws/terraform.tfvars" "$tmp/src/terraform/aws/"*.auto.tfvars \
		"$tmp/src/terraform/aws/"*override.tf "$tmp/src/terraform/aws/"*override.tf.json
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
	result $rc "terraform/aws with a mocked AWS provider"
fi

step "apply, plan again, destroy: terraform/aws against the AWS API emulator (real AWS provider)"
if [ "$mirror_rc" -ne 0 ]; then
	skipped "no provider mirror for terraform/aws (above)."
else
	tf=${IAC_TF:-$(command -v terraform || true)}
	if [ -z "$tf" ]; then
		echo "terraform is not on the PATH: OpenTofu built here instead"
		tf=$tofu
	fi
	"$tf" version | head -n 1
	rc=0
	sh "$here/emulator.sh" apply "$tf" "$mirror" "$tmp/emulator" || rc=$?
	if [ "$rc" -ne 3 ]; then
		result $rc "terraform/aws applied, unchanged on a second plan and destroyed against the emulator"
	fi
fi

echo
if [ "$failed" -ne 0 ]; then
	echo "iac: $failed check(s) failed ($(($(date +%s) - started))s)"
	exit 1
fi
echo "iac: all checks passed in $(($(date +%s) - started))s"

#!/bin/sh
# terraform/aws against an AWS API emulator, for tools/iac/check.sh:
#
#   emulator.sh mirror DIR STANDIN
#     Lays out in DIR a provider mirror for terraform/aws: hashicorp/aws from
#     the AWS provider mirror of this machine (SLM_TF_PLUGIN_MIRROR, else the
#     first one found on the file system), linked, not copied; hashicorp/random
#     and hashicorp/tls as the stand-in binary STANDIN (tools/iac/standin: the
#     real ones cannot be had here). Under both registry hosts, so Terraform
#     and OpenTofu find them. Prints the AWS provider it found.
#
#   emulator.sh apply TF MIRROR WORKDIR
#     Applies a copy of terraform/aws with TF (terraform or tofu) against
#     moto_server, started here on a free loopback port and stopped at exit,
#     with the real AWS provider from MIRROR pointed at it and
#     terraform.tfvars.example's values; checks the outputs against what the
#     emulator holds; plans again and fails on any change; destroys; lists
#     what the emulator still holds and fails on anything of the module.
#
# Exit status: 0 passed, 1 failed, 3 skipped (the reason is printed, starting
# with SKIPPED).
#
# The module itself is not changed for the emulator. The copy gets two files:
#   emulator_override.tf  the AWS provider's endpoints (all on the emulator),
#                         fake credentials, no credential or metadata checks,
#                         path-style S3, few retries (an emulator error is
#                         final); and, for aws_instance.node only, two more
#                         attributes in ignore_changes, because moto 5.2
#                         reports them wrongly for instances launched with
#                         a network interface specification (as the provider
#                         launches them): an empty <association/> on every
#                         interface, which the provider reads as a public
#                         address, and no instance-level security groups.
#                         Both would make every re-plan replace or update
#                         every node. emulator.py checks the same two facts
#                         in the emulator instead (no public address; each
#                         node's interface carries its role's groups).
#   emulator_checks.tf    an output with each node's security group ids, as
#                         compute.tf computes them, for that check.
# And moto_server gets MOTO_IAM_LOAD_MANAGED_POLICIES (the module attaches
# no AWS-managed policy, but should one be attached, emulator.py's check of
# the roles' effective permissions reads AWS's own document of it, which
# moto only knows when asked to load them) and MOTO_AMIS_PATH, a list of one Ubuntu 24.04 AMI
# owned by Canonical's account, so the module's own AMI lookup finds one.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

skip() {
	echo "SKIPPED: $*"
	if [ -n "${CI:-}" ]; then
		echo "SKIPPED under CI: terraform/aws was NOT applied against the AWS API emulator in this run."
	fi
	exit 3
}

# find_aws_mirror: the root of a provider mirror holding hashicorp/aws
# (unpacked layout: <root>/<host>/hashicorp/aws/<version>/<os>_<arch>/).
find_aws_mirror() {
	if [ -n "${SLM_TF_PLUGIN_MIRROR:-}" ]; then
		f=$(ls -d "$SLM_TF_PLUGIN_MIRROR"/*/hashicorp/aws/*/linux_amd64/terraform-provider-aws_* 2>/dev/null | sort -V | tail -n 1)
		[ -n "$f" ] || skip "SLM_TF_PLUGIN_MIRROR=$SLM_TF_PLUGIN_MIRROR holds no hashicorp/aws for linux_amd64 (unpacked layout <host>/hashicorp/aws/<version>/linux_amd64/)."
	else
		# Terraform's own plugin directories first, then the file system
		# (bounded depth, without the kernel's trees, temporary files and Go's
		# caches).
		for d in "$HOME/.terraform.d/plugins" "$HOME/.local/share/terraform/plugins" /usr/local/share/terraform/plugins /usr/share/terraform/plugins; do
			f=$(ls -d "$d"/*/hashicorp/aws/*/linux_amd64/terraform-provider-aws_* 2>/dev/null | sort -V | tail -n 1)
			[ -z "$f" ] || break
		done
		if [ -z "$f" ]; then
			gomod=$(go env GOMODCACHE 2>/dev/null || true)
			gocache=$(go env GOCACHE 2>/dev/null || true)
			f=$(find / -maxdepth 9 \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path "${TMPDIR:-/tmp}" \
				-o -path "${gomod:-/nonexistent}" -o -path "${gocache:-/nonexistent}" -o -path "$root/.cache" \) -prune \
				-o -path '*/hashicorp/aws/*/linux_amd64/terraform-provider-aws_*' -print 2>/dev/null | sort -V | tail -n 1)
		fi
		[ -n "$f" ] || skip "no hashicorp/aws provider on this machine (set SLM_TF_PLUGIN_MIRROR to a provider mirror holding it)."
	fi
	echo "$f"
}

mirror() {
	dir=$1 standin=$2
	if ! aws=$(find_aws_mirror); then
		echo "$aws"
		exit 3
	fi
	arch_dir=$(dirname "$aws")
	version=$(basename "$(dirname "$arch_dir")")
	for host in registry.terraform.io registry.opentofu.org; do
		mkdir -p "$dir/$host/hashicorp/aws/$version/linux_amd64"
		for f in "$arch_dir"/*; do
			ln -sf "$f" "$dir/$host/hashicorp/aws/$version/linux_amd64/"
		done
		for p in random:3.99.0 tls:4.99.0; do
			name=${p%%:*} v=${p#*:}
			mkdir -p "$dir/$host/hashicorp/$name/$v/linux_amd64"
			ln -f "$standin" "$dir/$host/hashicorp/$name/$v/linux_amd64/terraform-provider-${name}_v$v" 2>/dev/null ||
				cp "$standin" "$dir/$host/hashicorp/$name/$v/linux_amd64/terraform-provider-${name}_v$v"
		done
	done
	echo "hashicorp/aws $version: $aws"
	echo "hashicorp/random 3.99.0, hashicorp/tls 4.99.0: the stand-in (tools/iac/standin)"
}

# elapsed START: seconds since START (date +%s).
elapsed() { echo "$(($(date +%s) - $1))s"; }

apply() {
	tf=$1 mirror=$2 work=$3
	command -v moto_server >/dev/null 2>&1 || skip "moto_server is not on the PATH (pip install 'moto[server]')."
	python3 -c 'import boto3' 2>/dev/null || skip "python3 cannot import boto3 (it comes with moto)."
	py="python3 -B $here/emulator.py"

	mkdir -p "$work"
	# The AMI the module's data source looks for (name pattern, owner,
	# architecture, root device type, virtualization).
	cat >"$work/amis.json" <<'EOF'
[{"ami_id": "ami-0a7a4e87939439934", "state": "available", "public": true,
  "owner_id": "099720109477", "image_location": "amazon/ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250101",
  "sriov": "simple", "root_device_type": "ebs", "root_device_name": "/dev/sda1",
  "description": "Canonical, Ubuntu, 24.04, amd64 noble image", "image_type": "machine", "platform": null,
  "architecture": "x86_64", "name": "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250101",
  "virtualization_type": "hvm", "hypervisor": "xen"}]
EOF
	port=$($py free-port)
	endpoint="http://127.0.0.1:$port"
	MOTO_IAM_LOAD_MANAGED_POLICIES=true MOTO_AMIS_PATH="$work/amis.json" \
		moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
	moto_pid=$!
	trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT INT TERM
	if ! $py wait "$endpoint/moto-api/" 60; then
		cat "$work/moto.log"
		echo "FAIL: moto_server did not start"
		return 1
	fi
	echo "moto_server $(python3 -c 'import moto; print(moto.__version__)') on $endpoint (pid $moto_pid)"

	# A copy: the state, lock file and .terraform stay out of the checkout,
	# and an operator's terraform.tfvars or override files there play no part.
	mkdir "$work/src"
	cp -R "$root/terraform" "$root/nomad" "$root/consul" "$work/src/"
	mod="$work/src/terraform/aws"
	rm -rf "$mod/.terraform" "$mod/.terraform.lock.hcl" "$mod/terraform.tfstate" "$mod/terraform.tfstate.backup" \
		"$mod/terraform.tfvars" "$mod/"*.auto.tfvars "$mod/"*override.tf "$mod/"*override.tf.json

	# compute.tf's own ignore_changes of aws_instance.node, which the
	# override's list replaces (an override merges lifecycle by argument).
	ignored=$(awk '/^resource "aws_instance" "node"/ { b = 1 }
		b && /ignore_changes *=/ { sub(/.*ignore_changes *= *\[/, ""); sub(/\].*/, ""); print; exit }
		b && /^}/ { b = 0 }' "$mod/compute.tf")
	if [ -z "$ignored" ]; then
		echo "FAIL: no one-line ignore_changes = [...] in aws_instance.node (compute.tf); emulator.sh extends that list"
		return 1
	fi
	{
		echo '# Written by tools/iac/emulator.sh into a copy of the module; see there.'
		echo 'provider "aws" {'
		echo '  access_key                  = "emulator"'
		echo '  secret_key                  = "emulator"'
		echo '  skip_credentials_validation = true'
		echo '  skip_metadata_api_check     = true'
		echo '  skip_region_validation      = true'
		echo '  s3_use_path_style           = true'
		echo '  max_retries                 = 2'
		echo '  endpoints {'
		for s in acm autoscaling cloudwatch ec2 elbv2 iam kms logs route53 s3 sns ssm sts; do
			echo "    $s = \"$endpoint\""
		done
		echo '  }'
		echo '}'
		echo
		echo 'resource "aws_instance" "node" {'
		echo '  lifecycle {'
		echo "    ignore_changes = [$ignored, associate_public_ip_address, vpc_security_group_ids]"
		echo '  }'
		echo '}'
		echo
		echo '# moto 5.2 reports the template'"'"'s own tags (resource type launch-template)'
		echo '# as a tag specification of its launch data, and made-up targets of a'
		echo '# lifecycle hook that has none (emulator.py checks the instances'"'"' tags and'
		echo '# the hooks instead).'
		echo 'resource "aws_launch_template" "client" {'
		echo '  lifecycle {'
		echo '    ignore_changes = [tag_specifications]'
		echo '  }'
		echo '}'
		echo
		echo 'resource "aws_autoscaling_lifecycle_hook" "drain" {'
		echo '  lifecycle {'
		echo '    ignore_changes = [notification_target_arn, role_arn]'
		echo '  }'
		echo '}'
	} >"$mod/emulator_override.tf"
	cat >"$mod/emulator_checks.tf" <<'EOF'
# Written by tools/iac/emulator.sh into a copy of the module; see there.
# By instance name without the cluster's prefix: server-0, ... and each
# client role (every instance of a group has its role's name).
output "emulator_security_groups" {
  value = { for k, n in merge(local.nodes, local.client_roles) : k => [for sg in n.security_group : aws_security_group.this[sg].id] }
}

output "emulator_node_count" {
  value = length(local.nodes) + sum([for r in local.client_roles : r.count])
}
EOF

	cat >"$work/tfrc" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/*", "registry.opentofu.org/hashicorp/*"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/*", "registry.opentofu.org/hashicorp/*"]
  }
}
EOF
	export TF_CLI_CONFIG_FILE="$work/tfrc" TF_DATA_DIR="$work/data" TF_IN_AUTOMATION=1
	# Nothing of an operator's AWS setup may reach the provider.
	export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
	unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_DEFAULT_REGION AWS_REGION

	vars="-var-file=terraform.tfvars.example"
	cd "$mod"
	failed=0

	t=$(date +%s)
	"$tf" init -input=false -no-color >"$work/init.log" 2>&1 || { cat "$work/init.log"; echo "FAIL: init"; return 1; }
	sed -n 's/^- Installed \(.*\)/  provider \1/p' "$work/init.log"
	echo "init: $(elapsed "$t")"

	t=$(date +%s)
	if "$tf" apply -auto-approve -input=false -no-color $vars >"$work/apply.log" 2>&1; then
		grep '^Apply complete' "$work/apply.log" || true
		echo "apply: $(elapsed "$t")"

		"$tf" output -json >"$work/outputs.json"
		"$tf" show -json >"$work/state.json"
		$py outputs "$endpoint" eu-west-1 "$work/outputs.json" "$work/state.json" || failed=1

		t=$(date +%s)
		rc=0
		"$tf" plan -detailed-exitcode -input=false -no-color $vars -out="$work/replan" >"$work/replan.log" 2>&1 || rc=$?
		if [ "$rc" -eq 1 ]; then
			cat "$work/replan.log"
			echo "FAIL: the second plan"
			failed=1
		else
			"$tf" show -json "$work/replan" >"$work/replan.json"
			if ! $py plan-changes "$work/replan.json" || [ "$rc" -ne 0 ]; then
				sed -n '/will perform the following actions/,$p' "$work/replan.log"
				failed=1
			fi
		fi
		echo "second plan: $(elapsed "$t")"
	else
		sed -n '/^Error/,$p' "$work/apply.log"
		echo "FAIL: apply ($(elapsed "$t")); destroying what was created"
		failed=1
	fi

	t=$(date +%s)
	if "$tf" destroy -auto-approve -input=false -no-color $vars >"$work/destroy.log" 2>&1; then
		grep '^Destroy complete' "$work/destroy.log" || true
	else
		sed -n '/^Error/,$p' "$work/destroy.log"
		echo "FAIL: destroy"
		failed=1
	fi
	echo "destroy: $(elapsed "$t")"
	$py leftovers "$endpoint" eu-west-1 slm-mesh || failed=1
	return $failed
}

case ${1:-} in
mirror)
	[ $# -eq 3 ] || { echo "usage: $0 mirror DIR STANDIN" >&2; exit 2; }
	mirror "$2" "$3"
	;;
apply)
	[ $# -eq 4 ] || { echo "usage: $0 apply TF MIRROR WORKDIR" >&2; exit 2; }
	apply "$2" "$3" "$4"
	;;
*)
	echo "usage: $0 mirror DIR STANDIN | apply TF MIRROR WORKDIR" >&2
	exit 2
	;;
esac

# The decisions (address plan, firewall rules, load balancer listeners,
# where each secret goes, cloud-init) live in the provider-free module so
# that they are tested offline; this root module turns them into AWS
# resources.
module "plan" {
  source = "../modules/plan"

  cluster_name         = var.cluster_name
  region               = var.region
  vpc_cidr             = var.vpc_cidr
  public_subnet_cidrs  = var.public_subnet_cidrs
  private_subnet_cidrs = var.private_subnet_cidrs
  allowed_api_cidrs    = var.allowed_api_cidrs
  nomad_version        = var.nomad_version
  consul_version       = var.consul_version
  datacenter           = var.datacenter
  server_count         = var.server_count
  artifacts_bucket     = local.artifacts_bucket
  snapshot_schedule    = var.snapshot_schedule

  # Each server finds its Raft volume by this id (compute.tf).
  server_data_volume_ids = { for k, v in aws_ebs_volume.server_data : k => v.id }
  # The servers publish the clients' drain token with the secrets' key.
  ssm_kms_key_id = aws_kms_key.cluster.arn

  secrets = {
    consul_gossip_key = random_bytes.consul_gossip.base64
    nomad_gossip_key  = random_bytes.nomad_gossip.base64
    consul_management = random_uuid.consul_management.result
    consul_agent      = random_uuid.consul_agent.result
    consul_default    = random_uuid.consul_default.result
    consul_nomad      = random_uuid.consul_nomad.result
    nomad_management  = random_uuid.nomad_management.result
    caller_token      = random_password.rpc["caller"].result
    inference_token   = random_password.rpc["inference"].result
    api_keys          = random_password.api_key[*].result
    tls = {
      ca_cert            = tls_self_signed_cert.agent_ca.cert_pem
      nomad_server_cert  = tls_locally_signed_cert.agent["nomad_server"].cert_pem
      nomad_server_key   = tls_private_key.agent["nomad_server"].private_key_pem
      nomad_client_cert  = tls_locally_signed_cert.agent["nomad_client"].cert_pem
      nomad_client_key   = tls_private_key.agent["nomad_client"].private_key_pem
      consul_server_cert = tls_locally_signed_cert.agent["consul_server"].cert_pem
      consul_server_key  = tls_private_key.agent["consul_server"].private_key_pem
      consul_client_cert = tls_locally_signed_cert.agent["consul_client"].cert_pem
      consul_client_key  = tls_private_key.agent["consul_client"].private_key_pem
      rpc_ca_cert        = tls_self_signed_cert.rpc_ca.cert_pem
      rpc_caller_cert    = tls_locally_signed_cert.rpc["slm-caller"].cert_pem
      rpc_caller_key     = tls_private_key.rpc["slm-caller"].private_key_pem
      rpc_inference_cert = tls_locally_signed_cert.rpc["slm-inference"].cert_pem
      rpc_inference_key  = tls_private_key.rpc["slm-inference"].private_key_pem
    }
  }
}

# --- Secrets -----------------------------------------------------------------
# Chosen here so that the management tokens are known before the cluster
# exists and can be put in SSM (ssm.tf), where the nodes fetch them at boot.
# They are in the Terraform state: keep the state in an encrypted, access-
# controlled backend (see README).

resource "random_bytes" "consul_gossip" {
  length = 32
}

resource "random_bytes" "nomad_gossip" {
  length = 32
}

resource "random_uuid" "consul_management" {}

resource "random_uuid" "consul_agent" {}

resource "random_uuid" "consul_default" {}

resource "random_uuid" "consul_nomad" {}

resource "random_uuid" "nomad_management" {}

# One RPC token per hop: gateway to caller, caller to inference.
resource "random_password" "rpc" {
  for_each = toset(["caller", "inference"])
  length   = 48
  special  = false
}

# The keys clients present as `Authorization: Bearer <key>`.
resource "random_password" "api_key" {
  count = var.api_key_count

  length  = 40
  special = false
}

# --- Agent TLS ---------------------------------------------------------------------
# A private CA for the agents (never used for the public API) and one
# certificate per agent kind. Nomad checks the role and region in the name
# (server.<region>.nomad / client.<region>.nomad), Consul the server role
# and datacenter (server.<dc>.consul). localhost and 127.0.0.1 let the CLI
# and the UI reach the local agent through a Session Manager port forward.

resource "tls_private_key" "agent_ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "agent_ca" {
  private_key_pem       = tls_private_key.agent_ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = 5 * 365 * 24
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]

  subject {
    common_name  = "${var.cluster_name} agent CA"
    organization = "slm-mesh"
  }
}

locals {
  agent_certs = {
    nomad_server  = ["server.${local.nomad_region}.nomad", "nomad.service.consul"]
    nomad_client  = ["client.${local.nomad_region}.nomad"]
    consul_server = ["server.${var.datacenter}.consul"]
    consul_client = ["client.${var.datacenter}.consul"]
  }
  nomad_region = "global"
}

resource "tls_private_key" "agent" {
  for_each = local.agent_certs

  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "agent" {
  for_each = local.agent_certs

  private_key_pem = tls_private_key.agent[each.key].private_key_pem
  dns_names       = concat(each.value, ["localhost"])
  ip_addresses    = ["127.0.0.1"]

  subject {
    common_name = each.value[0]
  }
}

resource "tls_locally_signed_cert" "agent" {
  for_each = local.agent_certs

  cert_request_pem   = tls_cert_request.agent[each.key].cert_request_pem
  ca_private_key_pem = tls_private_key.agent_ca.private_key_pem
  ca_cert_pem        = tls_self_signed_cert.agent_ca.cert_pem

  # Renewed by an apply in the last 90 days (the nodes pick it up at their
  # next boot, or `systemctl restart slm-secrets consul nomad`).
  validity_period_hours = 2 * 365 * 24
  early_renewal_hours   = 90 * 24
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
}

# --- Image and zones ------------------------------------------------------------

data "aws_ami" "ubuntu" {
  count = var.ami_id == null ? 1 : 0

  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }

  filter {
    name   = "root-device-type"
    values = ["ebs"]
  }
}

# Newer types such as c7i-flex are not offered in every zone of a region.
# The zones are checked here, where they are first known, so that plan
# explains a shortage before anything is placed in a zone that is missing.
data "aws_ec2_instance_type_offerings" "chosen" {
  location_type = "availability-zone"

  filter {
    name   = "instance-type"
    values = local.instance_types
  }

  lifecycle {
    postcondition {
      condition     = var.availability_zones == null || length(coalesce(var.availability_zones, [])) == local.zone_count
      error_message = "availability_zones names ${length(coalesce(var.availability_zones, []))} zones for ${local.zone_count} subnets: give one zone per entry of public_subnet_cidrs and private_subnet_cidrs."
    }

    postcondition {
      condition = var.availability_zones != null || length([
        for az in distinct(self.locations) : az
        if length(distinct([for i, loc in self.locations : self.instance_types[i] if loc == az])) == length(local.instance_types)
      ]) >= local.zone_count
      error_message = "Fewer than ${local.zone_count} availability zones of ${var.region} offer every chosen instance type (${join(", ", local.instance_types)}), and ${local.zone_count} are needed, one per subnet (three by default, one for each server). Choose instance types that ${var.region} offers in ${local.zone_count} zones (server_instance_type, gateway_instance_type, caller_instance_type, inference_instance_type), another region, or availability_zones naming zones that offer them."
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.ubuntu[0].id

  instance_types = distinct([var.server_instance_type, var.gateway_instance_type, var.caller_instance_type, var.inference_instance_type])

  offerings = data.aws_ec2_instance_type_offerings.chosen
  zones_with_all_types = sort([
    for az in distinct(local.offerings.locations) : az
    if length(distinct([for i, loc in local.offerings.locations : local.offerings.instance_types[i] if loc == az])) == length(local.instance_types)
  ])
  zone_count         = length(var.public_subnet_cidrs)
  availability_zones = var.availability_zones != null ? var.availability_zones : slice(local.zones_with_all_types, 0, min(local.zone_count, length(local.zones_with_all_types)))

  name = var.cluster_name

  # Globally unique: the account id keeps two accounts' clusters apart.
  artifacts_bucket = "${var.cluster_name}-artifacts-${data.aws_caller_identity.current.account_id}"
}

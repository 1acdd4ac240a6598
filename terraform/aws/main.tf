# The decisions (address plan, firewall rules, cloud-init) live in the
# provider-free module so that they are tested offline; this root module turns
# them into AWS resources.
module "plan" {
  source = "../modules/plan"

  cluster_name        = var.cluster_name
  region              = var.region
  vpc_cidr            = var.vpc_cidr
  public_subnet_cidr  = var.public_subnet_cidr
  private_subnet_cidr = var.private_subnet_cidr
  allowed_api_cidrs   = var.allowed_api_cidrs
  allowed_ssh_cidrs   = var.allowed_ssh_cidrs
  allowed_admin_cidrs = var.allowed_admin_cidrs
  nomad_version       = var.nomad_version
  consul_version      = var.consul_version
  datacenter          = var.datacenter
  caller_count        = var.caller_count
  inference_count     = var.inference_count
  service_binaries    = var.service_binaries

  consul_gossip_key = random_bytes.consul_gossip.base64
  nomad_gossip_key  = random_bytes.nomad_gossip.base64
  tokens = {
    consul_management = random_uuid.consul_management.result
    consul_agent      = random_uuid.consul_agent.result
    consul_default    = random_uuid.consul_default.result
    consul_nomad      = random_uuid.consul_nomad.result
    nomad_management  = random_uuid.nomad_management.result
    rpc               = random_password.rpc.result
  }
}

# --- Secrets -----------------------------------------------------------------
# Chosen here rather than on the node so that Consul's initial management
# token and Nomad's bootstrap token are known before the cluster exists and
# can be put in SSM (ssm.tf) without giving the nodes write access to SSM.
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

resource "random_password" "rpc" {
  length  = 48
  special = false
}

# --- Image and zone ------------------------------------------------------------

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
data "aws_ec2_instance_type_offerings" "chosen" {
  location_type = "availability-zone"

  filter {
    name   = "instance-type"
    values = local.instance_types
  }
}

locals {
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.ubuntu[0].id

  instance_types = distinct([var.gateway_instance_type, var.caller_instance_type, var.inference_instance_type])

  offerings = data.aws_ec2_instance_type_offerings.chosen
  zones_with_all_types = sort([
    for az in distinct(local.offerings.locations) : az
    if length(distinct([for i, loc in local.offerings.locations : local.offerings.instance_types[i] if loc == az])) == length(local.instance_types)
  ])
  availability_zone = var.availability_zone != null ? var.availability_zone : try(local.zones_with_all_types[0], null)

  name = var.cluster_name
}

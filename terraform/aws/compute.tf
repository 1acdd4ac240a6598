# The nodes, all in the private subnets, spread over the zones round-robin:
# servers (Nomad + Consul servers, each with its own data volume), gateway,
# caller and inference nodes (Nomad + Consul clients, one role each). All
# share: IMDSv2 only with a hop limit of 1, encrypted gp3 volumes, no
# public address, no inbound port from outside the VPC, Session Manager.
#
# ami and user_data are ignored after creation: the AMI data source moves to
# each new Ubuntu release and cloud-init only runs on first boot, so a change
# to either would otherwise stop or replace running nodes on an unrelated
# apply. Roll a node deliberately with `tofu apply -replace=...` (README).

locals {
  roles = {
    server = {
      count          = var.server_count
      instance_type  = var.server_instance_type
      volume_size    = var.root_volume_size
      profile        = "server"
      security_group = ["server"]
    }
    gateway = {
      count          = var.gateway_count
      instance_type  = var.gateway_instance_type
      volume_size    = var.root_volume_size
      profile        = "client"
      security_group = ["client", "gateway"]
    }
    caller = {
      count          = var.caller_count
      instance_type  = var.caller_instance_type
      volume_size    = var.root_volume_size
      profile        = "client"
      security_group = ["client"]
    }
    inference = {
      count          = var.inference_count
      instance_type  = var.inference_instance_type
      volume_size    = var.inference_volume_size
      profile        = "client"
      security_group = ["client"]
    }
  }

  # One entry per instance: "server-0", "gateway-1", ...
  nodes = merge([
    for role, r in local.roles : {
      for i in range(r.count) : "${role}-${i}" => merge(r, { role = role, index = i, zone = i % local.zone_count })
    }
  ]...)
}

resource "aws_instance" "node" {
  for_each = local.nodes

  ami                         = local.ami_id
  instance_type               = each.value.instance_type
  subnet_id                   = aws_subnet.private[each.value.zone].id
  vpc_security_group_ids      = [for sg in each.value.security_group : aws_security_group.this[sg].id]
  iam_instance_profile        = aws_iam_instance_profile.node[each.value.profile].name
  key_name                    = var.key_name
  associate_public_ip_address = false
  user_data_base64            = module.plan.user_data_base64gzip[each.value.role]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_protocol_ipv6          = "disabled"
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = each.value.volume_size
    encrypted             = true
    kms_key_id            = aws_kms_key.cluster.arn
    delete_on_termination = true
  }

  # Only servers carry the auto-join tag: agents join the servers.
  tags = merge(
    {
      Name = "${local.name}-${each.key}"
      Role = each.value.role
    },
    { for k, v in { (module.plan.join_tag.key) = module.plan.join_tag.value } : k => v if each.value.role == "server" },
  )

  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }

  # The nodes need the NAT path for packages, their secrets in SSM and the
  # S3 endpoint before cloud-init runs.
  depends_on = [
    aws_route.private_nat,
    aws_route_table_association.private,
    aws_vpc_endpoint.s3,
    aws_ssm_parameter.secret,
    aws_iam_role_policy.node,
  ]
}

# Each server's Raft data (Nomad and Consul) lives on a volume of its own,
# outside the instance: replacing the instance (a new AMI, a failed host)
# keeps the volume, and the new instance mounts it (install.sh formats a
# volume only when it is blank).
resource "aws_ebs_volume" "server_data" {
  for_each = { for k, n in local.nodes : k => n if n.role == "server" }

  availability_zone = local.availability_zones[each.value.zone]
  type              = "gp3"
  size              = var.server_data_volume_size
  encrypted         = true
  kms_key_id        = aws_kms_key.cluster.arn

  tags = { Name = "${local.name}-${each.key}-data" }
}

resource "aws_volume_attachment" "server_data" {
  for_each = aws_ebs_volume.server_data

  device_name = "/dev/sdf"
  volume_id   = each.value.id
  instance_id = aws_instance.node[each.key].id
  # Detach cleanly before the instance is replaced, so the new one can
  # attach the same volume.
  stop_instance_before_detaching = true
}

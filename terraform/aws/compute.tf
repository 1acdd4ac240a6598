# The nodes, all in the private subnets. Servers (Nomad + Consul servers,
# each with its own data volume) are fixed instances, one per zone in turn.
# Gateway, caller and inference nodes (Nomad + Consul clients, one role
# each) run in one Auto Scaling group per role over every zone (below). All
# share: IMDSv2 only with a hop limit of 1, encrypted gp3 volumes, no
# public address, no inbound port from outside the VPC, Session Manager.
#
# A server's ami and user_data are ignored after creation: the AMI data
# source moves to each new Ubuntu release and cloud-init only runs on first
# boot, so a change to either would otherwise stop or replace a server on an
# unrelated apply. Roll a server deliberately with `tofu apply -replace=...`
# (README). The clients' launch templates follow both: a new version only
# changes the instances launched after it.

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
      security_group = ["client", "caller"]
    }
    inference = {
      count          = var.inference_count
      instance_type  = var.inference_instance_type
      volume_size    = var.inference_volume_size
      profile        = "client"
      security_group = ["client", "inference"]
    }
  }

  # The servers, one instance each: "server-0", "server-1", ...
  nodes = {
    for i in range(var.server_count) : "server-${i}" => merge(local.roles.server, { role = "server", index = i, zone = i % local.zone_count })
  }

  # The client roles, one Auto Scaling group each.
  client_roles = { for role, r in local.roles : role => r if role != "server" }
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
  # A server's document names its own data volume, so that volume exists
  # before the instance.
  user_data_base64 = module.plan.server_user_data_base64gzip[each.key]

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
  tags = {
    Name                       = "${local.name}-${each.key}"
    Role                       = each.value.role
    (module.plan.join_tag.key) = module.plan.join_tag.value
  }

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
  for_each = local.nodes

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

# --- Client nodes: one Auto Scaling group per role ----------------------------------
# Each group keeps <role>_count nodes over the private subnets of every zone,
# replaces a node that fails its health check (EC2's status checks; for
# gateways also the load balancer's), and is where scaling in and out
# happens. A new node joins by cloud auto-join, as every node does, and
# fetches its secrets from SSM; nothing names a client node anywhere. Before
# the group terminates a node, its lifecycle hook holds the instance while
# the node drains itself in Nomad (slm-drain.service, see the plan module's
# drain.tf); the node then completes the lifecycle action.

resource "aws_launch_template" "client" {
  for_each = local.client_roles

  name_prefix            = "${local.name}-${each.key}-"
  description            = "slm-mesh ${local.name}: ${each.key} nodes"
  image_id               = local.ami_id
  instance_type          = each.value.instance_type
  key_name               = var.key_name
  vpc_security_group_ids = [for sg in each.value.security_group : aws_security_group.this[sg].id]
  user_data              = module.plan.user_data_base64gzip[each.key]
  update_default_version = true

  iam_instance_profile {
    name = aws_iam_instance_profile.node[each.value.profile].name
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_protocol_ipv6          = "disabled"
    instance_metadata_tags      = "disabled"
  }

  # Ubuntu's root device (the nodes' scripts assume Ubuntu).
  block_device_mappings {
    device_name = "/dev/sda1"

    ebs {
      volume_type           = "gp3"
      volume_size           = each.value.volume_size
      encrypted             = true
      kms_key_id            = aws_kms_key.cluster.arn
      delete_on_termination = true
    }
  }

  dynamic "tag_specifications" {
    for_each = ["instance", "volume"]

    content {
      resource_type = tag_specifications.value
      tags = merge(local.common_tags, {
        Name = "${local.name}-${each.key}"
        Role = each.key
      })
    }
  }
}

locals {
  # Inference on Spot (inference_spot): several instance types, so that
  # the group finds capacity when one type's Spot pool runs dry.
  spot_roles = var.inference_spot ? toset(["inference"]) : toset([])
}

data "aws_ec2_instance_type" "spot" {
  for_each = var.inference_spot ? toset(var.inference_spot_instance_types) : toset([])

  instance_type = each.key

  lifecycle {
    postcondition {
      condition     = self.default_vcpus >= 2
      error_message = "${each.key} has ${self.default_vcpus} vCPU: inference_spot_instance_types must each have at least 2 (llama.cpp's threads and the node's agents)."
    }
  }
}

resource "aws_autoscaling_group" "client" {
  for_each = local.client_roles

  name                = module.plan.autoscaling_group_names[each.key]
  vpc_zone_identifier = aws_subnet.private[*].id
  min_size            = each.value.count
  desired_capacity    = each.value.count
  # One more than desired: room for a replacement to launch while the node
  # it replaces drains (instance refresh, Spot capacity rebalancing).
  max_size = each.value.count + 1

  # Gateways are replaced when the load balancer finds them unhealthy too;
  # the grace period covers the first boot (packages, join, the job placed).
  health_check_type         = each.key == "gateway" ? "ELB" : "EC2"
  health_check_grace_period = each.key == "gateway" ? 900 : 300
  target_group_arns         = each.key == "gateway" ? [aws_lb_target_group.gateway.arn] : []

  # Spot: a replacement is launched on EC2's rebalance recommendation,
  # before the interruption notice, and the old node drains through the
  # lifecycle hook.
  capacity_rebalance = contains(local.spot_roles, each.key)

  dynamic "launch_template" {
    for_each = contains(local.spot_roles, each.key) ? [] : [1]

    content {
      id      = aws_launch_template.client[each.key].id
      version = aws_launch_template.client[each.key].latest_version
    }
  }

  dynamic "mixed_instances_policy" {
    for_each = contains(local.spot_roles, each.key) ? [1] : []

    content {
      instances_distribution {
        on_demand_base_capacity                  = 0
        on_demand_percentage_above_base_capacity = 0
        spot_allocation_strategy                 = "capacity-optimized"
      }

      launch_template {
        launch_template_specification {
          launch_template_id = aws_launch_template.client[each.key].id
          version            = aws_launch_template.client[each.key].latest_version
        }

        dynamic "override" {
          for_each = var.inference_spot_instance_types

          content {
            instance_type = override.value
          }
        }
      }
    }
  }

  # The launch template tags the instances and their volumes; these tags
  # are the group's own.
  dynamic "tag" {
    for_each = merge(local.common_tags, { Name = "${local.name}-${each.key}", Role = each.key })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = false
    }
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

# Before the group terminates a node (scale-in, a failed health check, an
# instance refresh, Spot rebalancing), the instance waits in
# Terminating:Wait while the node drains; drain.sh then completes the
# action. A node that never does is terminated at the heartbeat timeout
# (CONTINUE either way: a client holds nothing another node lacks).
resource "aws_autoscaling_lifecycle_hook" "drain" {
  for_each = aws_autoscaling_group.client

  name                   = module.plan.drain.hook_name
  autoscaling_group_name = each.value.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = module.plan.drain.heartbeat_timeout_seconds
  default_result         = "CONTINUE"
}

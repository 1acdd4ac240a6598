output "network" {
  description = "The address plan: VPC and subnet CIDRs."
  value = {
    vpc_cidr             = var.vpc_cidr
    public_subnet_cidrs  = var.public_subnet_cidrs
    private_subnet_cidrs = var.private_subnet_cidrs
  }

  precondition {
    condition     = length(local.subnets_outside_vpc) == 0
    error_message = "Every subnet must lie inside vpc_cidr: ${join(", ", local.subnets_outside_vpc)}."
  }

  precondition {
    condition     = length(local.overlapping_subnets) == 0
    error_message = "Subnets must not overlap: ${join("; ", local.overlapping_subnets)}."
  }

  precondition {
    condition     = length(var.public_subnet_cidrs) == length(var.private_subnet_cidrs)
    error_message = "There must be as many private subnets as public ones (one of each per availability zone)."
  }
}

output "security_group_rules" {
  description = "Every security group rule, keyed by a stable name. Attributes: sg (alb, gateway, server or client), type, protocol, from_port, to_port, cidr_blocks, source_sg (another group, or null), description."
  value       = local.security_group_rules

  precondition {
    condition     = length(local.world_open_rules) == 0
    error_message = "These rules open something other than the load balancer's 443/80 to the whole internet: ${join(", ", local.world_open_rules)}."
  }

  precondition {
    condition     = length(local.node_rules_from_outside) == 0
    error_message = "These rules let traffic from outside the VPC into the nodes: ${join(", ", local.node_rules_from_outside)}."
  }
}

output "api" {
  description = "The load balancer in front of the gateways: listeners (https with its TLS policy and the status of unmatched paths; http, which only redirects), the paths forwarded to the gateways, and the target (port, protocol, health check path)."
  value = {
    listeners     = local.api_listeners
    forward_paths = local.api_forward_paths
    target        = local.api_target
  }

  precondition {
    condition     = local.api_listeners.https.protocol == "HTTPS" && local.api_listeners.https.port == 443 && local.api_listeners.http.redirect.protocol == "HTTPS"
    error_message = "The API must be served over HTTPS on 443, with port 80 only redirecting to it."
  }
}

output "cluster_ports" {
  description = "Nomad and Consul ports by name, with protocol and range."
  value       = local.cluster_ports
}

output "server_count" {
  description = "Number of server nodes; also bootstrap_expect of both servers."
  value       = var.server_count
}

output "join_tag" {
  description = "Tag (key and value) that marks server nodes for cloud auto-join."
  value = {
    key   = local.join_tag_key
    value = local.join_tag_value
  }
}

output "iam_name_prefixes" {
  description = "name_prefix of each IAM role and instance profile (server, client, flow-logs), within IAM's 38 characters."
  value       = local.iam_name_prefixes

  precondition {
    condition     = alltrue([for p in values(local.iam_name_prefixes) : length(p) <= 38])
    error_message = "An IAM name_prefix is longer than the 38 characters AWS allows."
  }
}

output "node_kinds" {
  description = "Per kind of node (server, gateway, caller, inference): whether it runs the servers, and the Nomad node meta slm_role it gets (null on servers, which run no client)."
  value = {
    for kind, k in local.node_kinds : kind => {
      server   = k.server
      slm_role = k.node_role
    }
  }
}

output "ssm_prefix" {
  description = "SSM Parameter Store path under which every secret lives: client/* readable by every node, server/* by the servers only."
  value       = local.ssm_prefix
}

output "ssm_parameter_names" {
  description = "The secrets' parameter names relative to ssm_prefix (not secret, so usable in for_each)."
  value       = sort(keys(local.ssm_parameters))
}

output "ssm_parameters" {
  description = "The secrets by parameter name relative to ssm_prefix."
  value       = local.ssm_parameters
  sensitive   = true
}

output "user_data" {
  description = "Rendered cloud-init documents by kind of node, as text for review and tests. They hold no secret. A server boots from its own document in server_user_data instead: this one names no data volume, and a server booted from it leaves its agents stopped."
  value       = local.user_data

  precondition {
    condition = alltrue(flatten([
      for kind, ud in local.user_data : [for s in local.secret_values : !strcontains(ud, s)]
    ]))
    error_message = "A secret reached a user data document; secrets go to SSM only."
  }
}

output "user_data_base64gzip" {
  description = "The same documents gzipped and base64-encoded, for aws_instance.user_data_base64 (EC2's limit is 16 KiB, and cloud-init reads gzip natively)."
  value       = { for kind, ud in local.user_data : kind => base64gzip(ud) }

  precondition {
    condition     = alltrue([for kind, ud in local.user_data : length(base64gzip(ud)) < 16384])
    error_message = "A compressed user_data exceeds EC2's 16 KiB limit."
  }
}

output "server_user_data" {
  description = "The cloud-init document of each server in server_data_volume_ids, by name: the server kind's files and that server's data volume id. Servers boot from these, not from user_data.server."
  value       = local.server_user_data

  precondition {
    condition = alltrue(flatten([
      for name, ud in local.server_user_data : [for s in local.secret_values : !strcontains(ud, s)]
    ]))
    error_message = "A secret reached a server's user data document; secrets go to SSM only."
  }
}

output "server_user_data_base64gzip" {
  description = "server_user_data gzipped and base64-encoded, for the servers' aws_instance.user_data_base64."
  value       = { for name, ud in local.server_user_data : name => base64gzip(ud) }

  precondition {
    condition     = alltrue([for name, ud in local.server_user_data : length(base64gzip(ud)) < 16384])
    error_message = "A server's compressed user_data exceeds EC2's 16 KiB limit."
  }
}

output "agent_configs" {
  description = "The rendered files by kind of node and path, for review and tests."
  value = {
    for kind, files in local.node_files : kind => {
      for f in files : f.path => f.content
    }
  }
}

output "node_files" {
  description = "The files each kind of node gets, as cloud-init writes them: path, permissions (octal string) and content, in order. The cluster in a box lays them out per host from here."
  value       = local.node_files
}

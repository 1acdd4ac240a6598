output "network" {
  description = "The address plan: VPC and subnet CIDRs."
  value = {
    vpc_cidr            = var.vpc_cidr
    public_subnet_cidr  = var.public_subnet_cidr
    private_subnet_cidr = var.private_subnet_cidr
  }

  precondition {
    condition     = local.public_in_vpc && local.private_in_vpc
    error_message = "Both subnets must lie inside vpc_cidr."
  }

  precondition {
    condition     = !local.subnets_overlap
    error_message = "The public and private subnets must not overlap."
  }
}

output "security_group_rules" {
  description = "Every security group rule, keyed by a stable name. Attributes: sg (gateway or private), type, protocol, from_port, to_port, cidr_blocks, description, and internet (true for the few rules meant to reach beyond the VPC)."
  value       = local.security_group_rules

  precondition {
    condition     = length(local.world_open_cluster_rules) == 0
    error_message = "These rules open a Nomad or Consul port to the whole internet: ${join(", ", local.world_open_cluster_rules)}."
  }

  precondition {
    condition     = length(local.private_rules_from_outside) == 0
    error_message = "These rules let traffic from outside the VPC into the private nodes: ${join(", ", local.private_rules_from_outside)}."
  }
}

output "cluster_ports" {
  description = "Nomad and Consul ports by name, with protocol and range."
  value       = local.cluster_ports
}

output "join_tag" {
  description = "Tag (key and value) that marks server nodes for cloud auto-join."
  value = {
    key   = local.join_tag_key
    value = local.join_tag_value
  }
}

output "node_kinds" {
  description = "Per kind of node: whether it runs the servers, and the Nomad node meta slm_role it gets."
  value = {
    for kind, k in local.node_kinds : kind => {
      server   = k.server
      slm_role = k.node_role
    }
  }
}

output "user_data" {
  description = "Rendered cloud-init documents by kind of node (gateway, caller, inference), as text for review and tests. They contain the gossip keys and ACL tokens."
  value       = local.user_data
  sensitive   = true
}

output "user_data_base64gzip" {
  description = "The same documents gzipped and base64-encoded, for aws_instance.user_data_base64: the gateway's is over EC2's 16 KiB limit as text, and cloud-init reads gzip natively."
  value       = { for kind, ud in local.user_data : kind => base64gzip(ud) }
  sensitive   = true

  precondition {
    condition     = alltrue([for kind, ud in local.user_data : length(base64gzip(ud)) < 16384])
    error_message = "A compressed user_data exceeds EC2's 16 KiB limit."
  }
}

output "agent_configs" {
  description = "The rendered agent configuration files by kind of node and path, for review and tests."
  value = {
    for kind, files in local.node_files : kind => {
      for f in files : f.path => f.content
    }
  }
  sensitive = true
}

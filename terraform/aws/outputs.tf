locals {
  gateway_ip  = aws_eip.gateway.public_ip
  ssh_enabled = length(var.allowed_ssh_cidrs) > 0 && var.ssh_key_name != null
  ssh_target  = "ubuntu@${local.gateway_ip}"
  no_ssh      = "SSH is closed: set allowed_ssh_cidrs and ssh_key_name to open it."
}

output "gateway_public_ip" {
  description = "Elastic IP of the gateway node."
  value       = local.gateway_ip
}

output "api_url" {
  description = "Base URL of the OpenAI-compatible API."
  value       = "http://${local.gateway_ip}:3111"
}

output "nomad_addr" {
  description = "NOMAD_ADDR for the CLI and `go run ./tools/submit`: direct when allowed_admin_cidrs is set, otherwise through the SSH tunnel (consul_ui_tunnel)."
  value       = length(var.allowed_admin_cidrs) > 0 ? "http://${local.gateway_ip}:4646" : "http://127.0.0.1:4646"
}

output "consul_addr" {
  description = "CONSUL_HTTP_ADDR, like nomad_addr."
  value       = length(var.allowed_admin_cidrs) > 0 ? "http://${local.gateway_ip}:8500" : "http://127.0.0.1:8500"
}

output "consul_ui_tunnel" {
  description = "SSH command forwarding the Consul (8500) and Nomad (4646) UIs and APIs to localhost."
  value       = local.ssh_enabled ? "ssh -N -L 8500:127.0.0.1:8500 -L 4646:127.0.0.1:4646 ${local.ssh_target}" : local.no_ssh
}

output "ssh_private_node" {
  description = "SSH to a private node through the gateway (replace the address with any of private_node_ips)."
  value       = local.ssh_enabled ? "ssh -J ${local.ssh_target} ubuntu@${aws_instance.inference[0].private_ip}" : local.no_ssh
}

output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "public_subnet_id" {
  description = "ID of the public subnet (gateway node, NAT gateway)."
  value       = aws_subnet.public.id
}

output "private_subnet_id" {
  description = "ID of the private subnet (caller and inference nodes)."
  value       = aws_subnet.private.id
}

output "availability_zone" {
  description = "Availability zone of the subnets."
  value       = local.availability_zone
}

output "private_node_ips" {
  description = "Private addresses of the nodes, by role."
  value = {
    gateway   = aws_instance.gateway.private_ip
    caller    = aws_instance.caller[*].private_ip
    inference = aws_instance.inference[*].private_ip
  }
}

output "token_parameters" {
  description = "SSM SecureString parameters holding the management tokens."
  value = {
    consul = aws_ssm_parameter.consul_management_token.name
    nomad  = aws_ssm_parameter.nomad_management_token.name
  }
}

output "token_commands" {
  description = "Shell commands that export the management tokens from SSM."
  value = {
    consul = "export CONSUL_HTTP_TOKEN=$(aws ssm get-parameter --region ${var.region} --with-decryption --name ${aws_ssm_parameter.consul_management_token.name} --query Parameter.Value --output text)"
    nomad  = "export NOMAD_TOKEN=$(aws ssm get-parameter --region ${var.region} --with-decryption --name ${aws_ssm_parameter.nomad_management_token.name} --query Parameter.Value --output text)"
  }
}

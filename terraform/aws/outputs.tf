locals {
  ssm_get = "aws ssm get-parameter --region ${var.region} --with-decryption --query Parameter.Value --output text --name"
  # Session Manager port forwarding to the first server: the operator's way
  # to Nomad (4646, HTTPS) and Consul (8500, loopback HTTP inside the tunnel).
  first_server = aws_instance.node["server-0"].id
  port_forward = {
    for name, port in { nomad = 4646, consul = 8500 } : name =>
    "aws ssm start-session --region ${var.region} --target ${local.first_server} --document-name AWS-StartPortForwardingSession --parameters '{\"portNumber\":[\"${port}\"],\"localPortNumber\":[\"${port}\"]}'"
  }
}

output "api_url" {
  description = "Base URL of the OpenAI-compatible API (HTTPS through the load balancer)."
  value       = "https://${local.api_host}"
}

output "api_ca_pem" {
  description = "With the self-signed certificate (no certificate_arn, no domain_name): the CA that signed it, for `curl --cacert`. Null otherwise."
  value       = local.use_selfsigned ? tls_self_signed_cert.api_ca[0].cert_pem : null
}

output "api_ca_command" {
  description = "Writes the API's CA to slm-api-ca.pem when the certificate is self-signed; curl then needs --cacert slm-api-ca.pem."
  value       = local.use_selfsigned ? "tofu -chdir=terraform/aws output -raw api_ca_pem > slm-api-ca.pem" : "The API's certificate is publicly trusted: no CA file needed."
}

output "api_key_command" {
  description = "Shell command that exports the first API key (all keys are comma-separated in the parameter)."
  value       = "export KEY=$(${local.ssm_get} ${aws_ssm_parameter.secret["server/api-keys"].name} | cut -d, -f1)"
}

output "token_commands" {
  description = "Shell commands that export the management tokens from SSM."
  value = {
    nomad  = "export NOMAD_TOKEN=$(${local.ssm_get} ${aws_ssm_parameter.secret["server/nomad/management-token"].name})"
    consul = "export CONSUL_HTTP_TOKEN=$(${local.ssm_get} ${aws_ssm_parameter.secret["server/consul/management-token"].name})"
  }
}

output "agent_ca_pem" {
  description = "The agents' CA certificate (not secret): NOMAD_CACERT for the CLI and tools/submit through the port forward."
  value       = tls_self_signed_cert.agent_ca.cert_pem
}

output "port_forward_commands" {
  description = "Session Manager port forwarding to the first server's Nomad (4646) and Consul (8500) APIs and UIs; run each in its own terminal."
  value       = local.port_forward
}

output "nomad_env" {
  description = "Shell commands that point the nomad CLI and tools/submit at the port forward, with the agents' CA and the management token."
  value = join(" && ", [
    "tofu -chdir=terraform/aws output -raw agent_ca_pem > slm-agent-ca.pem",
    "export NOMAD_ADDR=https://127.0.0.1:4646 NOMAD_CACERT=$PWD/slm-agent-ca.pem CONSUL_HTTP_ADDR=http://127.0.0.1:8500",
  ])
}

output "artifacts_bucket" {
  description = "The private bucket of release binaries (releases/<version>/linux_amd64/) and snapshots (snapshots/)."
  value       = aws_s3_bucket.artifacts.id
}

output "region" {
  description = "AWS region of the cluster (and of the artifacts bucket)."
  value       = var.region
}

output "submit_vars" {
  description = "Job variables for this cluster, in HCL: `go run ./tools/submit -var-file <(tofu output -raw submit_vars) -var-file release.vars.hcl`."
  value       = <<-EOT
    # This cluster's values for the jobs (terraform/aws output submit_vars).
    region      = "global"
    datacenters = ["${var.datacenter}"]
    driver      = "exec"
    consul_addr = "127.0.0.1:8500"
    # One gateway per gateway node: the job listens on a static port, which
    # the load balancer's target group forwards to.
    gateway_count = ${var.gateway_count}
  EOT
}

output "server_instance_ids" {
  description = "Instance IDs of the server nodes (targets of the port forward; `aws ssm start-session --target <id>` for a shell)."
  value       = [for k, n in local.nodes : aws_instance.node[k].id if n.role == "server"]
}

output "nodes" {
  description = "Every node: instance ID and private address, by name (server-0, gateway-1, ...)."
  value = {
    for k, n in local.nodes : k => {
      id         = aws_instance.node[k].id
      private_ip = aws_instance.node[k].private_ip
      zone       = local.availability_zones[n.zone]
    }
  }
}

output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "availability_zones" {
  description = "Availability zones of the subnets."
  value       = local.availability_zones
}

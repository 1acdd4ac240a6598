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
  description = "Shell commands that export the management tokens from SSM: break-glass only; day to day, the operator token (operator_token_command)."
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
  description = "Shell commands that point the nomad CLI and tools/submit at the port forward: the agents' CA and the operator's client certificate (Nomad's API asks for one) written to files, the variables exported."
  value = join(" && ", [
    "tofu -chdir=terraform/aws output -raw agent_ca_pem > slm-agent-ca.pem",
    "tofu -chdir=terraform/aws output -raw operator_cert_pem > slm-operator.pem",
    "(umask 077 && tofu -chdir=terraform/aws output -raw operator_key_pem > slm-operator-key.pem)",
    "export NOMAD_ADDR=https://127.0.0.1:4646 NOMAD_CACERT=$PWD/slm-agent-ca.pem NOMAD_CLIENT_CERT=$PWD/slm-operator.pem NOMAD_CLIENT_KEY=$PWD/slm-operator-key.pem CONSUL_HTTP_ADDR=http://127.0.0.1:8500",
  ])
}

output "operator_cert_pem" {
  description = "The operator's client certificate of the agents' CA (client auth only), which Nomad's API asks of every caller."
  value       = tls_locally_signed_cert.operator.cert_pem
}

output "operator_key_pem" {
  description = "The key of operator_cert_pem."
  value       = tls_private_key.operator.private_key_pem
  sensitive   = true
}

output "operator_token_command" {
  description = "Run once, with nomad_env's variables: creates a Nomad token from the slm-operator policy (submit and watch the jobs, read nodes; nothing of ACLs or agents) with the management token from SSM, keeps its secret in slm-operator-token (mode 0600) and exports it as NOMAD_TOKEN. Later shells: export NOMAD_TOKEN=$(cat slm-operator-token)."
  value       = "(umask 077 && NOMAD_TOKEN=$(${local.ssm_get} ${aws_ssm_parameter.secret["server/nomad/management-token"].name}) nomad acl token create -name=operator -type=client -policy=slm-operator -json | jq -j .SecretID > slm-operator-token) && export NOMAD_TOKEN=$(cat slm-operator-token)"
}

output "artifacts_bucket" {
  description = "The private bucket of release binaries (releases/<version>/linux_amd64/) and snapshots (snapshots/)."
  value       = aws_s3_bucket.artifacts.id
}

output "alarm_topic_arn" {
  description = "SNS topic every alarm notifies (alarms.tf); subscribe a pager or chat integration to it."
  value       = aws_sns_topic.alarms.arn
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
  value       = [for k, n in local.nodes : aws_instance.node[k].id]
}

output "autoscaling_groups" {
  description = "The Auto Scaling group of each client role (gateway, caller, inference), whose instances come and go: `aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names <name>` lists them."
  value       = { for role, g in aws_autoscaling_group.client : role => g.name }
}

output "nodes" {
  description = "The server nodes: instance ID, private address and zone, by name (server-0, server-1, ...). Client nodes are in the autoscaling_groups."
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

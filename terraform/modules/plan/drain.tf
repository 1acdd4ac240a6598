# Client nodes come and go: terraform/aws runs them in one Auto Scaling
# group per kind, which replaces an unhealthy node, scales in and out, and
# (inference on Spot) loses instances to EC2. Before a node's instance is
# terminated, the node drains itself in Nomad: slm-drain.service polls the
# instance metadata service, drains on a lifecycle hook's Terminated state
# or a Spot interruption notice, then completes the hook's lifecycle action
# (templates/drain.sh). The servers create the node-write token it uses
# and publish it in SSM (acl-bootstrap.sh).

variable "drain_deadline_seconds" {
  description = "How long a client node being terminated by its Auto Scaling group may take to drain in Nomad before its remaining allocations are stopped. The lifecycle hook holds the instance a little longer (drain.heartbeat_timeout_seconds)."
  type        = number
  default     = 300

  validation {
    condition     = var.drain_deadline_seconds >= 60 && var.drain_deadline_seconds <= 3600 && floor(var.drain_deadline_seconds) == var.drain_deadline_seconds
    error_message = "The drain_deadline_seconds must be a whole number from 60 to 3600."
  }
}

variable "ssm_kms_key_id" {
  description = "KMS key (id, ARN or alias) the servers encrypt the drain token's SSM parameter with, the key of every other secret. Null: SSM's default key."
  type        = string
  default     = null
}

locals {
  # Deterministic names, so that user data (made before the groups) names
  # them and IAM can scope the lifecycle action to them.
  autoscaling_group_names = { for kind in local.client_kinds : kind => "${var.cluster_name}-${kind}" }
  lifecycle_hook_name     = "slm-drain"

  drain = {
    deadline_seconds = var.drain_deadline_seconds
    # EC2 reclaims a Spot instance two minutes after its notice.
    spot_deadline_seconds = 90
    # The drain, its last allocations' exit (drain.sh allows a minute) and
    # the lifecycle call: past this the group terminates the instance anyway.
    heartbeat_timeout_seconds = var.drain_deadline_seconds + 120
    hook_name                 = local.lifecycle_hook_name
    # Relative to ssm_prefix. Not among ssm_parameters: Nomad chooses a
    # token's secret, so Terraform cannot; the servers write it.
    token_parameter = "client/nomad/drain-token"
  }

  # What the servers' acl-bootstrap.sh needs to create and publish the token.
  drain_bootstrap = {
    policy          = file("${local.agent_config_dir}/nomad/node-drain.policy.hcl")
    token_parameter = local.drain.token_parameter
    kms_key_id      = var.ssm_kms_key_id
  }

  drain_conf = {
    for kind in local.client_kinds : kind => <<-EOT
      # slm-drain.service's settings (drain.sh), rendered by terraform/modules/plan.
      region=${var.region}
      group=${local.autoscaling_group_names[kind]}
      hook=${local.drain.hook_name}
      token_parameter=${local.ssm_prefix}/${local.drain.token_parameter}
      deadline=${local.drain.deadline_seconds}
      spot_deadline=${local.drain.spot_deadline_seconds}
      imds=http://169.254.169.254
      interval=5
      client_id_file=/opt/nomad/data/client/client-id
      # The local agent's HTTP API asks for a certificate of the agents' CA
      # (verify_https_client): the node's own.
      export NOMAD_ADDR=https://127.0.0.1:4646
      export NOMAD_CACERT=/etc/nomad.d/tls/ca.pem
      export NOMAD_CLIENT_CERT=/etc/nomad.d/tls/agent.pem
      export NOMAD_CLIENT_KEY=/etc/nomad.d/tls/agent-key.pem
    EOT
  }

  drain_files = {
    for kind in local.client_kinds : kind => [
      { path = "/etc/systemd/system/slm-drain.service", permissions = "0644", content = file("${local.templates}/systemd/slm-drain.service") },
      { path = "/opt/slm-mesh/drain.sh", permissions = "0700", content = file("${local.templates}/drain.sh") },
      { path = "/etc/slm-mesh/drain.conf", permissions = "0644", content = local.drain_conf[kind] },
    ]
  }
}

output "autoscaling_group_names" {
  description = "Name of each client kind's Auto Scaling group (gateway, caller, inference), which the kind's drain.conf names."
  value       = local.autoscaling_group_names
}

output "drain" {
  description = "How client nodes drain before termination: deadline_seconds (lifecycle hook), spot_deadline_seconds, heartbeat_timeout_seconds for the lifecycle hook, hook_name, and token_parameter (the drain token's SSM name relative to ssm_prefix, written by the servers)."
  value       = local.drain
}

# Consul client agent, on every Nomad client. Terraform renders this file with
# templatefile() and cloud-init writes it to /etc/consul.d/client.hcl.
# Placeholders:
#
#   ${datacenter}     Consul datacenter, e.g. "dc1".
#   ${retry_join}     go-discover string that finds the servers (AWS cloud
#                     auto-join by tag), e.g.
#                     "provider=aws tag_key=slm-mesh-consul tag_value=server".
#
# Secrets are not in this file: at every boot slm-secrets.service fetches
# them from SSM and writes /etc/consul.d/zz-secrets.hcl (encrypt; acl.tokens
# agent, and default, with which the services read their peers' health from
# this agent without a token of their own) and the TLS files under
# /etc/consul.d/tls.
# The HTTP API listens on loopback only: the services and Nomad on the node
# use it there. ACL bootstrap and token roles: docs/nomad.md.

datacenter  = "${datacenter}"
data_dir    = "/opt/consul/data"
server      = false
bind_addr   = "{{ GetPrivateIP }}"
client_addr = "127.0.0.1"
retry_join  = ["${retry_join}"]

# No calls home: the agents would ask checkpoint-api.hashicorp.com for new
# versions through the NAT gateway (upgrades are deliberate, see install.sh).
disable_update_check = true

acl {
  enabled                  = true
  default_policy           = "deny"
  enable_token_persistence = true
}

# Mutual TLS to the servers (see consul/server.hcl).
tls {
  defaults {
    ca_file         = "/etc/consul.d/tls/ca.pem"
    cert_file       = "/etc/consul.d/tls/agent.pem"
    key_file        = "/etc/consul.d/tls/agent-key.pem"
    verify_incoming = true
    verify_outgoing = true
  }

  internal_rpc {
    verify_server_hostname = true
  }
}

# GET /v1/agent/metrics?format=prometheus
telemetry {
  disable_hostname          = true
  prometheus_retention_time = "60s"
}

# Consul client agent, on every Nomad client. Terraform renders this file with
# templatefile() and cloud-init writes it to /etc/consul.d/client.hcl.
# Placeholders:
#
#   ${datacenter}     Consul datacenter, e.g. "dc1".
#   ${retry_join}     go-discover string that finds the servers (AWS cloud
#                     auto-join by tag), e.g.
#                     "provider=aws tag_key=slm-mesh-consul tag_value=server".
#   ${gossip_key}     Gossip encryption key, the same as the servers'.
#   ${agent_token}    Token of this agent (node:write); "" until created.
#   ${default_token}  Token used for requests that carry none, which is how
#                     the services read their peers' health from this agent
#                     (service:read, node:read); "" until created.
#
# The HTTP API listens on loopback only: the services and Nomad on the node
# use it there. ACL bootstrap and token roles: docs/nomad.md.

datacenter  = "${datacenter}"
data_dir    = "/opt/consul/data"
server      = false
bind_addr   = "{{ GetPrivateIP }}"
client_addr = "127.0.0.1"
retry_join  = ["${retry_join}"]
encrypt     = "${gossip_key}"

acl {
  enabled                  = true
  default_policy           = "deny"
  enable_token_persistence = true

  tokens {
    agent   = "${agent_token}"
    default = "${default_token}"
  }
}

# GET /v1/agent/metrics?format=prometheus
telemetry {
  disable_hostname          = true
  prometheus_retention_time = "60s"
}

# Consul server agent. Terraform renders this file with templatefile() and
# cloud-init writes it to /etc/consul.d/server.hcl. Placeholders:
#
#   ${datacenter}        Consul datacenter, e.g. "dc1".
#   ${bootstrap_expect}  Number of servers that elect the first leader (1, 3 or 5).
#   ${retry_join}        go-discover string that finds the servers (AWS cloud
#                        auto-join by tag), e.g.
#                        "provider=aws tag_key=slm-mesh-consul tag_value=server".
#   ${gossip_key}        Gossip encryption key: 32 random bytes, base64
#                        (`consul keygen`); the same on every agent.
#   ${management_token}  Initial management token (a UUID Terraform generates
#                        and keeps secret): it bootstraps the ACL system.
#   ${agent_token}       Token of this agent (node:write); "" until created.
#
# {{ ... }} are go-sockaddr templates that Consul evaluates when it starts.
# ACL bootstrap and token roles: docs/nomad.md.

datacenter       = "${datacenter}"
data_dir         = "/opt/consul/data"
server           = true
bootstrap_expect = ${bootstrap_expect}
bind_addr        = "{{ GetPrivateIP }}"
client_addr      = "127.0.0.1"
retry_join       = ["${retry_join}"]
encrypt          = "${gossip_key}"

ui_config {
  enabled = true
}

acl {
  enabled                  = true
  default_policy           = "deny"
  enable_token_persistence = true

  tokens {
    initial_management = "${management_token}"
    agent              = "${agent_token}"
  }
}

# GET /v1/agent/metrics?format=prometheus
telemetry {
  disable_hostname          = true
  prometheus_retention_time = "60s"
}

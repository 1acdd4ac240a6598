# Consul server agent. Terraform renders this file with templatefile() and
# cloud-init writes it to /etc/consul.d/server.hcl. Placeholders:
#
#   ${datacenter}        Consul datacenter, e.g. "dc1".
#   ${bootstrap_expect}  Number of servers that elect the first leader (1, 3 or 5).
#   ${retry_join}        go-discover string that finds the servers (AWS cloud
#                        auto-join by tag), e.g.
#                        "provider=aws tag_key=slm-mesh-consul tag_value=server".
#
# Secrets are not in this file: at every boot slm-secrets.service fetches
# them from SSM and writes /etc/consul.d/zz-secrets.hcl (encrypt, the gossip
# key; acl.tokens: initial_management, agent, default) and the TLS files
# under /etc/consul.d/tls.
# {{ ... }} are go-sockaddr templates that Consul evaluates when it starts.
# ACL bootstrap and token roles: docs/nomad.md.

datacenter = "${datacenter}"
# On the server's own EBS volume, which outlives the instance.
data_dir         = "/opt/slm-data/consul"
server           = true
bootstrap_expect = ${bootstrap_expect}
bind_addr        = "{{ GetPrivateIP }}"
client_addr      = "127.0.0.1"
retry_join       = ["${retry_join}"]

# No calls home: the agents would ask checkpoint-api.hashicorp.com for new
# versions through the NAT gateway (upgrades are deliberate, see install.sh).
disable_update_check = true

ui_config {
  enabled = true
}

acl {
  enabled                  = true
  default_policy           = "deny"
  enable_token_persistence = true
}

# Mutual TLS between agents: only those with a certificate from the
# cluster's CA take part in RPC, and agents check that a server's
# certificate names "server.<datacenter>.consul". The HTTP API stays on
# loopback (client_addr) for Nomad and the services on this node.
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

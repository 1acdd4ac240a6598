# Nomad server agent. Terraform renders this file with templatefile() and
# cloud-init writes it to /etc/nomad.d/server.hcl. Placeholders:
#
#   ${datacenter}        Nomad datacenter of the node, e.g. "dc1".
#   ${region}            Nomad region, e.g. "global".
#   ${bootstrap_expect}  Number of servers that elect the first leader (1, 3 or 5).
#   ${retry_join}        go-discover string that finds the servers (AWS cloud
#                        auto-join by tag), e.g.
#                        "provider=aws tag_key=slm-mesh-nomad tag_value=server".
#
# Secrets are not in this file: at every boot slm-secrets.service fetches
# them from SSM and writes /etc/nomad.d/zz-secrets.hcl (server.encrypt, the
# gossip key; consul.token) and the TLS files under /etc/nomad.d/tls.
# {{ ... }} are go-sockaddr templates that Nomad evaluates when it starts.
# ACL bootstrap and token roles: docs/nomad.md.

datacenter = "${datacenter}"
region     = "${region}"
# On the server's own EBS volume, which outlives the instance.
data_dir  = "/opt/slm-data/nomad"
bind_addr = "0.0.0.0"

# No calls home: the agents would ask checkpoint-api.hashicorp.com for new
# versions through the NAT gateway (upgrades are deliberate, see install.sh).
disable_update_check = true

advertise {
  http = "{{ GetPrivateIP }}"
  rpc  = "{{ GetPrivateIP }}"
  serf = "{{ GetPrivateIP }}"
}

server {
  enabled          = true
  bootstrap_expect = ${bootstrap_expect}

  server_join {
    retry_join = ["${retry_join}"]
  }

  # Client nodes come and go with their Auto Scaling groups: a terminated
  # node shows down, then is forgotten once down this long (the default,
  # 24h, would list every replaced node for a day).
  node_gc_threshold = "1h"
}

acl {
  enabled = true
}

# Mutual TLS on RPC: only agents with a certificate from the cluster's CA
# join, and a client must see "server.<region>.nomad" in a server's
# certificate. The HTTP API is HTTPS too and asks every caller for a
# certificate of the same CA before any ACL token counts: a task or host
# in the VPC without one gets no answer at all. Operators hold one
# (terraform/aws output nomad_env); tasks reach the API only through
# Nomad's Task API socket, with their workload identity.
tls {
  http                   = true
  rpc                    = true
  ca_file                = "/etc/nomad.d/tls/ca.pem"
  cert_file              = "/etc/nomad.d/tls/agent.pem"
  key_file               = "/etc/nomad.d/tls/agent-key.pem"
  verify_server_hostname = true
  verify_https_client    = true
}

consul {
  address = "127.0.0.1:8500"
}

# GET /v1/metrics?format=prometheus
telemetry {
  collection_interval        = "10s"
  disable_hostname           = true
  prometheus_metrics         = true
  publish_allocation_metrics = true
  publish_node_metrics       = true
}

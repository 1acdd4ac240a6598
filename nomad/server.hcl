# Nomad server agent. Terraform renders this file with templatefile() and
# cloud-init writes it to /etc/nomad.d/server.hcl. Placeholders:
#
#   ${datacenter}        Nomad datacenter of the node, e.g. "dc1".
#   ${region}            Nomad region, e.g. "global".
#   ${bootstrap_expect}  Number of servers that elect the first leader (1, 3 or 5).
#   ${retry_join}        go-discover string that finds the servers (AWS cloud
#                        auto-join by tag), e.g.
#                        "provider=aws tag_key=slm-mesh-nomad tag_value=server".
#   ${gossip_key}        Serf encryption key: 32 random bytes, base64
#                        (`nomad operator gossip keyring generate`).
#   ${consul_token}      Consul ACL token with which Nomad registers itself in
#                        Consul ("" before the Consul ACL bootstrap).
#
# {{ ... }} are go-sockaddr templates that Nomad evaluates when it starts.
# ACL bootstrap and token roles: docs/nomad.md.

datacenter = "${datacenter}"
region     = "${region}"
data_dir   = "/opt/nomad/data"
bind_addr  = "0.0.0.0"

advertise {
  http = "{{ GetPrivateIP }}"
  rpc  = "{{ GetPrivateIP }}"
  serf = "{{ GetPrivateIP }}"
}

server {
  enabled          = true
  bootstrap_expect = ${bootstrap_expect}
  encrypt          = "${gossip_key}"

  server_join {
    retry_join = ["${retry_join}"]
  }
}

acl {
  enabled = true
}

consul {
  address = "127.0.0.1:8500"
  token   = "${consul_token}"
}

# GET /v1/metrics?format=prometheus
telemetry {
  collection_interval        = "10s"
  disable_hostname           = true
  prometheus_metrics         = true
  publish_allocation_metrics = true
  publish_node_metrics       = true
}

# Nomad client agent. Terraform renders this file with templatefile() and
# cloud-init writes it to /etc/nomad.d/client.hcl. Placeholders:
#
#   ${datacenter}    Nomad datacenter of the node, e.g. "dc1".
#   ${region}        Nomad region, e.g. "global".
#   ${retry_join}    go-discover string that finds the servers (AWS cloud
#                    auto-join by tag), e.g.
#                    "provider=aws tag_key=slm-mesh-nomad tag_value=server".
#   ${node_role}     What the node runs, read by the jobs' constraints on
#                    meta.slm_role: "gateway" (public subnet), "private"
#                    (caller and inference), or "gateway,private".
#   ${consul_token}  Consul ACL token with which Nomad registers the jobs'
#                    services and checks ("" before the Consul ACL bootstrap).
#
# cloud-init must create /opt/slm-mesh/models (the model cache host volume)
# and install the service binaries in /usr/local/bin (the jobs' bin_dir),
# which the exec driver's chroot contains.

datacenter = "${datacenter}"
region     = "${region}"
data_dir   = "/opt/nomad/data"
bind_addr  = "0.0.0.0"

advertise {
  http = "{{ GetPrivateIP }}"
  rpc  = "{{ GetPrivateIP }}"
  serf = "{{ GetPrivateIP }}"
}

client {
  enabled = true

  server_join {
    retry_join = ["${retry_join}"]
  }

  meta {
    slm_role = "${node_role}"
  }

  # The services drain for up to a minute after SIGTERM; the jobs ask for a
  # kill_timeout a little longer than that, which the default cap (30s)
  # would cut short.
  max_kill_timeout = "2m"

  # The inference job downloads the model here once; later allocations on
  # the node reuse it (checked against its sha256 each time).
  host_volume "slm-model-cache" {
    path      = "/opt/slm-mesh/models"
    read_only = false
  }
}

acl {
  enabled = true
}

consul {
  address = "127.0.0.1:8500"
  token   = "${consul_token}"
}

# exec isolates tasks in a chroot and cgroups; raw_exec does not, so it stays
# off on the cluster (the local dev agent uses it).
plugin "raw_exec" {
  config {
    enabled = false
  }
}

# GET /v1/metrics?format=prometheus
telemetry {
  collection_interval        = "10s"
  disable_hostname           = true
  prometheus_metrics         = true
  publish_allocation_metrics = true
  publish_node_metrics       = true
}

# Nomad client agent. Terraform renders this file with templatefile() and
# cloud-init writes it to /etc/nomad.d/client.hcl. Placeholders:
#
#   ${datacenter}    Nomad datacenter of the node, e.g. "dc1".
#   ${region}        Nomad region, e.g. "global".
#   ${retry_join}    go-discover string that finds the servers (AWS cloud
#                    auto-join by tag), e.g.
#                    "provider=aws tag_key=slm-mesh-nomad tag_value=server".
#   ${node_role}     What the node runs, read by the jobs' constraints on
#                    meta.slm_role: "gateway", "caller" or "inference" (one
#                    role per node).
#
# Secrets are not in this file: at every boot slm-secrets.service fetches
# them from SSM and writes /etc/nomad.d/zz-secrets.hcl (consul.token) and
# the TLS files under /etc/nomad.d/tls.
# cloud-init creates /opt/slm-mesh/models (the model cache host volume).

datacenter = "${datacenter}"
region     = "${region}"
data_dir   = "/opt/nomad/data"
bind_addr  = "0.0.0.0"

# No calls home: the agents would ask checkpoint-api.hashicorp.com for new
# versions through the NAT gateway (upgrades are deliberate, see install.sh).
disable_update_check = true

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

  # Exec tasks run as nobody unless a job names a user; never as root or
  # consul, the two users that may reach the instance metadata service
  # (slm-imds-guard drops everyone else's packets to it).
  options = {
    "user.denylist"        = "root,consul"
    "user.checked_drivers" = "exec,java"
  }

  # The services drain for up to a minute after SIGTERM; the jobs ask for a
  # kill_timeout a little longer than that, which the default cap (30s)
  # would cut short.
  max_kill_timeout = "2m"

  # What an exec task's chroot holds: the dynamic loader and the shared
  # libraries the services link (libc, libstdc++ for llama.cpp), the CA
  # bundle (the model download), DNS and the user database the executor
  # resolves the task's user in. Not /etc whole, where the agents' TLS keys
  # and tokens are; not /bin, /sbin or /usr/bin, which hold setuid
  # programs (and no shell: the services need none). Nomad's default
  # links all of those into every task. /usr/local/bin is where a job's
  # bin_dir may point when it does not fetch its binaries.
  chroot_env = {
    "/usr/local/bin"             = "/usr/local/bin"
    "/lib64"                     = "/lib64"
    "/lib/x86_64-linux-gnu"      = "/lib/x86_64-linux-gnu"
    "/usr/lib/x86_64-linux-gnu"  = "/usr/lib/x86_64-linux-gnu"
    "/lib/aarch64-linux-gnu"     = "/lib/aarch64-linux-gnu"
    "/usr/lib/aarch64-linux-gnu" = "/usr/lib/aarch64-linux-gnu"
    "/lib/ld-linux-aarch64.so.1" = "/lib/ld-linux-aarch64.so.1"
    "/etc/ld.so.cache"           = "/etc/ld.so.cache"
    "/etc/ssl/certs"             = "/etc/ssl/certs"
    "/etc/passwd"                = "/etc/passwd"
    "/etc/group"                 = "/etc/group"
    "/etc/nsswitch.conf"         = "/etc/nsswitch.conf"
    "/etc/hosts"                 = "/etc/hosts"
    "/etc/resolv.conf"           = "/etc/resolv.conf"
    "/run/systemd/resolve"       = "/run/systemd/resolve"
  }

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

# Mutual TLS to the servers (see nomad/server.hcl); this node's certificate
# names "client.<region>.nomad". The HTTP API asks a certificate of the
# agents' CA, as the servers' does.
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

# Exec tasks get no Linux capability at all: since Nomad 1.5.3 a task that
# runs as another user than root gets the driver's default set as ambient
# capabilities (SETUID, DAC_OVERRIDE, FOWNER, SYS_CHROOT, ...), with which
# a task running as nobody can setuid(0), pass the metadata guard's owner
# match and read any file. An empty allow list leaves every set empty,
# bounding set included, so that no program a task runs gains one, and a
# job that asks for one (cap_add) is refused.
plugin "exec" {
  config {
    allow_caps = []
  }
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

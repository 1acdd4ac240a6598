locals {
  # Instances carry this tag; Consul and Nomad find the servers through it
  # (cloud auto-join calls ec2:DescribeInstances with a tag filter).
  join_tag_key   = "SlmMeshJoin"
  join_tag_value = "${var.cluster_name}-server"
  retry_join     = "provider=aws region=${var.region} tag_key=${local.join_tag_key} tag_value=${local.join_tag_value}${var.ec2_endpoint == "" ? "" : " endpoint=${var.ec2_endpoint}"}"

  # Every server votes: the first leader is elected once all of them have
  # joined, and the cluster survives the loss of (server_count - 1) / 2.
  bootstrap_expect = var.server_count

  # The agent configurations are the project's own, kept at the repository
  # root in nomad/ and consul/ (they document their placeholders at the top).
  agent_config_dir = "${path.module}/../../.."
  templates        = "${path.module}/templates"

  # nomad/client.hcl declares the slm-model-cache host volume at this path on
  # every client, and a Nomad client refuses to start when a host volume's
  # directory is missing, so every client creates it (only inference nodes
  # fill it).
  model_cache_dir = "/opt/slm-mesh/models"

  # Mount point of a server's data volume; nomad/server.hcl and
  # consul/server.hcl keep their data_dir under it.
  server_data_dir = "/opt/slm-data"

  # Where cloud-init writes a server's data volume id (server_user_data),
  # by which data-volume.sh finds the volume. On a Xen instance, whose disks
  # carry no volume id, the volume is the attachment's device /dev/sdX, which
  # the kernel names /dev/xvdX.
  data_volume_id_file = "/etc/slm-mesh/data-volume-id"
  xen_data_device     = replace(var.server_data_device_name, "/dev/sd", "/dev/xvd")

  # One kind of node per role. Clients carry meta.slm_role, which the jobs
  # constrain on: one role per node, so the inference never shares a node
  # with a caller or a gateway.
  node_kinds = {
    server    = { server = true, node_role = null }
    gateway   = { server = false, node_role = "gateway" }
    caller    = { server = false, node_role = "caller" }
    inference = { server = false, node_role = "inference" }
  }
  client_kinds = [for kind, k in local.node_kinds : kind if !k.server]

  # --- Secrets in SSM -----------------------------------------------------------
  # Every secret, by parameter name under ssm_prefix. client/* is readable by
  # every node, server/* by the servers only (terraform/aws's IAM policies
  # follow these two prefixes). The CA's private key is not among them: it
  # stays in the Terraform state.
  ssm_parameters = {
    "client/tls/ca.pem"                = var.secrets.tls.ca_cert
    "client/tls/consul.pem"            = var.secrets.tls.consul_client_cert
    "client/tls/consul-key.pem"        = var.secrets.tls.consul_client_key
    "client/tls/nomad.pem"             = var.secrets.tls.nomad_client_cert
    "client/tls/nomad-key.pem"         = var.secrets.tls.nomad_client_key
    "client/consul/gossip-key"         = var.secrets.consul_gossip_key
    "client/consul/agent-token"        = var.secrets.consul_agent
    "client/consul/default-token"      = var.secrets.consul_default
    "client/consul/nomad-token"        = var.secrets.consul_nomad
    "server/tls/consul.pem"            = var.secrets.tls.consul_server_cert
    "server/tls/consul-key.pem"        = var.secrets.tls.consul_server_key
    "server/tls/nomad.pem"             = var.secrets.tls.nomad_server_cert
    "server/tls/nomad-key.pem"         = var.secrets.tls.nomad_server_key
    "server/nomad/gossip-key"          = var.secrets.nomad_gossip_key
    "server/consul/management-token"   = var.secrets.consul_management
    "server/nomad/management-token"    = var.secrets.nomad_management
    "server/rpc/caller-token"          = var.secrets.caller_token
    "server/rpc/inference-token"       = var.secrets.inference_token
    "server/api-keys"                  = join(",", var.secrets.api_keys)
    "server/rpc/tls/ca.pem"            = var.secrets.tls.rpc_ca_cert
    "server/rpc/tls/caller.pem"        = var.secrets.tls.rpc_caller_cert
    "server/rpc/tls/caller-key.pem"    = var.secrets.tls.rpc_caller_key
    "server/rpc/tls/inference.pem"     = var.secrets.tls.rpc_inference_cert
    "server/rpc/tls/inference-key.pem" = var.secrets.tls.rpc_inference_key
  }

  # --- Rendered files -------------------------------------------------------------
  consul_server = templatefile("${local.agent_config_dir}/consul/server.hcl", {
    datacenter       = var.datacenter
    bootstrap_expect = local.bootstrap_expect
    retry_join       = local.retry_join
  })

  consul_client = templatefile("${local.agent_config_dir}/consul/client.hcl", {
    datacenter = var.datacenter
    retry_join = local.retry_join
  })

  nomad_server = templatefile("${local.agent_config_dir}/nomad/server.hcl", {
    datacenter       = var.datacenter
    region           = var.nomad_region
    bootstrap_expect = local.bootstrap_expect
    retry_join       = local.retry_join
  })

  nomad_client = {
    for kind in local.client_kinds : kind => templatefile("${local.agent_config_dir}/nomad/client.hcl", {
      datacenter = var.datacenter
      region     = var.nomad_region
      retry_join = local.retry_join
      node_role  = local.node_kinds[kind].node_role
    })
  }

  # Units each kind enables, then starts, at the end of install.sh; their
  # own dependencies order them.
  units = {
    for kind, k in local.node_kinds : kind => concat(
      k.server ? [] : ["slm-imds-guard.service"],
      ["slm-secrets.service", "consul.service", "nomad.service"],
      k.server ? ["slm-acl-bootstrap.service", "slm-snapshot.timer"] : ["slm-drain.service"],
    )
  }

  install_script = {
    for kind, k in local.node_kinds : kind => templatefile("${local.templates}/install.sh.tftpl", {
      nomad_version       = var.nomad_version
      consul_version      = var.consul_version
      apt_key_fingerprint = var.hashicorp_apt_key_fingerprint
      model_cache_dir     = local.model_cache_dir
      server              = k.server
      data_dir            = local.server_data_dir
      units               = local.units[kind]
    })
  }

  secrets_script = {
    for kind, k in local.node_kinds : kind => templatefile("${local.templates}/secrets.sh.tftpl", {
      region     = var.region
      ssm_prefix = local.ssm_prefix
      server     = k.server
    })
  }

  data_volume_script = templatefile("${local.templates}/data-volume.sh.tftpl", {
    data_dir            = local.server_data_dir
    data_volume_id_file = local.data_volume_id_file
    xen_data_device     = local.xen_data_device
  })

  acl_bootstrap_script = templatefile("${local.templates}/acl-bootstrap.sh.tftpl", {
    region          = var.region
    ssm_prefix      = local.ssm_prefix
    operator_policy = file("${local.agent_config_dir}/nomad/operator.policy.hcl")
    drain           = local.drain_bootstrap
  })

  snapshot_script = templatefile("${local.templates}/snapshot.sh.tftpl", {
    region       = var.region
    ssm_prefix   = local.ssm_prefix
    bucket       = var.artifacts_bucket
    cluster_name = var.cluster_name
  })

  # On servers, both agents require the data volume's mount.
  data_volume_dropin = templatefile("${local.templates}/systemd/data-volume.conf.tftpl", {
    data_dir = local.server_data_dir
  })

  # Files each node gets. Agent configs are staged under /etc/slm-mesh and
  # moved into /etc/{consul,nomad}.d by install.sh, after the packages are
  # installed: the packages ship a default config (nomad.hcl enables a server
  # and a client on every node) that must not survive.
  node_files = {
    for kind, k in local.node_kinds : kind => concat(
      k.server ? [
        { path = "/etc/slm-mesh/consul/server.hcl", permissions = "0640", content = local.consul_server },
        { path = "/etc/slm-mesh/nomad/server.hcl", permissions = "0640", content = local.nomad_server },
        ] : [
        { path = "/etc/slm-mesh/consul/client.hcl", permissions = "0640", content = local.consul_client },
        { path = "/etc/slm-mesh/nomad/client.hcl", permissions = "0640", content = local.nomad_client[kind] },
        { path = "/etc/systemd/system/slm-imds-guard.service", permissions = "0644", content = file("${local.templates}/systemd/slm-imds-guard.service") },
        { path = "/opt/slm-mesh/imds-guard.sh", permissions = "0700", content = file("${local.templates}/imds-guard.sh") },
        { path = "/opt/slm-mesh/cpu-meta.sh", permissions = "0700", content = file("${local.templates}/cpu-meta.sh") },
      ],
      [
        { path = "/etc/systemd/system/consul.service", permissions = "0644", content = file("${local.templates}/systemd/consul.service") },
        { path = "/etc/systemd/system/nomad.service", permissions = "0644", content = file("${local.templates}/systemd/nomad.service") },
        { path = "/etc/systemd/system/slm-secrets.service", permissions = "0644", content = file("${local.templates}/systemd/slm-secrets.service") },
        { path = "/opt/slm-mesh/secrets.sh", permissions = "0700", content = local.secrets_script[kind] },
        { path = "/opt/slm-mesh/install.sh", permissions = "0700", content = local.install_script[kind] },
      ],
      k.server ? [
        { path = "/opt/slm-mesh/data-volume.sh", permissions = "0700", content = local.data_volume_script },
        { path = "/etc/systemd/system/consul.service.d/slm-data-volume.conf", permissions = "0644", content = local.data_volume_dropin },
        { path = "/etc/systemd/system/nomad.service.d/slm-data-volume.conf", permissions = "0644", content = local.data_volume_dropin },
        { path = "/etc/systemd/system/slm-acl-bootstrap.service", permissions = "0644", content = file("${local.templates}/systemd/slm-acl-bootstrap.service") },
        { path = "/opt/slm-mesh/acl-bootstrap.sh", permissions = "0700", content = local.acl_bootstrap_script },
        { path = "/etc/systemd/system/slm-snapshot.service", permissions = "0644", content = file("${local.templates}/systemd/slm-snapshot.service") },
        { path = "/etc/systemd/system/slm-snapshot.timer", permissions = "0644", content = templatefile("${local.templates}/systemd/slm-snapshot.timer.tftpl", { schedule = var.snapshot_schedule }) },
        { path = "/opt/slm-mesh/snapshot.sh", permissions = "0700", content = local.snapshot_script },
      ] : [],
      try(local.drain_files[kind], []),
    )
  }

  user_data = {
    for kind, k in local.node_kinds : kind => templatefile("${local.templates}/cloud-init.yaml.tftpl", {
      cluster_name = var.cluster_name
      kind         = kind
      files        = local.node_files[kind]
    })
  }

  # What each server boots with: the server kind's files and the id of its
  # own data volume. The kind's document (user_data.server) names no volume,
  # and a server booted from it leaves its agents stopped.
  server_user_data = {
    for name, volume_id in var.server_data_volume_ids : name => templatefile("${local.templates}/cloud-init.yaml.tftpl", {
      cluster_name = var.cluster_name
      kind         = "server (${name})"
      files = concat(local.node_files.server, [
        { path = local.data_volume_id_file, permissions = "0644", content = "${volume_id}\n" },
      ])
    })
  }

  # Every secret value, for the check that none reached a user data document.
  secret_values = concat(values(local.ssm_parameters), var.secrets.api_keys)
}

locals {
  # Instances carry this tag; Consul and Nomad find the servers through it
  # (cloud auto-join calls ec2:DescribeInstances with a tag filter).
  join_tag_key   = "SlmMeshJoin"
  join_tag_value = "${var.cluster_name}-server"
  retry_join     = "provider=aws region=${var.region} tag_key=${local.join_tag_key} tag_value=${local.join_tag_value}"

  # One server on the gateway node. Raising this needs more server nodes; see
  # terraform/aws/README.md.
  bootstrap_expect = 1

  # The agent configurations are the project's own, kept at the repository
  # root in nomad/ and consul/ (they document their placeholders at the top).
  # The job constraints test meta.slm_role with set_contains.
  agent_config_dir = "${path.module}/../../.."
  templates        = "${path.module}/templates"

  # nomad/client.hcl declares the slm-model-cache host volume at this path on
  # every client, and a Nomad client refuses to start when a host volume's
  # directory is missing, so every node creates it (only inference nodes
  # fill it).
  model_cache_dir = "/opt/slm-mesh/models"

  node_kinds = {
    gateway = {
      server    = true
      node_role = "gateway"
      binaries  = ["gateway"]
    }
    caller = {
      server    = false
      node_role = "private"
      binaries  = ["caller", "inference"]
    }
    inference = {
      server    = false
      node_role = "private"
      binaries  = ["caller", "inference"]
    }
  }

  consul_server = templatefile("${local.agent_config_dir}/consul/server.hcl", {
    datacenter       = var.datacenter
    bootstrap_expect = local.bootstrap_expect
    retry_join       = local.retry_join
    gossip_key       = var.consul_gossip_key
    management_token = var.tokens.consul_management
    agent_token      = var.tokens.consul_agent
  })

  # What consul/server.hcl leaves to the deployment: the default token that
  # lets the gateway job on this node read its peers without a token of its
  # own, and the VPC address for allowed_admin_cidrs.
  consul_server_extra = templatefile("${local.templates}/consul-server-extra.hcl.tftpl", {
    default_token = var.tokens.consul_default
    listen_vpc    = length(var.allowed_admin_cidrs) > 0
  })

  consul_client = templatefile("${local.agent_config_dir}/consul/client.hcl", {
    datacenter    = var.datacenter
    retry_join    = local.retry_join
    gossip_key    = var.consul_gossip_key
    agent_token   = var.tokens.consul_agent
    default_token = var.tokens.consul_default
  })

  nomad_server = templatefile("${local.agent_config_dir}/nomad/server.hcl", {
    datacenter       = var.datacenter
    region           = var.nomad_region
    bootstrap_expect = local.bootstrap_expect
    retry_join       = local.retry_join
    gossip_key       = var.nomad_gossip_key
    consul_token     = var.tokens.consul_nomad
  })

  nomad_client = {
    for kind, k in local.node_kinds : kind => templatefile("${local.agent_config_dir}/nomad/client.hcl", {
      datacenter   = var.datacenter
      region       = var.nomad_region
      retry_join   = local.retry_join
      node_role    = k.node_role
      consul_token = var.tokens.consul_nomad
    })
  }

  install_script = {
    for kind, k in local.node_kinds : kind => templatefile("${local.templates}/install.sh.tftpl", {
      nomad_version       = var.nomad_version
      consul_version      = var.consul_version
      apt_key_fingerprint = var.hashicorp_apt_key_fingerprint
      model_cache_dir     = local.model_cache_dir
      binaries            = { for name, b in var.service_binaries : name => b if contains(k.binaries, name) }
    })
  }

  acl_bootstrap_script = templatefile("${local.templates}/acl-bootstrap.sh.tftpl", {
    consul_management_token = var.tokens.consul_management
    consul_agent_token      = var.tokens.consul_agent
    consul_default_token    = var.tokens.consul_default
    consul_nomad_token      = var.tokens.consul_nomad
    nomad_management_token  = var.tokens.nomad_management
    rpc_token               = var.tokens.rpc
  })

  # Files each node gets. Agent configs are staged under /etc/slm-mesh and
  # moved into /etc/{consul,nomad}.d by install.sh, after the packages are
  # installed: the packages ship a default config (nomad.hcl enables a server
  # and a client on every node) that must not survive.
  node_files = {
    for kind, k in local.node_kinds : kind => concat(
      k.server ? [
        { path = "/etc/slm-mesh/consul/server.hcl", permissions = "0640", content = local.consul_server },
        { path = "/etc/slm-mesh/consul/zz-deployment.hcl", permissions = "0640", content = local.consul_server_extra },
        { path = "/etc/slm-mesh/nomad/server.hcl", permissions = "0640", content = local.nomad_server },
        ] : [
        { path = "/etc/slm-mesh/consul/client.hcl", permissions = "0640", content = local.consul_client },
      ],
      [
        { path = "/etc/slm-mesh/nomad/client.hcl", permissions = "0640", content = local.nomad_client[kind] },
        { path = "/etc/systemd/system/consul.service", permissions = "0644", content = file("${local.templates}/systemd/consul.service") },
        { path = "/etc/systemd/system/nomad.service", permissions = "0644", content = file("${local.templates}/systemd/nomad.service") },
        { path = "/opt/slm-mesh/install.sh", permissions = "0700", content = local.install_script[kind] },
      ],
      k.server ? [
        { path = "/etc/systemd/system/slm-acl-bootstrap.service", permissions = "0644", content = file("${local.templates}/systemd/slm-acl-bootstrap.service") },
        { path = "/opt/slm-mesh/acl-bootstrap.sh", permissions = "0700", content = local.acl_bootstrap_script },
      ] : [],
    )
  }

  user_data = {
    for kind, k in local.node_kinds : kind => templatefile("${local.templates}/cloud-init.yaml.tftpl", {
      cluster_name = var.cluster_name
      kind         = kind
      server       = k.server
      files        = local.node_files[kind]
    })
  }
}

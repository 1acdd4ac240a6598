# Offline tests of the provider-free plan: `tofu test` in this directory.
# Every run is a plan of a module without resources, so nothing is created
# and no provider or network is needed.

variables {
  region = "eu-west-1"

  # Recognisable fake secrets, so the tests can tell where each one lands.
  consul_gossip_key = "Q09OU1VMLWdvc3NpcC1rZXktZm9yLXRlc3RzLTMyYiE="
  nomad_gossip_key  = "Tk9NQUQtZ29zc2lwLWtleS1mb3ItdGVzdHMtMzJiYiE="
  tokens = {
    consul_management = "11111111-1111-4111-8111-111111111111"
    consul_agent      = "22222222-2222-4222-8222-222222222222"
    consul_default    = "55555555-5555-4555-8555-555555555555"
    consul_nomad      = "33333333-3333-4333-8333-333333333333"
    nomad_management  = "44444444-4444-4444-8444-444444444444"
    rpc               = "rpcTOKENrpcTOKENrpcTOKENrpcTOKEN0123"
  }
}

run "address_plan" {
  command = plan

  assert {
    condition     = output.network.vpc_cidr == "10.20.0.0/16" && output.network.public_subnet_cidr == "10.20.0.0/24" && output.network.private_subnet_cidr == "10.20.1.0/24"
    error_message = "The default address plan changed."
  }

  # Independent of the module's own arithmetic: both subnets' first and last
  # addresses fall inside the VPC, and no address of one is in the other.
  assert {
    condition = alltrue([
      for c in [output.network.public_subnet_cidr, output.network.private_subnet_cidr] :
      cidrhost("${cidrhost(c, 0)}/16", 0) == "10.20.0.0" && cidrhost("${cidrhost(c, -1)}/16", 0) == "10.20.0.0"
    ])
    error_message = "A subnet lies outside the VPC."
  }

  assert {
    condition     = cidrhost("${cidrhost(output.network.private_subnet_cidr, 0)}/24", 0) != cidrhost(output.network.public_subnet_cidr, 0)
    error_message = "The private subnet overlaps the public one."
  }
}

run "firewall_defaults" {
  command = plan

  # No ingress rule may reach a Nomad or Consul port from 0.0.0.0/0 or ::/0.
  assert {
    condition = length([
      for key, r in output.security_group_rules : key
      if r.type == "ingress" && (contains(r.cidr_blocks, "0.0.0.0/0") || contains(r.cidr_blocks, "::/0")) && anytrue([
        for p in values(output.cluster_ports) :
        (r.protocol == "-1" || r.protocol == p.protocol) && (r.protocol == "-1" || (r.from_port <= p.to && r.to_port >= p.from))
      ])
    ]) == 0
    error_message = "A cluster port is open to the internet."
  }

  # The cluster ports the issue names are all in the list being checked.
  assert {
    condition = alltrue([
      for port in [4646, 4647, 4648, 8300, 8301, 8302, 8500, 8600] :
      anytrue([for p in values(output.cluster_ports) : p.from <= port && p.to >= port])
    ])
    error_message = "cluster_ports misses a Nomad or Consul port."
  }

  # SSH is closed when allowed_ssh_cidrs is empty (the default).
  assert {
    condition = length([
      for key, r in output.security_group_rules : key
      if r.type == "ingress" && (r.protocol == "-1" || (r.protocol == "tcp" && r.from_port <= 22 && r.to_port >= 22))
    ]) == 0
    error_message = "Port 22 is open although allowed_ssh_cidrs is empty."
  }

  # Admin APIs are not exposed beyond the VPC by default.
  assert {
    condition = alltrue([
      for key, r in output.security_group_rules :
      r.type != "ingress" || key == "gateway-ingress-api" || r.cidr_blocks == tolist(["10.20.0.0/16"])
    ])
    error_message = "Only the API rule may admit traffic from outside the VPC by default."
  }

  assert {
    condition = (
      output.security_group_rules["gateway-ingress-api"].from_port == 3111 &&
      output.security_group_rules["gateway-ingress-api"].to_port == 3111 &&
      output.security_group_rules["gateway-ingress-api"].protocol == "tcp"
    )
    error_message = "The API rule must open exactly tcp/3111."
  }

  # Private nodes accept traffic from inside the VPC only.
  assert {
    condition = alltrue(flatten([
      for key, r in output.security_group_rules : [
        for c in r.cidr_blocks : cidrhost("${cidrhost(c, 0)}/16", 0) == "10.20.0.0" && tonumber(split("/", c)[1]) >= 16
      ] if r.sg == "private" && r.type == "ingress"
    ]))
    error_message = "A private-node rule admits traffic from outside the VPC."
  }

  # Only the API and the nodes' web egress are marked as reaching the
  # internet (terraform/aws exempts exactly those from tfsec's rule).
  assert {
    condition = sort([for key, r in output.security_group_rules : key if r.internet]) == sort([
      "gateway-ingress-api", "gateway-egress-http", "gateway-egress-https", "private-egress-http", "private-egress-https",
    ])
    error_message = "The set of internet-facing rules changed."
  }

  assert {
    condition = alltrue([
      for key, r in output.security_group_rules : r.internet || alltrue([for c in r.cidr_blocks : c != "0.0.0.0/0" && c != "::/0"])
    ])
    error_message = "A rule not marked internet-facing is open to the internet."
  }

  # Callers and inference instances listen on Nomad dynamic ports.
  assert {
    condition     = output.security_group_rules["private-ingress-vpc-dynamic-ports"].from_port == 20000 && output.security_group_rules["private-ingress-vpc-dynamic-ports"].to_port == 32000
    error_message = "The private nodes must accept Nomad's dynamic port range from the VPC."
  }
}

run "firewall_with_ssh_and_admin" {
  command = plan

  variables {
    allowed_ssh_cidrs   = ["203.0.113.0/24"]
    allowed_admin_cidrs = ["198.51.100.7/32"]
    allowed_api_cidrs   = ["192.0.2.0/24"]
  }

  assert {
    condition     = output.security_group_rules["gateway-ingress-ssh"].cidr_blocks == tolist(["203.0.113.0/24"])
    error_message = "SSH to the gateway must come from allowed_ssh_cidrs only."
  }

  assert {
    condition     = output.security_group_rules["private-ingress-ssh-from-public-subnet"].cidr_blocks == tolist(["10.20.0.0/24"])
    error_message = "SSH to private nodes must come only from the public subnet (jump host)."
  }

  assert {
    condition = (
      output.security_group_rules["gateway-ingress-admin-nomad-http"].from_port == 4646 &&
      output.security_group_rules["gateway-ingress-admin-consul-http"].from_port == 8500 &&
      output.security_group_rules["gateway-ingress-admin-nomad-http"].cidr_blocks == tolist(["198.51.100.7/32"])
    )
    error_message = "Admin rules must open 4646 and 8500 to allowed_admin_cidrs."
  }

  assert {
    condition     = output.security_group_rules["gateway-ingress-api"].cidr_blocks == tolist(["192.0.2.0/24"])
    error_message = "The API rule must follow allowed_api_cidrs."
  }
}

run "templates_render" {
  command = plan

  # Each document is YAML that cloud-init can read and, compressed as the
  # instances get it, fits EC2's 16 KiB limit.
  assert {
    condition = alltrue([
      for kind, ud in output.user_data :
      startswith(ud, "#cloud-config\n") && can(yamldecode(ud)) && length(output.user_data_base64gzip[kind]) < 16384
    ])
    error_message = "A user_data document is not valid cloud-config YAML within the 16 KiB limit."
  }

  # Nothing was left unrendered (an escaped or misspelt placeholder).
  assert {
    condition = alltrue(flatten([
      for kind, files in output.agent_configs : [
        for path, content in files : !strcontains(content, "$${") && !strcontains(content, "%%{")
      ]
    ]))
    error_message = "A rendered file still contains template syntax."
  }

  # What cloud-init writes is byte for byte what the templates rendered.
  assert {
    condition = alltrue([
      for kind, ud in output.user_data :
      { for f in yamldecode(ud).write_files : f.path => f.content } == output.agent_configs[kind]
    ])
    error_message = "cloud-init's write_files differ from the rendered agent configs."
  }

  # Every placeholder's value arrived where it belongs (the files come from
  # nomad/ and consul/ at the repository root).
  assert {
    condition = alltrue([
      for kind in ["caller", "inference"] : alltrue([
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/consul/client.hcl"], "encrypt     = \"${var.consul_gossip_key}\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/consul/client.hcl"], "agent   = \"${var.tokens.consul_agent}\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/consul/client.hcl"], "default = \"${var.tokens.consul_default}\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/consul/client.hcl"], "datacenter  = \"dc1\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/consul/client.hcl"], "retry_join  = [\"provider=aws region=eu-west-1 tag_key=SlmMeshJoin tag_value=slm-mesh-server\"]"),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "slm_role = \"private\""),
      ])
    ])
    error_message = "A placeholder's value is missing from a private node's agent config."
  }

  assert {
    condition = alltrue([
      for kind in ["gateway", "caller", "inference"] : alltrue([
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "token   = \"${var.tokens.consul_nomad}\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "region     = \"global\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "datacenter = \"dc1\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "retry_join = [\"provider=aws region=eu-west-1 tag_key=SlmMeshJoin tag_value=slm-mesh-server\"]"),
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/install.sh"], "\"consul=1.21.2-1\" \"nomad=1.10.3-1\""),
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/install.sh"], "!= \"798AEC654E5C15428C8E42EEAA16FCBCA621E701\""),
      ])
    ])
    error_message = "A placeholder's value is missing from a Nomad client config or install script."
  }

  assert {
    condition = alltrue([
      strcontains(output.agent_configs.gateway["/etc/slm-mesh/consul/server.hcl"], "initial_management = \"${var.tokens.consul_management}\""),
      strcontains(output.agent_configs.gateway["/etc/slm-mesh/consul/server.hcl"], "agent              = \"${var.tokens.consul_agent}\""),
      strcontains(output.agent_configs.gateway["/etc/slm-mesh/consul/server.hcl"], "encrypt          = \"${var.consul_gossip_key}\""),
      strcontains(output.agent_configs.gateway["/etc/slm-mesh/consul/server.hcl"], "bootstrap_expect = 1"),
      strcontains(output.agent_configs.gateway["/etc/slm-mesh/consul/zz-deployment.hcl"], "default = \"${var.tokens.consul_default}\""),
      !strcontains(output.agent_configs.gateway["/etc/slm-mesh/consul/zz-deployment.hcl"], "client_addr"),
      strcontains(output.agent_configs.gateway["/etc/slm-mesh/nomad/server.hcl"], "encrypt          = \"${var.nomad_gossip_key}\""),
      strcontains(output.agent_configs.gateway["/etc/slm-mesh/nomad/server.hcl"], "token   = \"${var.tokens.consul_nomad}\""),
      strcontains(output.agent_configs.gateway["/etc/slm-mesh/nomad/client.hcl"], "slm_role = \"gateway\""),
      strcontains(output.agent_configs.gateway["/opt/slm-mesh/acl-bootstrap.sh"], "CONSUL_HTTP_TOKEN=\"${var.tokens.consul_management}\""),
      strcontains(output.agent_configs.gateway["/opt/slm-mesh/acl-bootstrap.sh"], "consul_token \"${var.tokens.consul_agent}\" slm-agent"),
      strcontains(output.agent_configs.gateway["/opt/slm-mesh/acl-bootstrap.sh"], "consul_token \"${var.tokens.consul_default}\" slm-discovery-read"),
      strcontains(output.agent_configs.gateway["/opt/slm-mesh/acl-bootstrap.sh"], "consul_token \"${var.tokens.consul_nomad}\" slm-nomad"),
      strcontains(output.agent_configs.gateway["/opt/slm-mesh/acl-bootstrap.sh"], "NOMAD_TOKEN=\"${var.tokens.nomad_management}\""),
      strcontains(output.agent_configs.gateway["/opt/slm-mesh/acl-bootstrap.sh"], "rpc_token=\"${var.tokens.rpc}\""),
    ])
    error_message = "A server-side placeholder's value is missing."
  }

  # The directory behind nomad/client.hcl's slm-model-cache host volume is
  # created on every node (a client will not start without it).
  assert {
    condition = alltrue([
      for kind in ["gateway", "caller", "inference"] :
      length(regexall("host_volume \"slm-model-cache\" \\{\\s+path\\s+= \"/opt/slm-mesh/models\"", output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"])) == 1 &&
      strcontains(output.agent_configs[kind]["/opt/slm-mesh/install.sh"], "-m 0750 \"/opt/slm-mesh/models\"")
    ])
    error_message = "install.sh must create the slm-model-cache directory that nomad/client.hcl declares."
  }

  # Servers only on the gateway; private nodes never see management secrets.
  assert {
    condition = alltrue([
      for kind in ["caller", "inference"] :
      !contains(keys(output.agent_configs[kind]), "/etc/slm-mesh/consul/server.hcl") &&
      !contains(keys(output.agent_configs[kind]), "/opt/slm-mesh/acl-bootstrap.sh") &&
      !contains(keys(output.agent_configs[kind]), "/etc/slm-mesh/nomad/server.hcl") &&
      !strcontains(output.user_data[kind], var.tokens.consul_management) &&
      !strcontains(output.user_data[kind], var.tokens.nomad_management) &&
      !strcontains(output.user_data[kind], var.tokens.rpc) &&
      !strcontains(output.user_data[kind], var.nomad_gossip_key)
    ])
    error_message = "A private node would get server configuration or a management secret."
  }

  assert {
    condition = (
      yamldecode(output.user_data.gateway).runcmd == [["bash", "/opt/slm-mesh/install.sh"], ["systemctl", "enable", "--now", "--no-block", "slm-acl-bootstrap.service"]] &&
      yamldecode(output.user_data.inference).runcmd == [["bash", "/opt/slm-mesh/install.sh"]]
    )
    error_message = "cloud-init must install everywhere and bootstrap ACLs on the server only."
  }

  assert {
    condition     = !strcontains(output.agent_configs.caller["/opt/slm-mesh/install.sh"], "/usr/local/bin/")
    error_message = "No binary is downloaded when service_binaries is empty."
  }
}

run "admin_cidrs_open_consul_http_on_vpc_address" {
  command = plan

  variables {
    allowed_admin_cidrs = ["198.51.100.7/32"]
  }

  assert {
    condition     = strcontains(output.agent_configs.gateway["/etc/slm-mesh/consul/zz-deployment.hcl"], "client_addr = \"127.0.0.1 {{ GetPrivateIP }}\"")
    error_message = "With allowed_admin_cidrs the Consul HTTP API must also listen on the VPC address."
  }
}

run "service_binaries" {
  command = plan

  variables {
    service_binaries = {
      gateway   = { url = "https://example.com/gateway", sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }
      inference = { url = "https://example.com/inference", sha256 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" }
    }
  }

  assert {
    condition = (
      strcontains(output.agent_configs.gateway["/opt/slm-mesh/install.sh"], "echo \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  /usr/local/bin/gateway.part\" | sha256sum -c -") &&
      !strcontains(output.agent_configs.gateway["/opt/slm-mesh/install.sh"], "/usr/local/bin/inference") &&
      strcontains(output.agent_configs.inference["/opt/slm-mesh/install.sh"], "\"https://example.com/inference\"") &&
      !strcontains(output.agent_configs.inference["/opt/slm-mesh/install.sh"], "/usr/local/bin/gateway")
    )
    error_message = "Each node must install exactly its binaries, checked against their sha256."
  }
}

# --- Inputs that must be refused -----------------------------------------------

run "rejects_private_subnet_outside_vpc" {
  command = plan

  variables {
    private_subnet_cidr = "10.30.1.0/24"
  }

  expect_failures = [output.network]
}

run "rejects_overlapping_subnets" {
  command = plan

  variables {
    public_subnet_cidr = "10.20.0.0/23"
  }

  expect_failures = [output.network]
}

run "rejects_world_admin_access" {
  command = plan

  variables {
    allowed_admin_cidrs = ["0.0.0.0/0"]
  }

  expect_failures = [var.allowed_admin_cidrs]
}

run "rejects_world_ssh" {
  command = plan

  variables {
    allowed_ssh_cidrs = ["0.0.0.0/0"]
  }

  expect_failures = [var.allowed_ssh_cidrs]
}

run "rejects_bad_cidr" {
  command = plan

  variables {
    vpc_cidr = "10.20.0.0/33"
  }

  expect_failures = [var.vpc_cidr]
}

run "rejects_zero_inference_nodes" {
  command = plan

  variables {
    inference_count = 0
  }

  expect_failures = [var.inference_count]
}

run "rejects_bad_region" {
  command = plan

  variables {
    region = "Europe"
  }

  expect_failures = [var.region]
}

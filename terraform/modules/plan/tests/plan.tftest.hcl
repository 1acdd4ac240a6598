# Offline tests of the provider-free plan: `tofu test` in this directory.
# Every run is a plan of a module without resources, so nothing is created
# and no provider or network is needed. terraform/aws builds its security
# groups, load balancer listeners, SSM parameters, IAM names and user data
# from this module's outputs, so what is asserted here is what AWS gets.
# terraform/aws/tests tests the resources themselves against a mocked AWS
# provider, where one is installed (it needs the provider's schema, which
# only the provider registry serves; CI cannot reach it).

variables {
  region = "eu-west-1"

  # Recognisable fake secrets, so the tests can tell where each one lands.
  secrets = {
    consul_gossip_key = "Q09OU1VMLWdvc3NpcC1rZXktZm9yLXRlc3RzLTMyYiE="
    nomad_gossip_key  = "Tk9NQUQtZ29zc2lwLWtleS1mb3ItdGVzdHMtMzJiYiE="
    consul_management = "11111111-1111-4111-8111-111111111111"
    consul_agent      = "22222222-2222-4222-8222-222222222222"
    consul_default    = "55555555-5555-4555-8555-555555555555"
    consul_nomad      = "33333333-3333-4333-8333-333333333333"
    nomad_management  = "44444444-4444-4444-8444-444444444444"
    rpc_token         = "rpcTOKENrpcTOKENrpcTOKENrpcTOKEN0123"
    api_keys          = ["apiKEYoneAPIkeyONEapiKEYoneAPIkey01", "apiKEYtwoAPIkeyTWOapiKEYtwoAPIkey02"]
    tls = {
      ca_cert            = "-----BEGIN CERTIFICATE-----\nFAKE-CA-CERT\n-----END CERTIFICATE-----\n"
      nomad_server_cert  = "-----BEGIN CERTIFICATE-----\nFAKE-NOMAD-SERVER-CERT\n-----END CERTIFICATE-----\n"
      nomad_server_key   = "-----BEGIN PRIVATE KEY-----\nFAKE-NOMAD-SERVER-KEY\n-----END PRIVATE KEY-----\n"
      nomad_client_cert  = "-----BEGIN CERTIFICATE-----\nFAKE-NOMAD-CLIENT-CERT\n-----END CERTIFICATE-----\n"
      nomad_client_key   = "-----BEGIN PRIVATE KEY-----\nFAKE-NOMAD-CLIENT-KEY\n-----END PRIVATE KEY-----\n"
      consul_server_cert = "-----BEGIN CERTIFICATE-----\nFAKE-CONSUL-SERVER-CERT\n-----END CERTIFICATE-----\n"
      consul_server_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-CONSUL-SERVER-KEY\n-----END PRIVATE KEY-----\n"
      consul_client_cert = "-----BEGIN CERTIFICATE-----\nFAKE-CONSUL-CLIENT-CERT\n-----END CERTIFICATE-----\n"
      consul_client_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-CONSUL-CLIENT-KEY\n-----END PRIVATE KEY-----\n"
    }
  }
}

run "address_plan" {
  command = plan

  assert {
    condition = (
      output.network.vpc_cidr == "10.20.0.0/16" &&
      output.network.public_subnet_cidrs == tolist(["10.20.0.0/24", "10.20.1.0/24"]) &&
      output.network.private_subnet_cidrs == tolist(["10.20.10.0/24", "10.20.11.0/24"])
    )
    error_message = "The default address plan changed."
  }

  # Independent of the module's own arithmetic: every subnet's first and
  # last addresses fall inside the VPC, and no two subnets share a network.
  assert {
    condition = alltrue([
      for c in concat(output.network.public_subnet_cidrs, output.network.private_subnet_cidrs) :
      cidrhost("${cidrhost(c, 0)}/16", 0) == "10.20.0.0" && cidrhost("${cidrhost(c, -1)}/16", 0) == "10.20.0.0"
    ])
    error_message = "A subnet lies outside the VPC."
  }

  assert {
    condition     = length(distinct([for c in concat(output.network.public_subnet_cidrs, output.network.private_subnet_cidrs) : cidrhost("${cidrhost(c, 0)}/24", 0)])) == 4
    error_message = "Two subnets overlap."
  }
}

# --- Exposure ---------------------------------------------------------------------

run "firewall" {
  command = plan

  # Regression: a security group admitting 0.0.0.0/0 (or ::/0) on anything
  # other than the load balancer's tcp/443 and tcp/80.
  assert {
    condition = length([
      for key, r in output.security_group_rules : key
      if r.type == "ingress" && (contains(r.cidr_blocks, "0.0.0.0/0") || contains(r.cidr_blocks, "::/0")) && !(
        r.sg == "alb" && r.protocol == "tcp" && r.from_port == r.to_port && contains([443, 80], r.from_port)
      )
    ]) == 0
    error_message = "A security group admits the internet on something other than the load balancer's 443/80."
  }

  # Every description is in the characters EC2 accepts (the AWS provider
  # refuses the plan otherwise; an apostrophe once slipped in).
  assert {
    condition     = alltrue([for key, r in output.security_group_rules : can(regex("^[0-9A-Za-z_ .:/()#,@\\[\\]+=&;{}!$*-]*$", r.description)) && length(r.description) <= 255])
    error_message = "A security group rule's description has a character EC2 refuses."
  }

  # The load balancer admits exactly tcp/443 and tcp/80 and nothing else.
  assert {
    condition     = sort([for key, r in output.security_group_rules : "${r.protocol}/${r.from_port}-${r.to_port}" if r.sg == "alb" && r.type == "ingress"]) == sort(["tcp/443-443", "tcp/80-80"])
    error_message = "The load balancer must admit tcp/443 and tcp/80 only."
  }

  # The gateways' API port admits the load balancer's group only (so
  # /health and /metrics are reachable only from inside), and the load
  # balancer may send to nothing but that port.
  assert {
    condition = (
      output.security_group_rules["gateway-ingress-api-from-alb"].source_sg == "alb" &&
      length(output.security_group_rules["gateway-ingress-api-from-alb"].cidr_blocks) == 0 &&
      output.security_group_rules["gateway-ingress-api-from-alb"].from_port == 3111 &&
      output.security_group_rules["gateway-ingress-api-from-alb"].to_port == 3111 &&
      [for key, r in output.security_group_rules : key if r.sg == "alb" && r.type == "egress"] == ["alb-egress-api-to-gateways"] &&
      output.security_group_rules["alb-egress-api-to-gateways"].source_sg == "gateway"
    )
    error_message = "The gateways' API port must admit only the load balancer, which may reach only that port."
  }

  # Every node ingress rule comes from inside the VPC or from a group.
  assert {
    condition = alltrue(flatten([
      for key, r in output.security_group_rules : [
        for c in r.cidr_blocks : cidrhost("${cidrhost(c, 0)}/16", 0) == "10.20.0.0" && tonumber(split("/", c)[1]) >= 16
      ] if r.sg != "alb" && r.type == "ingress"
    ]))
    error_message = "A node admits traffic from outside the VPC."
  }

  # No rule reaches a Nomad or Consul port from outside the VPC, and every
  # port the issue names is in the list checked.
  assert {
    condition = alltrue([
      for port in [4646, 4647, 4648, 8300, 8301, 8302, 8500, 8600] :
      anytrue([for p in values(output.cluster_ports) : p.from <= port && p.to >= port])
    ])
    error_message = "cluster_ports misses a Nomad or Consul port."
  }

  # No SSH: operators use SSM Session Manager, which needs no inbound port.
  assert {
    condition = length([
      for key, r in output.security_group_rules : key
      if r.type == "ingress" && (r.protocol == "-1" || (r.protocol == "tcp" && r.from_port <= 22 && r.to_port >= 22))
    ]) == 0
    error_message = "Port 22 is open."
  }

  # Callers and inference instances listen on Nomad dynamic ports.
  assert {
    condition     = output.security_group_rules["client-ingress-vpc-dynamic-ports"].from_port == 20000 && output.security_group_rules["client-ingress-vpc-dynamic-ports"].to_port == 32000
    error_message = "The clients must accept Nomad's dynamic port range from the VPC."
  }
}

run "api_over_tls" {
  command = plan

  # Regression: the API listener not HTTPS, or a TLS policy that allows
  # TLS 1.0/1.1.
  assert {
    condition = (
      output.api.listeners.https.protocol == "HTTPS" &&
      output.api.listeners.https.port == 443 &&
      can(regex("^ELBSecurityPolicy-(TLS13-1-[23]-|TLS-1-2-|FS-1-2-)", output.api.listeners.https.ssl_policy))
    )
    error_message = "The API listener must be HTTPS on 443 with a TLS 1.2+ policy."
  }

  # Port 80 carries nothing but a redirect to HTTPS.
  assert {
    condition = (
      output.api.listeners.http.port == 80 &&
      output.api.listeners.http.redirect == { port = "443", protocol = "HTTPS", status_code = "HTTP_301" } &&
      !contains(keys(output.api.listeners.http), "forward")
    )
    error_message = "Port 80 must only redirect to HTTPS."
  }

  # Only the OpenAI routes reach the gateways; /health and /metrics get the
  # listener's fixed 404. The target group checks /health from inside.
  assert {
    condition = (
      output.api.forward_paths == ["/v1/*"] &&
      output.api.listeners.https.default_status == 404 &&
      output.api.target == { port = 3111, protocol = "HTTP", health_path = "/health" }
    )
    error_message = "Only /v1/* may be forwarded to the gateways; everything else must be a 404."
  }
}

run "rejects_old_tls_policy" {
  command = plan

  variables {
    api_tls_policy = "ELBSecurityPolicy-2016-08"
  }

  expect_failures = [var.api_tls_policy]
}

# --- Control plane ------------------------------------------------------------------

run "control_plane_defaults" {
  command = plan

  # Regression: bootstrap_expect < 3 by default.
  assert {
    condition = (
      output.server_count == 3 &&
      strcontains(output.agent_configs.server["/etc/slm-mesh/consul/server.hcl"], "bootstrap_expect = 3\n") &&
      strcontains(output.agent_configs.server["/etc/slm-mesh/nomad/server.hcl"], "bootstrap_expect = 3\n")
    )
    error_message = "By default there must be three servers, and both servers must expect three."
  }

  # Raft data on the data volume, which install.sh mounts before the agents
  # start; snapshots on a timer.
  assert {
    condition = (
      strcontains(output.agent_configs.server["/etc/slm-mesh/consul/server.hcl"], "data_dir         = \"/opt/slm-data/consul\"") &&
      strcontains(output.agent_configs.server["/etc/slm-mesh/nomad/server.hcl"], "data_dir  = \"/opt/slm-data/nomad\"") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/install.sh"], "mount \"/opt/slm-data\"") &&
      strcontains(output.agent_configs.server["/etc/systemd/system/slm-snapshot.timer"], "OnCalendar=hourly") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/snapshot.sh"], "s3://slm-mesh-artifacts/snapshots/$kind/") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/install.sh"], "systemctl enable --now slm-snapshot.timer")
    )
    error_message = "Servers must keep Raft data on the data volume and snapshot to S3 on a timer."
  }

  # Mutual TLS on both agents, every kind of node.
  assert {
    condition = alltrue(flatten([
      for kind, files in output.agent_configs : [
        for path, content in files : alltrue([
          strcontains(content, "verify_server_hostname = true"),
          strcontains(content, startswith(path, "/etc/slm-mesh/consul/") ? "verify_incoming = true" : "rpc                    = true"),
        ]) if can(regex("^/etc/slm-mesh/(consul|nomad)/", path))
      ]
    ]))
    error_message = "Every agent must verify TLS peers (Consul verify_incoming, Nomad TLS RPC, server hostnames)."
  }
}

run "single_server_warns" {
  command = plan

  variables {
    server_count = 1
  }

  expect_failures = [check.single_server]

  assert {
    condition     = strcontains(output.agent_configs.server["/etc/slm-mesh/nomad/server.hcl"], "bootstrap_expect = 1\n")
    error_message = "bootstrap_expect follows server_count."
  }
}

run "rejects_even_server_count" {
  command = plan

  variables {
    server_count = 2
  }

  expect_failures = [var.server_count]
}

# --- Secrets ----------------------------------------------------------------------

run "secrets_never_in_user_data" {
  command = plan

  # Regression: user data containing a token, a key or a private key. Every
  # secret handed to the module is looked for in every document.
  assert {
    condition = alltrue(flatten([
      for kind, ud in output.user_data : [
        for s in concat(
          [var.secrets.consul_gossip_key, var.secrets.nomad_gossip_key, var.secrets.consul_management, var.secrets.consul_agent,
          var.secrets.consul_default, var.secrets.consul_nomad, var.secrets.nomad_management, var.secrets.rpc_token],
          var.secrets.api_keys,
          [for k, v in var.secrets.tls : v if k != "ca_cert"],
        ) : !strcontains(ud, s)
      ]
    ]))
    error_message = "A secret is in a user data document."
  }

  assert {
    condition     = alltrue([for kind, ud in output.user_data : !strcontains(ud, "PRIVATE KEY") && !strcontains(ud, "FAKE-")])
    error_message = "A private key is in a user data document."
  }

  # Every secret is in SSM instead, under client/ (every node may read it)
  # or server/ (servers only). The management tokens, the RPC token, the API
  # keys and the server keys are server-only.
  assert {
    condition = (
      length(output.ssm_parameter_names) == 18 &&
      alltrue([for n in output.ssm_parameter_names : startswith(n, "client/") || startswith(n, "server/")]) &&
      alltrue([for n in ["server/consul/management-token", "server/nomad/management-token", "server/rpc-token", "server/api-keys", "server/tls/nomad-key.pem", "server/tls/consul-key.pem", "server/nomad/gossip-key"] : contains(output.ssm_parameter_names, n)]) &&
      output.ssm_parameters["server/api-keys"] == join(",", var.secrets.api_keys) &&
      output.ssm_parameters["server/nomad/management-token"] == var.secrets.nomad_management &&
      output.ssm_prefix == "/slm-mesh/slm-mesh"
    )
    error_message = "The secrets' SSM layout changed."
  }

  # The nodes fetch them at boot instead: clients read client/* only.
  assert {
    condition = (
      strcontains(output.agent_configs.caller["/opt/slm-mesh/secrets.sh"], "--name \"/slm-mesh/slm-mesh/$1\"") &&
      strcontains(output.agent_configs.caller["/opt/slm-mesh/secrets.sh"], "kind=client") &&
      !strcontains(output.agent_configs.caller["/opt/slm-mesh/secrets.sh"], "get server/") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/secrets.sh"], "get server/consul/management-token") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "nomad var put -force -in=json nomad/jobs -") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "{Items: {rpc_token: $rpc, api_keys: $keys}}")
    )
    error_message = "Nodes must fetch their secrets from SSM at boot, and the servers write nomad/jobs (rpc_token, api_keys)."
  }
}

# --- Tasks and the instance metadata service ----------------------------------------

run "tasks_blocked_from_imds" {
  command = plan

  # Regression: IMDS reachable from tasks. On every client, a unit ordered
  # before Nomad installs an owner-match rule: traffic to 169.254.169.254
  # from anyone but root and consul is dropped; and the client refuses to
  # run tasks as either.
  assert {
    condition = alltrue([
      for kind in ["gateway", "caller", "inference"] : alltrue([
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/imds-guard.sh"], "ipt -A SLM-IMDS -m owner --uid-owner 0 -j RETURN"),
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/imds-guard.sh"], "ipt -A SLM-IMDS -m owner --uid-owner consul -j RETURN"),
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/imds-guard.sh"], "ipt -A SLM-IMDS -j DROP"),
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/imds-guard.sh"], "-I OUTPUT 1 -d 169.254.169.254/32 -j SLM-IMDS"),
        length(regexall("(?m)^ipt -A SLM-IMDS", output.agent_configs[kind]["/opt/slm-mesh/imds-guard.sh"])) == 3,
        strcontains(output.agent_configs[kind]["/etc/systemd/system/slm-imds-guard.service"], "Before=network-pre.target nomad.service"),
        strcontains(output.agent_configs[kind]["/etc/systemd/system/slm-imds-guard.service"], "RequiredBy=nomad.service"),
        length(regexall("systemctl enable --now slm-imds-guard.service\\n(.*\\n)*systemctl enable --now nomad.service", output.agent_configs[kind]["/opt/slm-mesh/install.sh"])) == 1,
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "\"user.denylist\"        = \"root,consul\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "\"user.checked_drivers\" = \"exec,java\""),
        strcontains(output.user_data[kind], "path: /opt/slm-mesh/imds-guard.sh"),
      ])
    ])
    error_message = "Tasks on a client node can reach the instance metadata service."
  }
}

# --- CPU level -------------------------------------------------------------------

run "clients_report_cpu_level" {
  command = plan

  # A release built for AVX-512 must not land on a node without it: every
  # client writes its x86-64 levels as node meta before each agent start,
  # which the inference job's constraint reads (inference_x86_64_level).
  assert {
    condition = alltrue([
      for kind in ["gateway", "caller", "inference"] : alltrue([
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/cpu-meta.sh"], "slm_x86_64_levels"),
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/cpu-meta.sh"], "avx512f avx512bw avx512cd avx512dq avx512vl"),
        strcontains(output.agent_configs[kind]["/etc/systemd/system/nomad.service"], "ExecStartPre=-/bin/sh /opt/slm-mesh/cpu-meta.sh"),
      ])
    ]) && !contains(keys(output.agent_configs.server), "/opt/slm-mesh/cpu-meta.sh")
    error_message = "Client nodes do not report their CPU's x86-64 levels to Nomad."
  }
}

# --- Rendering --------------------------------------------------------------------

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

  # One role per client node, which the jobs' constraints read.
  assert {
    condition = alltrue([
      for kind in ["gateway", "caller", "inference"] :
      strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "slm_role = \"${kind}\"") &&
      output.node_kinds[kind].slm_role == kind && !output.node_kinds[kind].server
    ]) && output.node_kinds.server.server
    error_message = "Each client kind must carry its own slm_role."
  }

  assert {
    condition = alltrue([
      for kind in ["gateway", "caller", "inference"] : alltrue([
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/consul/client.hcl"], "datacenter  = \"dc1\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/consul/client.hcl"], "retry_join  = [\"provider=aws region=eu-west-1 tag_key=SlmMeshJoin tag_value=slm-mesh-server\"]"),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "region     = \"global\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "retry_join = [\"provider=aws region=eu-west-1 tag_key=SlmMeshJoin tag_value=slm-mesh-server\"]"),
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/install.sh"], "\"consul=1.21.2-1\" \"nomad=1.10.3-1\""),
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/install.sh"], "!= \"798AEC654E5C15428C8E42EEAA16FCBCA621E701\""),
        strcontains(output.agent_configs[kind]["/opt/slm-mesh/install.sh"], "-m 0750 \"/opt/slm-mesh/models\""),
        length(regexall("host_volume \"slm-model-cache\" \\{\\s+path\\s+= \"/opt/slm-mesh/models\"", output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"])) == 1,
      ])
    ])
    error_message = "A placeholder's value is missing from a client's files."
  }

  # Servers only on server nodes; clients never get server files.
  assert {
    condition = alltrue([
      for kind in ["gateway", "caller", "inference"] :
      !contains(keys(output.agent_configs[kind]), "/etc/slm-mesh/consul/server.hcl") &&
      !contains(keys(output.agent_configs[kind]), "/etc/slm-mesh/nomad/server.hcl") &&
      !contains(keys(output.agent_configs[kind]), "/opt/slm-mesh/acl-bootstrap.sh")
    ]) && !contains(keys(output.agent_configs.server), "/etc/slm-mesh/nomad/client.hcl")
    error_message = "Server files on a client, or a client on a server."
  }

  assert {
    condition     = alltrue([for kind, ud in output.user_data : yamldecode(ud).runcmd == [["bash", "/opt/slm-mesh/install.sh"]]])
    error_message = "cloud-init must run install.sh and nothing else."
  }
}

run "iam_names_fit_with_the_longest_cluster_name" {
  command = plan

  variables {
    cluster_name = "a-thirty-two-character-cluster-x"
  }

  assert {
    condition     = alltrue([for p in values(output.iam_name_prefixes) : length(p) <= 38]) && length(var.cluster_name) == 32
    error_message = "An IAM name_prefix exceeds AWS's 38 characters."
  }

  assert {
    condition     = output.iam_name_prefixes["flow-logs"] == "a-thirty-two-ch-${substr(sha1(var.cluster_name), 0, 8)}-flow-logs-"
    error_message = "A long cluster name must be shortened with its hash."
  }
}

run "iam_names_keep_short_cluster_names" {
  command = plan

  assert {
    condition     = output.iam_name_prefixes == { server = "slm-mesh-server-", client = "slm-mesh-client-", "flow-logs" = "slm-mesh-flow-logs-" }
    error_message = "A short cluster name must be used as it is."
  }
}

# --- Inputs that must be refused -----------------------------------------------

run "rejects_subnet_outside_vpc" {
  command = plan

  variables {
    private_subnet_cidrs = ["10.30.1.0/24", "10.20.11.0/24"]
  }

  expect_failures = [output.network]
}

run "rejects_overlapping_subnets" {
  command = plan

  variables {
    public_subnet_cidrs = ["10.20.0.0/24", "10.20.10.0/25"]
  }

  expect_failures = [output.network]
}

run "rejects_one_zone" {
  command = plan

  variables {
    public_subnet_cidrs = ["10.20.0.0/24"]
  }

  expect_failures = [var.public_subnet_cidrs]
}

run "rejects_bad_cidr" {
  command = plan

  variables {
    vpc_cidr = "10.20.0.0/33"
  }

  expect_failures = [var.vpc_cidr]
}

run "rejects_bad_region" {
  command = plan

  variables {
    region = "Europe"
  }

  expect_failures = [var.region]
}

run "rejects_api_key_with_comma" {
  command = plan

  variables {
    secrets = {
      consul_gossip_key = "Q09OU1VMLWdvc3NpcC1rZXktZm9yLXRlc3RzLTMyYiE="
      nomad_gossip_key  = "Tk9NQUQtZ29zc2lwLWtleS1mb3ItdGVzdHMtMzJiYiE="
      consul_management = "11111111-1111-4111-8111-111111111111"
      consul_agent      = "22222222-2222-4222-8222-222222222222"
      consul_default    = "55555555-5555-4555-8555-555555555555"
      consul_nomad      = "33333333-3333-4333-8333-333333333333"
      nomad_management  = "44444444-4444-4444-8444-444444444444"
      rpc_token         = "rpcTOKENrpcTOKENrpcTOKENrpcTOKEN0123"
      api_keys          = ["apiKEYoneAPIkeyONEapiKEYoneAPIkey01,x"]
      tls = {
        ca_cert            = "-----BEGIN CERTIFICATE-----\nFAKE-CA-CERT\n-----END CERTIFICATE-----\n"
        nomad_server_cert  = "-----BEGIN CERTIFICATE-----\nFAKE-NOMAD-SERVER-CERT\n-----END CERTIFICATE-----\n"
        nomad_server_key   = "-----BEGIN PRIVATE KEY-----\nFAKE-NOMAD-SERVER-KEY\n-----END PRIVATE KEY-----\n"
        nomad_client_cert  = "-----BEGIN CERTIFICATE-----\nFAKE-NOMAD-CLIENT-CERT\n-----END CERTIFICATE-----\n"
        nomad_client_key   = "-----BEGIN PRIVATE KEY-----\nFAKE-NOMAD-CLIENT-KEY\n-----END PRIVATE KEY-----\n"
        consul_server_cert = "-----BEGIN CERTIFICATE-----\nFAKE-CONSUL-SERVER-CERT\n-----END CERTIFICATE-----\n"
        consul_server_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-CONSUL-SERVER-KEY\n-----END PRIVATE KEY-----\n"
        consul_client_cert = "-----BEGIN CERTIFICATE-----\nFAKE-CONSUL-CLIENT-CERT\n-----END CERTIFICATE-----\n"
        consul_client_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-CONSUL-CLIENT-KEY\n-----END PRIVATE KEY-----\n"
      }
    }
  }

  expect_failures = [var.secrets]
}

run "accepts_binary_gossip_keys" {
  command = plan

  # Regression: real keys (random_bytes) are 32 arbitrary bytes, which are
  # not UTF-8; a validation with base64decode() refused every one of them at
  # apply time, when the value first became known.

  variables {
    secrets = {
      consul_gossip_key = "/////////////////////8MogIGCg4SFhoeIiYqLjI0="
      nomad_gossip_key  = "Tk9NQUQtZ29zc2lwLWtleS1mb3ItdGVzdHMtMzJiYiE="
      consul_management = "11111111-1111-4111-8111-111111111111"
      consul_agent      = "22222222-2222-4222-8222-222222222222"
      consul_default    = "55555555-5555-4555-8555-555555555555"
      consul_nomad      = "33333333-3333-4333-8333-333333333333"
      nomad_management  = "44444444-4444-4444-8444-444444444444"
      rpc_token         = "rpcTOKENrpcTOKENrpcTOKENrpcTOKEN0123"
      api_keys          = ["apiKEYoneAPIkeyONEapiKEYoneAPIkey01"]
      tls = {
        ca_cert            = "-----BEGIN CERTIFICATE-----\nFAKE-CA-CERT\n-----END CERTIFICATE-----\n"
        nomad_server_cert  = "-----BEGIN CERTIFICATE-----\nFAKE-NOMAD-SERVER-CERT\n-----END CERTIFICATE-----\n"
        nomad_server_key   = "-----BEGIN PRIVATE KEY-----\nFAKE-NOMAD-SERVER-KEY\n-----END PRIVATE KEY-----\n"
        nomad_client_cert  = "-----BEGIN CERTIFICATE-----\nFAKE-NOMAD-CLIENT-CERT\n-----END CERTIFICATE-----\n"
        nomad_client_key   = "-----BEGIN PRIVATE KEY-----\nFAKE-NOMAD-CLIENT-KEY\n-----END PRIVATE KEY-----\n"
        consul_server_cert = "-----BEGIN CERTIFICATE-----\nFAKE-CONSUL-SERVER-CERT\n-----END CERTIFICATE-----\n"
        consul_server_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-CONSUL-SERVER-KEY\n-----END PRIVATE KEY-----\n"
        consul_client_cert = "-----BEGIN CERTIFICATE-----\nFAKE-CONSUL-CLIENT-CERT\n-----END CERTIFICATE-----\n"
        consul_client_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-CONSUL-CLIENT-KEY\n-----END PRIVATE KEY-----\n"
      }
    }
  }

  assert {
    condition     = output.ssm_parameters["client/consul/gossip-key"] == "/////////////////////8MogIGCg4SFhoeIiYqLjI0="
    error_message = "A gossip key of arbitrary bytes must be accepted."
  }
}

run "rejects_short_gossip_key" {
  command = plan

  variables {
    secrets = {
      consul_gossip_key = "Q09OU1VMLWdvc3NpcC1rZXktZm9yLXRlc3RzLTMyYiE="
      nomad_gossip_key  = "c2hvcnQ="
      consul_management = "11111111-1111-4111-8111-111111111111"
      consul_agent      = "22222222-2222-4222-8222-222222222222"
      consul_default    = "55555555-5555-4555-8555-555555555555"
      consul_nomad      = "33333333-3333-4333-8333-333333333333"
      nomad_management  = "44444444-4444-4444-8444-444444444444"
      rpc_token         = "rpcTOKENrpcTOKENrpcTOKENrpcTOKEN0123"
      api_keys          = ["apiKEYoneAPIkeyONEapiKEYoneAPIkey01"]
      tls = {
        ca_cert            = "-----BEGIN CERTIFICATE-----\nFAKE-CA-CERT\n-----END CERTIFICATE-----\n"
        nomad_server_cert  = "-----BEGIN CERTIFICATE-----\nFAKE-NOMAD-SERVER-CERT\n-----END CERTIFICATE-----\n"
        nomad_server_key   = "-----BEGIN PRIVATE KEY-----\nFAKE-NOMAD-SERVER-KEY\n-----END PRIVATE KEY-----\n"
        nomad_client_cert  = "-----BEGIN CERTIFICATE-----\nFAKE-NOMAD-CLIENT-CERT\n-----END CERTIFICATE-----\n"
        nomad_client_key   = "-----BEGIN PRIVATE KEY-----\nFAKE-NOMAD-CLIENT-KEY\n-----END PRIVATE KEY-----\n"
        consul_server_cert = "-----BEGIN CERTIFICATE-----\nFAKE-CONSUL-SERVER-CERT\n-----END CERTIFICATE-----\n"
        consul_server_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-CONSUL-SERVER-KEY\n-----END PRIVATE KEY-----\n"
        consul_client_cert = "-----BEGIN CERTIFICATE-----\nFAKE-CONSUL-CLIENT-CERT\n-----END CERTIFICATE-----\n"
        consul_client_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-CONSUL-CLIENT-KEY\n-----END PRIVATE KEY-----\n"
      }
    }
  }

  expect_failures = [var.secrets]
}

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
    caller_token      = "callerTOKENcallerTOKENcallerTOKEN0123"
    inference_token   = "inferenceTOKENinferenceTOKENinference01"
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
      rpc_ca_cert        = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-CA-CERT\n-----END CERTIFICATE-----\n"
      rpc_caller_cert    = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-CALLER-CERT\n-----END CERTIFICATE-----\n"
      rpc_caller_key     = "-----BEGIN PRIVATE KEY-----\nFAKE-RPC-CALLER-KEY\n-----END PRIVATE KEY-----\n"
      rpc_inference_cert = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-INFERENCE-CERT\n-----END CERTIFICATE-----\n"
      rpc_inference_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-RPC-INFERENCE-KEY\n-----END PRIVATE KEY-----\n"
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

  # Callers and inference instances listen on Nomad dynamic ports; a caller
  # hears the gateways only, an inference instance the callers only.
  # Regression: the dynamic ports admitted the whole VPC on every client, so
  # a compromised gateway (or any node) could call inference directly.
  assert {
    condition = (
      sort([for key, r in output.security_group_rules : "${r.sg}<-${r.source_sg}:${r.protocol}/${r.from_port}-${r.to_port}" if r.type == "ingress" && r.to_port >= 20000 && r.from_port <= 32000]) ==
      sort(["caller<-gateway:tcp/20000-32000", "inference<-caller:tcp/20000-32000"]) &&
      alltrue([for key, r in output.security_group_rules : length(r.cidr_blocks) == 0 if r.type == "ingress" && r.to_port >= 20000 && r.from_port <= 32000])
    )
    error_message = "Nomad's dynamic ports must admit the callers from the gateways and inference from the callers, and nothing else."
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
      strcontains(output.agent_configs.server["/opt/slm-mesh/data-volume.sh"], "mount \"/opt/slm-data\"") &&
      strcontains(output.agent_configs.server["/etc/systemd/system/slm-snapshot.timer"], "OnCalendar=hourly") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/snapshot.sh"], "s3://slm-mesh-artifacts/snapshots/$kind/") &&
      length(regexall("(?m)^systemctl enable .*slm-snapshot\\.timer", output.agent_configs.server["/opt/slm-mesh/install.sh"])) == 1
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
          # Nomad's HTTP API asks a certificate of the agents' CA too.
          startswith(path, "/etc/slm-mesh/consul/") || strcontains(content, "verify_https_client    = true"),
        ]) if can(regex("^/etc/slm-mesh/(consul|nomad)/", path))
      ]
    ]))
    error_message = "Every agent must verify TLS peers (Consul verify_incoming, Nomad TLS RPC and HTTP API client certificates, server hostnames)."
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
          var.secrets.consul_default, var.secrets.consul_nomad, var.secrets.nomad_management, var.secrets.caller_token, var.secrets.inference_token],
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
  # or server/ (servers only). The management tokens, the RPC tokens, the
  # API keys and the server keys are server-only.
  assert {
    condition = (
      length(output.ssm_parameter_names) == 24 &&
      alltrue([for n in output.ssm_parameter_names : startswith(n, "client/") || startswith(n, "server/")]) &&
      alltrue([for n in ["server/consul/management-token", "server/nomad/management-token", "server/rpc/caller-token", "server/rpc/inference-token", "server/api-keys", "server/tls/nomad-key.pem", "server/tls/consul-key.pem", "server/nomad/gossip-key"] : contains(output.ssm_parameter_names, n)]) &&
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
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "nomad var put -force -in=json \"nomad/jobs/$job\" -") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "'{Items: {caller_token: $caller, api_keys: $keys, rpc_ca: $ca}}'") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "'{Items: {caller_token: $caller, inference_token: $inference, rpc_ca: $ca, caller_cert: $cert, caller_key: $key}}'") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "'{Items: {inference_token: $inference, inference_cert: $cert, inference_key: $key}}'") &&
      output.ssm_parameters["server/rpc/tls/caller-key.pem"] == var.secrets.tls.rpc_caller_key &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "put_job_secrets slm-inference --arg inference \"$(get server/rpc/inference-token)\"") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "slm-operator - <<'POLICY' >/dev/null\n${chomp(file("../../../nomad/operator.policy.hcl"))}\nPOLICY") &&
      output.ssm_parameters["server/rpc/caller-token"] == var.secrets.caller_token &&
      output.ssm_parameters["server/rpc/inference-token"] == var.secrets.inference_token
    )
    error_message = "Nodes must fetch their secrets from SSM at boot, and the servers write each job's variable: nomad/jobs/slm-gateway (caller_token, api_keys, rpc_ca), nomad/jobs/slm-caller (caller_token, inference_token, rpc_ca, caller_cert, caller_key), nomad/jobs/slm-inference (inference_token, inference_cert, inference_key)."
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
        length(regexall("(?m)^systemctl enable slm-imds-guard\\.service .*nomad\\.service", output.agent_configs[kind]["/opt/slm-mesh/install.sh"])) == 1,
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "\"user.denylist\"        = \"root,consul\""),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/nomad/client.hcl"], "\"user.checked_drivers\" = \"exec,java\""),
        strcontains(output.user_data[kind], "path: /opt/slm-mesh/imds-guard.sh"),
      ])
    ])
    error_message = "Tasks on a client node can reach the instance metadata service."
  }
}

# --- Boot ordering ----------------------------------------------------------------

run "units_enabled_before_any_starts" {
  command = plan

  # Regression: install.sh ran under set -e and started the units one by one
  # with `systemctl enable --now`. consul.service (Type=notify) is ready only
  # once Consul has joined its servers, so on a client booting before them
  # the script failed or hung there, and nomad.service was never enabled,
  # not even for the next boot. Now every unit is enabled by one command
  # before anything is started, and nothing is started in a way that waits.
  assert {
    condition = alltrue([
      for kind, files in output.agent_configs : alltrue([
        # One enable, naming the agents, before any start.
        length(regexall("(?m)^systemctl enable ", files["/opt/slm-mesh/install.sh"])) == 1,
        length(regexall("(?m)^systemctl enable .*\\bslm-secrets\\.service\\b.*\\bconsul\\.service\\b.*\\bnomad\\.service\\b", files["/opt/slm-mesh/install.sh"])) == 1,
        length(regexall("(?s)systemctl (re)?start.*\\nsystemctl enable ", files["/opt/slm-mesh/install.sh"])) == 0,
        # Never --now, and every start is --no-block.
        !strcontains(files["/opt/slm-mesh/install.sh"], "--now"),
        length(regexall("(?m)^systemctl (re)?start ", files["/opt/slm-mesh/install.sh"])) == length(regexall("(?m)^systemctl start --no-block ", files["/opt/slm-mesh/install.sh"])),
        # What is started is exactly what was enabled.
        trimprefix(regex("(?m)^systemctl enable (.*)$", files["/opt/slm-mesh/install.sh"])[0], "") == regex("(?m)^systemctl start --no-block (.*)$", files["/opt/slm-mesh/install.sh"])[0],
      ])
    ])
    error_message = "install.sh must enable every unit before it starts any, and start them without waiting (no enable --now, only start --no-block)."
  }

  # Every unit started is installed for the next boots too (a target wants it).
  assert {
    condition = alltrue(flatten([
      for kind, files in output.agent_configs : [
        for u in split(" ", regex("(?m)^systemctl enable (.*)$", files["/opt/slm-mesh/install.sh"])[0]) :
        can(regex("(?m)^WantedBy=(multi-user|timers)\\.target$", files["/etc/systemd/system/${u}"]))
      ]
    ]))
    error_message = "A unit install.sh enables has no WantedBy= target, so a reboot would not start it."
  }

  # Nomad does not wait for Consul's readiness (joined), nor fail with it;
  # Consul waits for its servers as long as they take instead of being
  # killed by a start timeout.
  assert {
    condition = alltrue([
      for kind, files in output.agent_configs : alltrue([
        length(regexall("(?m)^(After|Requires|Requisite|BindsTo|PartOf)=.*consul", files["/etc/systemd/system/nomad.service"])) == 0,
        strcontains(files["/etc/systemd/system/consul.service"], "\nType=notify\n"),
        strcontains(files["/etc/systemd/system/consul.service"], "\nTimeoutStartSec=infinity\n"),
      ])
    ])
    error_message = "nomad.service must not be ordered after or bound to consul.service, and consul.service must have no start timeout."
  }

  # The configurations are validated before the units start, and a failed
  # validation only changes the exit status: it cannot stop a unit from
  # being enabled or started.
  assert {
    condition = alltrue([
      for kind, files in output.agent_configs : alltrue([
        length(regexall("(?s)consul validate /etc/consul.d \\|\\| config_ok=false\\nnomad config validate /etc/nomad.d \\|\\| config_ok=false\\n.*\\nsystemctl enable ", files["/opt/slm-mesh/install.sh"])) == 1,
        length(regexall("(?m)^(consul|nomad)( config)? validate", files["/opt/slm-mesh/install.sh"])) == 2,
      ])
    ])
    error_message = "install.sh must validate both configurations before the units start, without aborting on a failure."
  }

  # A transient SSM failure at boot must not leave Consul and Nomad down
  # until the next boot: the secrets are retried without a limit.
  assert {
    condition     = alltrue([for kind, files in output.agent_configs : !strcontains(files["/opt/slm-mesh/secrets.sh"], "return 1")])
    error_message = "secrets.sh must retry SSM until it answers."
  }
}

# --- The servers' data volume --------------------------------------------------------

run "server_data_volume" {
  command = plan

  variables {
    server_data_volume_ids = {
      server-0 = "vol-0123456789abcdef0"
      server-1 = "vol-0fedcba9876543210"
      server-2 = "vol-1a2b3c4d"
    }
  }

  # Each server boots with its kind's files and its own volume's id, and
  # nothing else differs.
  assert {
    condition = (
      sort(keys(output.server_user_data)) == sort(["server-0", "server-1", "server-2"]) &&
      alltrue([
        for name, ud in output.server_user_data :
        { for f in yamldecode(ud).write_files : f.path => f.content } == merge(output.agent_configs.server, { "/etc/slm-mesh/data-volume-id" = "${var.server_data_volume_ids[name]}\n" }) &&
        yamldecode(ud).runcmd == [["bash", "/opt/slm-mesh/install.sh"]] &&
        output.server_user_data_base64gzip[name] == base64gzip(ud) && length(output.server_user_data_base64gzip[name]) < 16384
      ]) &&
      !strcontains(output.user_data.server, "data-volume-id\n")
    )
    error_message = "Each server's document must be the server kind's files plus its data volume id."
  }

  # Regression: the data disk was any disk but the root disk, so an
  # instance-store NVMe disk could be formatted and used. Now it is the
  # NVMe disk whose serial is the volume id, or on Xen the attachment's
  # device; nothing found, nothing started (install.sh stops before it
  # enables a unit).
  assert {
    condition = (
      strcontains(output.agent_configs.server["/opt/slm-mesh/data-volume.sh"], "volume_id=$(cat \"/etc/slm-mesh/data-volume-id\"") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/data-volume.sh"], "by_id=/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$(printf '%s' \"$volume_id\" | tr -d -)") &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/data-volume.sh"], "elif $xen && [ -b \"/dev/xvdf\" ]; then") &&
      !strcontains(output.agent_configs.server["/opt/slm-mesh/data-volume.sh"], "lsblk -dno NAME") &&
      length(regexall("(?m)^  echo .*: the agents are not started\" >&2\\n  exit 1$", output.agent_configs.server["/opt/slm-mesh/data-volume.sh"])) == 2 &&
      length(regexall("(?s)\\nbash /opt/slm-mesh/data-volume.sh\\n.*\\nsystemctl enable ", output.agent_configs.server["/opt/slm-mesh/install.sh"])) == 1 &&
      strcontains(output.agent_configs.server["/opt/slm-mesh/install.sh"], "\nset -euo pipefail\n") &&
      alltrue([for kind in ["gateway", "caller", "inference"] : !contains(keys(output.agent_configs[kind]), "/opt/slm-mesh/data-volume.sh")])
    )
    error_message = "A server must find its data volume by the volume id (or the attachment's Xen device) and by nothing else."
  }

  # Regression: the volume was mounted nofail and nothing required it, so a
  # server whose volume was missing started on an empty directory and
  # joined as a new member. Both agents now require the mount on servers.
  assert {
    condition = alltrue([
      for unit in ["consul", "nomad"] : alltrue([
        strcontains(lookup(output.agent_configs.server, "/etc/systemd/system/${unit}.service.d/slm-data-volume.conf", ""), "\n[Unit]\nRequiresMountsFor=/opt/slm-data\nAssertPathIsMountPoint=/opt/slm-data\n"),
        alltrue([for kind in ["gateway", "caller", "inference"] : !contains(keys(output.agent_configs[kind]), "/etc/systemd/system/${unit}.service.d/slm-data-volume.conf")]),
      ])
    ])
    error_message = "On servers, consul.service and nomad.service must require the data volume's mount (and only there)."
  }
}

# --- Cloud auto-join ---------------------------------------------------------------

run "cloud_join_endpoint" {
  command = plan

  variables {
    ec2_endpoint = "http://10.0.0.1:5000"
  }

  # Every agent of every kind asks that endpoint for the servers, with the
  # same tags as on AWS (the cluster in a box points it at its emulator).
  assert {
    condition = alltrue(concat(
      [
        for f in ["/etc/slm-mesh/consul/server.hcl", "/etc/slm-mesh/nomad/server.hcl"] :
        strcontains(output.agent_configs.server[f], "[\"provider=aws region=eu-west-1 tag_key=SlmMeshJoin tag_value=slm-mesh-server endpoint=http://10.0.0.1:5000\"]")
      ],
      [
        for pair in setproduct(["gateway", "caller", "inference"], ["consul", "nomad"]) :
        strcontains(output.agent_configs[pair[0]]["/etc/slm-mesh/${pair[1]}/client.hcl"], "[\"provider=aws region=eu-west-1 tag_key=SlmMeshJoin tag_value=slm-mesh-server endpoint=http://10.0.0.1:5000\"]")
      ],
    ))
    error_message = "Every agent's retry_join must name the ec2_endpoint."
  }
}

run "cloud_join_default_endpoint" {
  command = plan

  assert {
    condition = alltrue([
      for kind, files in output.agent_configs : alltrue([
        for path, content in files : !strcontains(content, "endpoint=")
      ])
    ])
    error_message = "Without ec2_endpoint, no agent may name an endpoint: on AWS, go-discover uses the region's own."
  }
}

run "rejects_bad_ec2_endpoint" {
  command = plan

  variables {
    ec2_endpoint = "http://10.0.0.1:5000 tag_key=Other"
  }

  expect_failures = [var.ec2_endpoint]
}

run "no_server_documents_without_volumes" {
  command = plan

  assert {
    condition     = length(output.server_user_data) == 0 && length(output.server_user_data_base64gzip) == 0
    error_message = "Without data volumes there must be no server documents."
  }
}

run "rejects_bad_volume_id" {
  command = plan

  variables {
    server_data_volume_ids = { server-0 = "/dev/nvme1n1" }
  }

  expect_failures = [var.server_data_volume_ids]
}

run "rejects_bad_device_name" {
  command = plan

  variables {
    server_data_device_name = "/dev/nvme1n1"
  }

  expect_failures = [var.server_data_device_name]
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
      caller_token      = "callerTOKENcallerTOKENcallerTOKEN0123"
      inference_token   = "inferenceTOKENinferenceTOKENinference01"
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
        rpc_ca_cert        = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-CA-CERT\n-----END CERTIFICATE-----\n"
        rpc_caller_cert    = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-CALLER-CERT\n-----END CERTIFICATE-----\n"
        rpc_caller_key     = "-----BEGIN PRIVATE KEY-----\nFAKE-RPC-CALLER-KEY\n-----END PRIVATE KEY-----\n"
        rpc_inference_cert = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-INFERENCE-CERT\n-----END CERTIFICATE-----\n"
        rpc_inference_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-RPC-INFERENCE-KEY\n-----END PRIVATE KEY-----\n"
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
      caller_token      = "callerTOKENcallerTOKENcallerTOKEN0123"
      inference_token   = "inferenceTOKENinferenceTOKENinference01"
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
        rpc_ca_cert        = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-CA-CERT\n-----END CERTIFICATE-----\n"
        rpc_caller_cert    = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-CALLER-CERT\n-----END CERTIFICATE-----\n"
        rpc_caller_key     = "-----BEGIN PRIVATE KEY-----\nFAKE-RPC-CALLER-KEY\n-----END PRIVATE KEY-----\n"
        rpc_inference_cert = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-INFERENCE-CERT\n-----END CERTIFICATE-----\n"
        rpc_inference_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-RPC-INFERENCE-KEY\n-----END PRIVATE KEY-----\n"
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
      caller_token      = "callerTOKENcallerTOKENcallerTOKEN0123"
      inference_token   = "inferenceTOKENinferenceTOKENinference01"
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
        rpc_ca_cert        = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-CA-CERT\n-----END CERTIFICATE-----\n"
        rpc_caller_cert    = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-CALLER-CERT\n-----END CERTIFICATE-----\n"
        rpc_caller_key     = "-----BEGIN PRIVATE KEY-----\nFAKE-RPC-CALLER-KEY\n-----END PRIVATE KEY-----\n"
        rpc_inference_cert = "-----BEGIN CERTIFICATE-----\nFAKE-RPC-INFERENCE-CERT\n-----END CERTIFICATE-----\n"
        rpc_inference_key  = "-----BEGIN PRIVATE KEY-----\nFAKE-RPC-INFERENCE-KEY\n-----END PRIVATE KEY-----\n"
      }
    }
  }

  expect_failures = [var.secrets]
}

# --- Client nodes drain before termination ----------------------------------------

run "clients_drain_before_termination" {
  command = plan

  # Every client node runs slm-drain.service from boot: installed, enabled
  # with the other units, wanted by multi-user.target, its script and its
  # settings next to it; servers do not.
  assert {
    condition = alltrue([
      for kind in ["gateway", "caller", "inference"] : alltrue([
        output.agent_configs[kind]["/opt/slm-mesh/drain.sh"] == file("templates/drain.sh"),
        strcontains(output.agent_configs[kind]["/etc/systemd/system/slm-drain.service"], "\nExecStart=/opt/slm-mesh/drain.sh\n"),
        strcontains(output.agent_configs[kind]["/etc/systemd/system/slm-drain.service"], "\nWantedBy=multi-user.target\n"),
        strcontains(output.agent_configs[kind]["/etc/systemd/system/slm-drain.service"], "\nRestart=on-failure\n"),
        length(regexall("(?m)^systemctl enable .*\\bslm-drain\\.service\\b", output.agent_configs[kind]["/opt/slm-mesh/install.sh"])) == 1,
        contains([for f in output.node_files[kind] : f.permissions if f.path == "/opt/slm-mesh/drain.sh"], "0700"),
      ])
    ]) && length([for p, c in output.agent_configs.server : p if strcontains(p, "drain")]) == 0
    error_message = "Every client node (and no server) must install and enable slm-drain.service with drain.sh and drain.conf."
  }

  # Each kind's settings name its own group, the hook, the token's full
  # parameter name, the deadlines and the local agent over TLS.
  assert {
    condition = alltrue([
      for kind in ["gateway", "caller", "inference"] : alltrue([
        output.autoscaling_group_names[kind] == "slm-mesh-${kind}",
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/drain.conf"], "\ngroup=slm-mesh-${kind}\n"),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/drain.conf"], "\nhook=slm-drain\n"),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/drain.conf"], "\ntoken_parameter=/slm-mesh/slm-mesh/client/nomad/drain-token\n"),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/drain.conf"], "\ndeadline=300\nspot_deadline=90\n"),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/drain.conf"], "\nimds=http://169.254.169.254\n"),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/drain.conf"], "\nexport NOMAD_ADDR=https://127.0.0.1:4646\nexport NOMAD_CACERT=/etc/nomad.d/tls/ca.pem\nexport NOMAD_CLIENT_CERT=/etc/nomad.d/tls/agent.pem\nexport NOMAD_CLIENT_KEY=/etc/nomad.d/tls/agent-key.pem\n"),
        strcontains(output.agent_configs[kind]["/etc/slm-mesh/drain.conf"], "\nclient_id_file=/opt/nomad/data/client/client-id\n"),
      ])
    ]) && output.drain.hook_name == "slm-drain" && output.drain.heartbeat_timeout_seconds == 420
    error_message = "A client's drain.conf must name its own group, the hook, the token parameter and the deadlines."
  }

  # What drain.sh does: asks IMDSv2 (token first) for the lifecycle state
  # and the Spot notice; drains its own node by id with a deadline (-self
  # would need agent:read, which the token lacks); completes its own
  # instance's action with CONTINUE.
  assert {
    condition = alltrue([
      strcontains(output.agent_configs.inference["/opt/slm-mesh/drain.sh"], "-X PUT -H \"X-aws-ec2-metadata-token-ttl-seconds: 60\" \"$imds/latest/api/token\""),
      strcontains(output.agent_configs.inference["/opt/slm-mesh/drain.sh"], "[ \"$(meta autoscaling/target-lifecycle-state)\" = Terminated ]"),
      strcontains(output.agent_configs.inference["/opt/slm-mesh/drain.sh"], "meta spot/instance-action >/dev/null && limit=$spot_deadline"),
      strcontains(output.agent_configs.inference["/opt/slm-mesh/drain.sh"], "nomad node drain -enable -yes -deadline \"$limit\"s \"$node\""),
      strcontains(output.agent_configs.inference["/opt/slm-mesh/drain.sh"], "--instance-id \"$instance\" --lifecycle-action-result CONTINUE"),
      !strcontains(output.agent_configs.inference["/opt/slm-mesh/drain.sh"], "-self"),
      # 404 or no answer: a pause, then ask again (never a busy loop).
      length(regexall("(?m)^  sleep \"\\$interval\"$", output.agent_configs.inference["/opt/slm-mesh/drain.sh"])) == 3,
    ])
    error_message = "drain.sh must poll IMDSv2's lifecycle state and Spot notice, drain its own node with a deadline and complete its lifecycle action."
  }

  # The token: the servers create it from nomad/node-drain.policy.hcl (node
  # write, and nothing else) and publish it where the clients read it.
  assert {
    condition = alltrue([
      trimspace(replace(file("../../../nomad/node-drain.policy.hcl"), "/(?m)^#.*\\n/", "")) == "node {\n  policy = \"write\"\n}",
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "slm-node-drain - <<'POLICY' >/dev/null\n${chomp(file("../../../nomad/node-drain.policy.hcl"))}\nPOLICY"),
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "nomad acl token create -name slm-node-drain -type client -policy slm-node-drain -json"),
      strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "aws ssm put-parameter --region \"eu-west-1\" --name \"/slm-mesh/slm-mesh/client/nomad/drain-token\""),
      !strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "--key-id"),
      !contains(output.ssm_parameter_names, output.drain.token_parameter),
      startswith(output.drain.token_parameter, "client/"),
    ])
    error_message = "The servers must create the drain token from nomad/node-drain.policy.hcl (node write only) and publish it under client/."
  }

  # Replaced client nodes are forgotten after an hour down, not a day.
  assert {
    condition     = strcontains(output.agent_configs.server["/etc/slm-mesh/nomad/server.hcl"], "\n  node_gc_threshold = \"1h\"\n")
    error_message = "The Nomad servers must garbage-collect down nodes after node_gc_threshold = 1h."
  }
}

run "drain_token_under_the_cluster_key" {
  command = plan

  variables {
    ssm_kms_key_id = "arn:aws:kms:eu-west-1:123456789012:key/0b1c2d3e-4f50-4a6b-8c7d-8e9fa0b1c2d3"
  }

  assert {
    condition     = strcontains(output.agent_configs.server["/opt/slm-mesh/acl-bootstrap.sh"], "--type SecureString --key-id \"arn:aws:kms:eu-west-1:123456789012:key/0b1c2d3e-4f50-4a6b-8c7d-8e9fa0b1c2d3\" --overwrite")
    error_message = "The drain token must be encrypted with ssm_kms_key_id when it is set."
  }
}

run "rejects_short_drain_deadline" {
  command = plan

  variables {
    drain_deadline_seconds = 30
  }

  expect_failures = [var.drain_deadline_seconds]
}

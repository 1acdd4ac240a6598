# Tests of the AWS root module itself, run by `tofu test` in terraform/aws
# (tools/iac/check.sh runs them when an AWS provider is installed; see
# docs/terraform.md). AWS cannot run here, so the AWS provider is a mock:
# OpenTofu loads the real provider for its schema (every argument, type and
# block of these resources is checked against it) but calls none of its
# operations; computed attributes get the realistic values below. The random
# and tls providers are real: the secrets and certificates are generated as
# in an apply, and the tests look for those very values.
#
# Each run is an apply against the mock, so every value is known; nothing is
# created anywhere. The assertions read the resources as AWS would get them,
# not the plan module's outputs: what the plan module decides is tested in
# terraform/modules/plan/tests, what this module does with it here.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      id         = "123456789012"
      account_id = "123456789012"
      arn        = "arn:aws:iam::123456789012:user/operator"
      user_id    = "AIDAQEXAMPLEOPERATOR1"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      id                 = "aws"
      partition          = "aws"
      dns_suffix         = "amazonaws.com"
      reverse_dns_prefix = "com.amazonaws"
    }
  }

  mock_data "aws_ami" {
    defaults = {
      id               = "ami-0a7a4e87939439934"
      image_id         = "ami-0a7a4e87939439934"
      architecture     = "x86_64"
      name             = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20261120"
      owner_id         = "099720109477"
      root_device_type = "ebs"
    }
  }

  # The EC2 API's answer when asked for t3.small and c7i-flex.large: one
  # row per (zone, type), in no particular order; here both types in all
  # three zones of eu-west-1 (zones_must_offer_every_type overrides it with
  # a zone that lacks one).
  mock_data "aws_ec2_instance_type_offerings" {
    defaults = {
      id             = "eu-west-1"
      instance_types = ["t3.small", "c7i-flex.large", "t3.small", "c7i-flex.large", "t3.small", "c7i-flex.large"]
      locations      = ["eu-west-1c", "eu-west-1a", "eu-west-1a", "eu-west-1c", "eu-west-1b", "eu-west-1b"]
      location_types = ["availability-zone", "availability-zone", "availability-zone", "availability-zone", "availability-zone", "availability-zone"]
    }
  }

  # The documents' JSON is rendered by the provider, which is mocked; the
  # tests read each document's statements instead, which are this module's.
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }

  mock_resource "aws_lb" {
    defaults = {
      arn      = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/slm-20261205/50dc6c495c0c9188"
      dns_name = "slm-20261205-1234567890.eu-west-1.elb.amazonaws.com"
      zone_id  = "Z32O12XQLNTSW2"
    }
  }

  # The provider checks these ARNs' form when they are used.
  mock_resource "aws_lb_listener" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/slm-20261205/50dc6c495c0c9188/f2f7dc8efc522ab2"
    }
  }

  mock_resource "aws_lb_target_group" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/slm-20261205/73e2d6bc24d8a067"
    }
  }

  mock_resource "aws_kms_key" {
    defaults = {
      arn    = "arn:aws:kms:eu-west-1:123456789012:key/0b1c2d3e-4f50-4a6b-8c7d-8e9fa0b1c2d3"
      key_id = "0b1c2d3e-4f50-4a6b-8c7d-8e9fa0b1c2d3"
    }
  }

  mock_resource "aws_sns_topic" {
    defaults = {
      arn = "arn:aws:sns:eu-west-1:123456789012:slm-mesh-alarms-20261207000000000000000001"
    }
  }

  mock_resource "aws_s3_bucket" {
    defaults = {
      arn = "arn:aws:s3:::slm-mesh-artifacts-123456789012"
    }
  }

  mock_resource "aws_cloudwatch_log_group" {
    defaults = {
      arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/slm-mesh/slm-mesh/vpc-flow-logs"
    }
  }

  mock_resource "aws_acm_certificate" {
    defaults = {
      arn = "arn:aws:acm:eu-west-1:123456789012:certificate/7e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/slm-mesh-node-20261205170000000000000001"
    }
  }

  # The servers' user data names their data volumes, which the plan module
  # checks are EBS volume ids.
  mock_resource "aws_ebs_volume" {
    defaults = {
      id = "vol-0123456789abcdef0"
    }
  }

  # The client groups name their launch template by id and version.
  mock_resource "aws_launch_template" {
    defaults = {
      id             = "lt-0123456789abcdef0"
      arn            = "arn:aws:ec2:eu-west-1:123456789012:launch-template/lt-0123456789abcdef0"
      latest_version = 3
    }
  }

  mock_resource "aws_ssm_parameter" {
    defaults = {
      arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/slm-mesh/slm-mesh/client/nomad/drain-token"
    }
  }

  # Every Spot candidate a 2-vCPU type (a run overrides one with 1).
  mock_data "aws_ec2_instance_type" {
    defaults = {
      default_vcpus = 2
    }
  }
}

# --- Exposure ---------------------------------------------------------------------

run "only_the_load_balancer_faces_the_internet" {
  # The mock gives every instance of a resource the same id (all four
  # groups share one), so a rule's group is known here by its instance key,
  # which names the group that security.tf attaches it to
  # (aws_security_group.this[each.value.sg]): "alb-ingress-https" is a rule
  # of the "alb" group.

  # Regression: a security group rule admitting 0.0.0.0/0 (or ::/0) on
  # anything but the load balancer's tcp/443 and tcp/80.
  assert {
    condition = length([
      for k, r in merge(aws_security_group_rule.by_address, aws_security_group_rule.from_group) : k
      if r.type == "ingress" && (contains(coalesce(r.cidr_blocks, []), "0.0.0.0/0") || contains(coalesce(r.ipv6_cidr_blocks, []), "::/0")) && !(
        startswith(k, "alb-") && r.protocol == "tcp" && r.from_port == r.to_port && contains([443, 80], r.from_port)
      )
    ]) == 0
    error_message = "A security group rule admits the internet on something other than the load balancer's 443/80."
  }

  # The load balancer admits exactly tcp/443 and tcp/80, and it is the
  # group the load balancer (and nothing else) has.
  assert {
    condition = (
      sort([
        for k, r in merge(aws_security_group_rule.by_address, aws_security_group_rule.from_group) : "${r.protocol}/${r.from_port}-${r.to_port}"
        if r.type == "ingress" && startswith(k, "alb-")
      ]) == tolist(["tcp/443-443", "tcp/80-80"]) &&
      aws_security_group.this["alb"].name_prefix == "slm-mesh-alb-" &&
      length(aws_lb.api.security_groups) == 1 && contains(aws_lb.api.security_groups, aws_security_group.this["alb"].id)
    )
    error_message = "The load balancer must admit tcp/443 and tcp/80 and nothing else."
  }

  # Every other ingress rule admits a group or a part of the VPC.
  assert {
    condition = alltrue(flatten([
      for k, r in merge(aws_security_group_rule.by_address, aws_security_group_rule.from_group) : [
        for c in coalesce(r.cidr_blocks, []) :
        tonumber(split("/", c)[1]) >= 16 && cidrhost("${cidrhost(c, 0)}/16", 0) == cidrhost(aws_vpc.this.cidr_block, 0)
      ] if r.type == "ingress" && r.security_group_id != aws_security_group.this["alb"].id
    ]))
    error_message = "A node's security group admits addresses outside the VPC."
  }

  # No rules inline in the groups (they would bypass the list above), and the
  # VPC's default group is empty.
  assert {
    condition = (
      alltrue([for k, g in aws_security_group.this : length(g.ingress) == 0]) &&
      length(aws_default_security_group.this.ingress) == 0 &&
      length(aws_default_security_group.this.egress) == 0
    )
    error_message = "A security group has inline rules, or the default group admits traffic."
  }

  # The nodes have no public address and sit in the private subnets; only
  # the load balancer is internet-facing.
  assert {
    condition = alltrue([
      for k, n in aws_instance.node :
      !n.associate_public_ip_address && contains(aws_subnet.private[*].id, n.subnet_id)
    ]) && !aws_lb.api.internal && alltrue([for s in aws_subnet.public : !s.map_public_ip_on_launch]) && alltrue([for s in aws_subnet.private : !s.map_public_ip_on_launch])
    error_message = "A node is reachable from outside the VPC, or the load balancer has another group."
  }

  # IMDSv2 only, one hop: a container on a node cannot reach it.
  assert {
    condition = alltrue([
      for k, n in aws_instance.node :
      n.metadata_options[0].http_tokens == "required" && n.metadata_options[0].http_put_response_hop_limit == 1
    ])
    error_message = "Every node must require IMDSv2 with a hop limit of 1."
  }
}

run "api_is_https_with_the_tls_policy" {
  # Regression: the API listener not TLS, or with an old policy.
  assert {
    condition = (
      aws_lb_listener.https.load_balancer_arn == aws_lb.api.arn &&
      aws_lb_listener.https.protocol == "HTTPS" &&
      aws_lb_listener.https.port == 443 &&
      aws_lb_listener.https.ssl_policy == "ELBSecurityPolicy-TLS13-1-2-2021-06" &&
      aws_lb_listener.https.certificate_arn == aws_acm_certificate.selfsigned[0].arn
    )
    error_message = "The API listener must be HTTPS on 443 with ELBSecurityPolicy-TLS13-1-2-2021-06 and the API's certificate."
  }

  # Port 80 only redirects to HTTPS; only /v1/* reaches the gateways, whose
  # health check stays inside.
  assert {
    condition = (
      aws_lb_listener.http.protocol == "HTTP" && aws_lb_listener.http.port == 80 &&
      length(aws_lb_listener.http.default_action) == 1 &&
      aws_lb_listener.http.default_action[0].type == "redirect" &&
      aws_lb_listener.http.default_action[0].redirect[0].protocol == "HTTPS" &&
      aws_lb_listener.http.default_action[0].redirect[0].port == "443" &&
      aws_lb_listener.https.default_action[0].type == "fixed-response" &&
      aws_lb_listener.https.default_action[0].fixed_response[0].status_code == "404" &&
      aws_lb_listener_rule.api.listener_arn == aws_lb_listener.https.arn &&
      aws_lb_listener_rule.api.action[0].target_group_arn == aws_lb_target_group.gateway.arn &&
      toset(flatten([for c in aws_lb_listener_rule.api.condition : [for p in c.path_pattern : p.values]])) == toset(["/v1/*"]) &&
      aws_lb_target_group.gateway.port == 3111 && aws_lb_target_group.gateway.health_check[0].path == "/health"
    )
    error_message = "Port 80 must only redirect to HTTPS, and only /v1/* may be forwarded to the gateways."
  }

  # With neither certificate_arn nor domain_name, the certificate is the
  # self-signed one for the load balancer's own name.
  assert {
    condition = (
      length(aws_acm_certificate.api) == 0 &&
      tls_cert_request.api[0].dns_names == tolist([aws_lb.api.dns_name]) &&
      aws_acm_certificate.selfsigned[0].certificate_body == tls_locally_signed_cert.api[0].cert_pem &&
      output.api_url == "https://${aws_lb.api.dns_name}"
    )
    error_message = "The default certificate must be the self-signed one for the load balancer's name."
  }
}

run "api_with_a_domain" {
  variables {
    domain_name     = "api.example.com"
    route53_zone_id = "Z0123456789ABCDEFGHIJ"
  }

  override_resource {
    target = aws_acm_certificate.api
    values = {
      arn = "arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
      domain_validation_options = [{
        domain_name           = "api.example.com"
        resource_record_name  = "_a79865eb4cd1a6ab990a45779b4e0b96.api.example.com."
        resource_record_type  = "CNAME"
        resource_record_value = "_424c7224e9b0146f9a8808af955727d0.acm-validations.aws."
      }]
    }
  }

  assert {
    condition = (
      aws_lb_listener.https.protocol == "HTTPS" &&
      aws_lb_listener.https.ssl_policy == "ELBSecurityPolicy-TLS13-1-2-2021-06" &&
      aws_lb_listener.https.certificate_arn == "arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9" &&
      aws_acm_certificate_validation.api[0].certificate_arn == aws_acm_certificate.api[0].arn &&
      aws_acm_certificate.api[0].validation_method == "DNS" &&
      length(aws_acm_certificate.selfsigned) == 0 &&
      aws_route53_record.api[0].name == "api.example.com" &&
      aws_route53_record.api[0].alias[0].name == aws_lb.api.dns_name &&
      aws_route53_record.api_validation["api.example.com"].records == toset(["_424c7224e9b0146f9a8808af955727d0.acm-validations.aws."]) &&
      output.api_url == "https://api.example.com" &&
      output.api_ca_pem == null
    )
    error_message = "With domain_name, the listener must use the DNS-validated ACM certificate and the API its name."
  }
}

run "domain_needs_its_zone" {
  command = plan

  variables {
    domain_name = "api.example.com"
  }

  expect_failures = [aws_acm_certificate.api]
}

# --- Control plane ------------------------------------------------------------------

run "three_servers_by_default" {
  # Regression: bootstrap_expect < 3 by default.
  assert {
    condition = (
      length([for k, n in aws_instance.node : k if n.tags.Role == "server"]) == 3 &&
      length(aws_ebs_volume.server_data) == 3 &&
      length(aws_volume_attachment.server_data) == 3
    )
    error_message = "By default there must be three server nodes, each with its data volume."
  }

  # What the servers boot with: both agents expect three servers, and each
  # server's document names its own data volume. The instance carries
  # exactly the document read here (base64gzip is deterministic).
  assert {
    condition = alltrue([
      for k, n in aws_instance.node : alltrue([
        n.user_data_base64 == base64gzip(module.plan.server_user_data[k]),
        strcontains({ for f in yamldecode(module.plan.server_user_data[k]).write_files : f.path => f.content }["/etc/slm-mesh/consul/server.hcl"], "bootstrap_expect = 3\n"),
        strcontains({ for f in yamldecode(module.plan.server_user_data[k]).write_files : f.path => f.content }["/etc/slm-mesh/nomad/server.hcl"], "bootstrap_expect = 3\n"),
        { for f in yamldecode(module.plan.server_user_data[k]).write_files : f.path => f.content }["/etc/slm-mesh/data-volume-id"] == "${aws_ebs_volume.server_data[k].id}\n",
      ]) if n.tags.Role == "server"
    ])
    error_message = "Every server's user data must set bootstrap_expect = 3 for Consul and Nomad and name the server's own data volume."
  }

  # Regression: two of the three servers in one zone (a zone's loss took
  # the quorum). One server in each of the three zones, each data volume in
  # its server's zone, and only servers carry the auto-join tag.
  assert {
    condition = (
      length(distinct([for k, v in aws_ebs_volume.server_data : v.availability_zone])) == 3 &&
      sort([for k, n in local.nodes : tostring(n.zone) if n.role == "server"]) == tolist(["0", "1", "2"]) &&
      alltrue([for k, v in aws_ebs_volume.server_data : v.encrypted && v.availability_zone == aws_subnet.private[local.nodes[k].zone].availability_zone]) &&
      alltrue([for k, a in aws_volume_attachment.server_data : a.instance_id == aws_instance.node[k].id && a.volume_id == aws_ebs_volume.server_data[k].id]) &&
      sort([for k, n in aws_instance.node : k if lookup(n.tags, "SlmMeshJoin", null) == "slm-mesh-server"]) == tolist(["server-0", "server-1", "server-2"])
    )
    error_message = "The servers must be one in each of three zones, each with its own data volume, and alone carry the join tag."
  }

  # Three zones by default, in name order, a public and a private subnet in
  # each.
  assert {
    condition = (
      output.availability_zones == tolist(["eu-west-1a", "eu-west-1b", "eu-west-1c"]) &&
      tolist(aws_subnet.private[*].availability_zone) == tolist(["eu-west-1a", "eu-west-1b", "eu-west-1c"]) &&
      tolist(aws_subnet.public[*].availability_zone) == tolist(["eu-west-1a", "eu-west-1b", "eu-west-1c"])
    )
    error_message = "The VPC must span three zones by default, a public and a private subnet in each."
  }
}

run "zones_must_offer_every_type" {
  command = plan

  # c7i-flex.large in two zones only (newer types are not in every zone):
  # the three zones the servers need cannot be had with these types, and
  # plan says so instead of placing two servers in one zone.
  override_data {
    target = data.aws_ec2_instance_type_offerings.chosen
    values = {
      instance_types = ["t3.small", "c7i-flex.large", "t3.small", "t3.small", "c7i-flex.large"]
      locations      = ["eu-west-1a", "eu-west-1a", "eu-west-1c", "eu-west-1b", "eu-west-1b"]
      location_types = ["availability-zone", "availability-zone", "availability-zone", "availability-zone", "availability-zone"]
    }
  }

  expect_failures = [data.aws_ec2_instance_type_offerings.chosen]
}

run "no_zone_holds_a_quorum" {
  command = plan

  # Regression: three servers over two zones (two in one, a quorum).
  variables {
    availability_zones   = ["eu-west-1a", "eu-west-1b"]
    public_subnet_cidrs  = ["10.20.0.0/24", "10.20.1.0/24"]
    private_subnet_cidrs = ["10.20.10.0/24", "10.20.11.0/24"]
  }

  expect_failures = [aws_vpc.this]
}

run "five_servers_over_three_zones" {
  command = plan

  # Two zones hold two servers each, below the quorum of three: accepted.
  # What no_zone_holds_a_quorum refuses is a quorum in one zone, not a zone
  # with more than one server.
  variables {
    server_count = 5
  }

  assert {
    condition     = jsonencode([for k, n in local.nodes : n.zone if n.role == "server"]) == jsonencode([0, 1, 2, 0, 1])
    error_message = "Five servers must be placed over the three zones in turn."
  }
}

# --- NAT ----------------------------------------------------------------------------
# The mock gives every NAT gateway the same id, so which gateway a zone's
# route uses is read from local.private_nat (the index the route takes) and
# where each gateway is from its tags, which name its zone.

run "one_nat_gateway_by_default" {
  assert {
    condition = (
      length(aws_nat_gateway.this) == 1 && length(aws_eip.nat) == 1 &&
      aws_nat_gateway.this[0].tags.Name == "slm-mesh-eu-west-1a" &&
      length(aws_route_table.private) == 3 && length(aws_route.private_nat) == 3 &&
      length(aws_route_table_association.private) == 3 &&
      jsonencode(local.private_nat) == jsonencode([0, 0, 0])
    )
    error_message = "By default one NAT gateway, in the first zone, must serve every zone's private route table."
  }
}

run "nat_gateway_per_az" {
  variables {
    nat_gateway_per_az = true
  }

  # Each zone's private subnet routes through a NAT gateway in that zone.
  assert {
    condition = (
      length(aws_eip.nat) == 3 &&
      [for n in aws_nat_gateway.this : n.tags.Name] == ["slm-mesh-eu-west-1a", "slm-mesh-eu-west-1b", "slm-mesh-eu-west-1c"] &&
      [for e in aws_eip.nat : e.tags.Name] == ["slm-mesh-nat-eu-west-1a", "slm-mesh-nat-eu-west-1b", "slm-mesh-nat-eu-west-1c"] &&
      length(aws_route.private_nat) == 3 &&
      jsonencode(local.private_nat) == jsonencode([0, 1, 2]) &&
      jsonencode(local.nat_gateway_zones) == jsonencode([0, 1, 2])
    )
    error_message = "With nat_gateway_per_az, each zone must have its NAT gateway and its private subnet route through it."
  }
}

# --- Secrets ----------------------------------------------------------------------

run "no_secret_in_user_data" {
  # Regression: user data holding a token, a key or a private key. The
  # secrets are the ones the real random and tls providers generated in
  # this run; each instance carries exactly its kind's document.
  assert {
    condition = alltrue([
      for k, n in aws_instance.node :
      n.user_data_base64 == base64gzip(n.tags.Role == "server" ? module.plan.server_user_data[k] : module.plan.user_data[n.tags.Role])
    ])
    error_message = "An instance's user data is not its document from module.plan (its kind's, or on a server its own)."
  }

  assert {
    condition = nonsensitive(alltrue(flatten([
      for kind, ud in merge(module.plan.user_data, module.plan.server_user_data) : [
        for s in concat(
          [
            random_bytes.consul_gossip.base64, random_bytes.nomad_gossip.base64,
            random_uuid.consul_management.result, random_uuid.consul_agent.result, random_uuid.consul_default.result,
            random_uuid.consul_nomad.result, random_uuid.nomad_management.result,
            random_password.rpc["caller"].result, random_password.rpc["inference"].result,
          ],
          random_password.api_key[*].result,
          [for k, key in tls_private_key.agent : key.private_key_pem],
          [for k, key in tls_private_key.agent : split("\n", key.private_key_pem)[1]],
          [tls_private_key.agent_ca.private_key_pem, split("\n", tls_private_key.agent_ca.private_key_pem)[1]],
          [for k, key in tls_private_key.rpc : key.private_key_pem],
          [tls_private_key.rpc_ca.private_key_pem],
        ) : !strcontains(ud, s)
      ]
    ])))
    error_message = "A token, gossip key, API key or private key is in a node's user data."
  }

  assert {
    condition     = alltrue([for kind, ud in merge(module.plan.user_data, module.plan.server_user_data) : !strcontains(ud, "PRIVATE KEY")])
    error_message = "A private key is in a node's user data."
  }

  # They are in SSM instead: SecureStrings under the cluster's KMS key.
  assert {
    condition = (
      length(aws_ssm_parameter.secret) == 24 &&
      alltrue([for k, p in aws_ssm_parameter.secret : p.type == "SecureString" && p.key_id == aws_kms_key.cluster.arn && startswith(p.name, "/slm-mesh/slm-mesh/")]) &&
      nonsensitive(aws_ssm_parameter.secret["server/nomad/management-token"].value == random_uuid.nomad_management.result) &&
      nonsensitive(aws_ssm_parameter.secret["server/api-keys"].value == join(",", random_password.api_key[*].result)) &&
      nonsensitive(aws_ssm_parameter.secret["server/rpc/tls/inference-key.pem"].value == tls_private_key.rpc["slm-inference"].private_key_pem)
    )
    error_message = "Every secret must be an SSM SecureString under the cluster's prefix and KMS key."
  }
}

run "operator_uses_a_client_certificate_and_a_narrow_token" {
  # Nomad's API asks every caller for a certificate of the agents' CA: the
  # operator's may only be a client's, and it is never in user data or SSM
  # (the operator writes it from the outputs). Day to day the operator's
  # token comes from the slm-operator policy, not the management token.
  assert {
    condition = (
      tls_locally_signed_cert.operator.ca_cert_pem == tls_self_signed_cert.agent_ca.cert_pem &&
      toset(tls_locally_signed_cert.operator.allowed_uses) == toset(["digital_signature", "client_auth"]) &&
      strcontains(output.nomad_env, "NOMAD_CLIENT_CERT=$PWD/slm-operator.pem NOMAD_CLIENT_KEY=$PWD/slm-operator-key.pem") &&
      strcontains(output.nomad_env, "(umask 077 && tofu -chdir=terraform/aws output -raw operator_key_pem > slm-operator-key.pem)") &&
      strcontains(output.operator_token_command, "nomad acl token create -name=operator -type=client -policy=slm-operator") &&
      alltrue([for k, p in aws_ssm_parameter.secret : nonsensitive(p.value != tls_private_key.operator.private_key_pem)])
    )
    error_message = "The operator must reach Nomad with a client-only certificate of the agents' CA and a token of the slm-operator policy."
  }
}

# --- IAM ----------------------------------------------------------------------------

run "names_fit_for_the_longest_cluster_name" {
  variables {
    cluster_name = "slm-mesh-production-eu-west-1-ab" # 32 characters, the most allowed
  }

  override_resource {
    target = aws_s3_bucket.artifacts
    values = { arn = "arn:aws:s3:::slm-mesh-production-eu-west-1-ab-artifacts-123456789012" }
  }

  # Regression: IAM's 38-character limit on name_prefix (AWS appends 26).
  assert {
    condition = alltrue([
      for p in concat(
        [aws_iam_role.flow_logs.name_prefix],
        [for k, r in aws_iam_role.node : r.name_prefix],
        [for k, r in aws_iam_instance_profile.node : r.name_prefix],
      ) : length(p) <= 38
    ])
    error_message = "An IAM name_prefix is longer than the 38 characters AWS allows."
  }

  # The other names built from cluster_name fit their limits too: bucket 63,
  # security group prefix 100, load balancer and target group prefix 6.
  assert {
    condition = (
      length(aws_s3_bucket.artifacts.bucket) <= 63 &&
      alltrue([for k, g in aws_security_group.this : length(g.name_prefix) <= 100]) &&
      length(aws_lb.api.name_prefix) <= 6 && length(aws_lb_target_group.gateway.name_prefix) <= 6
    )
    error_message = "A name built from cluster_name exceeds its AWS limit."
  }
}

run "artifacts_access_is_path_scoped" {
  # Regression: the instance roles reach more of the bucket than their
  # paths: servers may read releases/* and write snapshots/*, clients read
  # releases/* and models/*; nothing lists the bucket or reaches it whole.
  assert {
    condition = (
      [for s in data.aws_iam_policy_document.node["client"].statement : s.resources if anytrue([for a in s.actions : startswith(a, "s3:")])] ==
      [toset(["${aws_s3_bucket.artifacts.arn}/releases/*"]), toset(["${aws_s3_bucket.artifacts.arn}/models/*"])] &&
      [for s in data.aws_iam_policy_document.node["server"].statement : s.resources if anytrue([for a in s.actions : startswith(a, "s3:")])] ==
      [toset(["${aws_s3_bucket.artifacts.arn}/releases/*"]), toset(["${aws_s3_bucket.artifacts.arn}/snapshots/*"])]
    )
    error_message = "The instance roles' S3 access must be releases/* and models/* for clients, releases/* and snapshots/* for servers, only."
  }

  assert {
    condition = alltrue(flatten([
      for role, doc in data.aws_iam_policy_document.node : [
        for s in doc.statement : (
          !anytrue([for a in s.actions : startswith(a, "s3:")]) || (
            (s.actions == toset(["s3:GetObject"]) || (role == "server" && s.actions == toset(["s3:PutObject"]))) &&
            coalesce(s.effect, "Allow") == "Allow"
          )
        )
      ]
    ]))
    error_message = "The instance roles may only get releases and (clients) models, and (servers) put snapshots."
  }

  # SSM: clients read client/* only; servers client/* and server/*.
  assert {
    condition = (
      one([for s in data.aws_iam_policy_document.node["client"].statement : s.resources if s.sid == "ReadSecrets"]) ==
      toset(["arn:aws:ssm:eu-west-1:123456789012:parameter/slm-mesh/slm-mesh/client/*"]) &&
      one([for s in data.aws_iam_policy_document.node["server"].statement : s.resources if s.sid == "ReadSecrets"]) ==
      toset(["arn:aws:ssm:eu-west-1:123456789012:parameter/slm-mesh/slm-mesh/client/*", "arn:aws:ssm:eu-west-1:123456789012:parameter/slm-mesh/slm-mesh/server/*"])
    )
    error_message = "Clients must read client/* only, servers client/* and server/*."
  }

  # Regression: AmazonSSMManagedInstanceCore was attached to both roles, and
  # it allows ssm:GetParameter(s) on every parameter: any client node could
  # read the server secrets. No managed policy now; Session Manager's
  # channels only, and an explicit deny of the server subtree (reads and
  # decryption) for clients. tools/iac/emulator.py evaluates the same
  # against the policies the emulator holds, attached ones included.
  assert {
    condition = (
      one([for s in data.aws_iam_policy_document.node["client"].statement : s.resources if s.sid == "NoServerSecrets" && s.effect == "Deny" && s.actions == toset(["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory"])]) ==
      toset(["arn:aws:ssm:eu-west-1:123456789012:parameter/slm-mesh/slm-mesh/server", "arn:aws:ssm:eu-west-1:123456789012:parameter/slm-mesh/slm-mesh/server/*"]) &&
      flatten([
        for s in data.aws_iam_policy_document.node["client"].statement : [
          for c in s.condition : [c.test, c.variable, sort(c.values)]
        ] if s.sid == "NoServerSecretDecryption" && s.effect == "Deny" && s.actions == toset(["kms:Decrypt"])
      ]) == ["StringLike", "kms:EncryptionContext:PARAMETER_ARN", "arn:aws:ssm:eu-west-1:123456789012:parameter/slm-mesh/slm-mesh/server/*"] &&
      length([for s in data.aws_iam_policy_document.node["server"].statement : s if coalesce(s.effect, "Allow") == "Deny"]) == 0
    )
    error_message = "Clients must be denied reading and decrypting server/*, and only clients."
  }

  assert {
    condition = alltrue(flatten([
      for role, doc in data.aws_iam_policy_document.node : [
        for s in doc.statement : coalesce(s.effect, "Allow") == "Deny" || (
          alltrue([for a in s.actions : !contains(["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory", "ssm:*", "*"], a)]) ||
          s.sid == "ReadSecrets"
        )
      ]
    ]))
    error_message = "Only the ReadSecrets statement may allow reading SSM parameters."
  }

  assert {
    condition = one([for s in data.aws_iam_policy_document.node["client"].statement : s.actions if s.sid == "SessionManager"]) == toset([
      "ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
    ])
    error_message = "Session Manager must get its channels and registration only."
  }

  # Every instance has its kind's role, each role its kind's document.
  assert {
    condition = (
      alltrue([for k, n in aws_instance.node : n.iam_instance_profile == aws_iam_instance_profile.node[n.tags.Role == "server" ? "server" : "client"].name]) &&
      alltrue([for role, p in aws_iam_role_policy.node : p.policy == data.aws_iam_policy_document.node[role].json && p.role == aws_iam_role.node[role].id])
    )
    error_message = "A node has another kind's role, or a role another kind's policy."
  }

  # The bucket: private, TLS only, encrypted with the cluster's key; its
  # policy only denies.
  assert {
    condition = (
      aws_s3_bucket_public_access_block.artifacts.block_public_acls &&
      aws_s3_bucket_public_access_block.artifacts.block_public_policy &&
      aws_s3_bucket_public_access_block.artifacts.ignore_public_acls &&
      aws_s3_bucket_public_access_block.artifacts.restrict_public_buckets &&
      alltrue([for s in data.aws_iam_policy_document.artifacts.statement : s.effect == "Deny"]) &&
      one(one(aws_s3_bucket_server_side_encryption_configuration.artifacts.rule).apply_server_side_encryption_by_default).kms_master_key_id == aws_kms_key.cluster.arn &&
      aws_s3_bucket_policy.artifacts.policy == data.aws_iam_policy_document.artifacts.json
    )
    error_message = "The artifacts bucket must be private, KMS-encrypted and its policy deny-only."
  }
}

run "alarms" {
  # Every alarm notifies the one topic, when it fires and when it clears.
  assert {
    condition = alltrue([
      for a in concat(
        [aws_cloudwatch_metric_alarm.api_5xx, aws_cloudwatch_metric_alarm.api_response_time, aws_cloudwatch_metric_alarm.unhealthy_gateways],
        values(aws_cloudwatch_metric_alarm.node_status),
      ) : a.alarm_actions == toset([aws_sns_topic.alarms.arn]) && a.ok_actions == toset([aws_sns_topic.alarms.arn])
    ])
    error_message = "Every alarm must notify the alarms topic, firing and clearing."
  }

  # The 5xx rate: the gateways' and the load balancer's own 5xx over all
  # requests of the API's load balancer, in percent, above the default 5.
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.api_5xx.threshold == 5 &&
      aws_cloudwatch_metric_alarm.api_5xx.comparison_operator == "GreaterThanThreshold" &&
      one([for q in aws_cloudwatch_metric_alarm.api_5xx.metric_query : q.expression if coalesce(q.return_data, false)]) == "100 * (FILL(target, 0) + FILL(lb, 0)) / requests" &&
      { for q in aws_cloudwatch_metric_alarm.api_5xx.metric_query : q.id => one(q.metric).metric_name if length(q.metric) > 0 } ==
      { target = "HTTPCode_Target_5XX_Count", lb = "HTTPCode_ELB_5XX_Count", requests = "RequestCount" } &&
      alltrue([for q in aws_cloudwatch_metric_alarm.api_5xx.metric_query : one(q.metric).dimensions == tomap({ LoadBalancer = aws_lb.api.arn_suffix }) && one(q.metric).stat == "Sum" if length(q.metric) > 0])
    )
    error_message = "The 5xx alarm must compare (target 5xx + load balancer 5xx) / requests of the API's load balancer, in percent, with alarm_5xx_percent."
  }

  # The gateways' response time (p90) and their health.
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.api_response_time.metric_name == "TargetResponseTime" &&
      aws_cloudwatch_metric_alarm.api_response_time.extended_statistic == "p90" &&
      aws_cloudwatch_metric_alarm.api_response_time.threshold == 30 &&
      aws_cloudwatch_metric_alarm.api_response_time.dimensions == tomap({ LoadBalancer = aws_lb.api.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }) &&
      aws_cloudwatch_metric_alarm.unhealthy_gateways.metric_name == "UnHealthyHostCount" &&
      aws_cloudwatch_metric_alarm.unhealthy_gateways.threshold == 0 &&
      aws_cloudwatch_metric_alarm.unhealthy_gateways.comparison_operator == "GreaterThanThreshold" &&
      aws_cloudwatch_metric_alarm.unhealthy_gateways.dimensions == tomap({ LoadBalancer = aws_lb.api.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix })
    )
    error_message = "The response-time (p90 above alarm_response_seconds) and unhealthy-gateway alarms must watch the API's target group."
  }

  # One status-check alarm per node, on that node; silence counts as failing.
  assert {
    condition = (
      keys(aws_cloudwatch_metric_alarm.node_status) == keys(aws_instance.node) &&
      alltrue([
        for k, a in aws_cloudwatch_metric_alarm.node_status :
        a.metric_name == "StatusCheckFailed" && a.namespace == "AWS/EC2" && a.dimensions == tomap({ InstanceId = aws_instance.node[k].id }) && a.treat_missing_data == "breaching"
      ])
    )
    error_message = "Each node must have its own status-check alarm."
  }

  # No address subscribed unless one is given; the topic is encrypted with
  # a key CloudWatch may use.
  assert {
    condition = (
      length(aws_sns_topic_subscription.alarm_email) == 0 &&
      aws_sns_topic.alarms.kms_master_key_id == aws_kms_key.alarms.arn &&
      anytrue([for s in data.aws_iam_policy_document.alarms_key.statement : anytrue([for p in s.principals : p.type == "Service" && contains(p.identifiers, "cloudwatch.amazonaws.com")]) && contains(s.actions, "kms:GenerateDataKey*")])
    )
    error_message = "The alarms topic must have no subscriber by default and a key CloudWatch may use."
  }
}

run "alarm_email_and_thresholds" {
  variables {
    alarm_email            = "oncall@example.com"
    alarm_5xx_percent      = 1
    alarm_response_seconds = 12
  }

  assert {
    condition = (
      one(aws_sns_topic_subscription.alarm_email).protocol == "email" &&
      one(aws_sns_topic_subscription.alarm_email).endpoint == "oncall@example.com" &&
      aws_cloudwatch_metric_alarm.api_5xx.threshold == 1 &&
      aws_cloudwatch_metric_alarm.api_response_time.threshold == 12
    )
    error_message = "alarm_email must subscribe the address, and the thresholds must reach their alarms."
  }
}

run "rejects_bad_alarm_email" {
  command = plan

  variables {
    alarm_email = "not an address"
  }

  expect_failures = [var.alarm_email]
}

# --- Client nodes: Auto Scaling groups, drain, Spot -------------------------------
# The mock gives every launch template the same id, so which template a
# group uses is read from the template's own attributes by the group's
# key (aws_launch_template.client[role]).

run "client_nodes_in_autoscaling_groups" {
  # Gateway, caller and inference nodes run in one group each, from their
  # role's launch template, over every zone's private subnet; only the
  # servers are fixed instances.
  assert {
    condition = (
      tolist(keys(aws_autoscaling_group.client)) == tolist(["caller", "gateway", "inference"]) &&
      tolist(sort([for k, n in aws_instance.node : k])) == tolist(["server-0", "server-1", "server-2"]) &&
      alltrue([
        for role, g in aws_autoscaling_group.client :
        g.name == "slm-mesh-${role}" &&
        one(g.launch_template).id == aws_launch_template.client[role].id &&
        one(g.launch_template).version == tostring(aws_launch_template.client[role].latest_version) &&
        length(g.mixed_instances_policy) == 0 && !g.capacity_rebalance &&
        toset(g.vpc_zone_identifier) == toset(aws_subnet.private[*].id)
      ])
    )
    error_message = "Each client role must be one Auto Scaling group over the private subnets, launched on demand from its role's template."
  }

  # Sizes from the count variables (defaults 2, 1, 1): min = desired, and
  # room for one replacement above.
  assert {
    condition = alltrue([
      for role, want in { gateway = 2, caller = 1, inference = 1 } :
      aws_autoscaling_group.client[role].min_size == want &&
      aws_autoscaling_group.client[role].desired_capacity == want &&
      aws_autoscaling_group.client[role].max_size == want + 1
    ])
    error_message = "The groups' min, desired and max sizes must follow gateway_count, caller_count and inference_count."
  }

  # Gateways: the load balancer's health check decides too, and the group
  # registers them in the target group; the private nodes: EC2's checks,
  # no target group.
  assert {
    condition = (
      aws_autoscaling_group.client["gateway"].health_check_type == "ELB" &&
      aws_autoscaling_group.client["gateway"].target_group_arns == toset([aws_lb_target_group.gateway.arn]) &&
      aws_autoscaling_group.client["caller"].health_check_type == "EC2" &&
      aws_autoscaling_group.client["inference"].health_check_type == "EC2" &&
      length(aws_autoscaling_group.client["caller"].target_group_arns) == 0 &&
      length(aws_autoscaling_group.client["inference"].target_group_arns) == 0 &&
      alltrue([for role, g in aws_autoscaling_group.client : g.health_check_grace_period >= 300])
    )
    error_message = "Gateways must be checked by the load balancer (ELB) and registered in its target group; caller and inference nodes by EC2."
  }

  # What a launched node gets: its kind's user data (no volume, no secret),
  # its role's groups and the client profile, IMDSv2 with one hop, an
  # encrypted root volume, the cluster's tags and no auto-join tag.
  assert {
    condition = alltrue([
      for role, t in aws_launch_template.client : alltrue([
        t.user_data == base64gzip(module.plan.user_data[role]),
        t.vpc_security_group_ids == toset([aws_security_group.this["client"].id, aws_security_group.this[role].id]),
        t.iam_instance_profile[0].name == aws_iam_instance_profile.node["client"].name,
        t.metadata_options[0].http_tokens == "required",
        t.metadata_options[0].http_put_response_hop_limit == 1,
        t.block_device_mappings[0].ebs[0].encrypted == "true",
        t.block_device_mappings[0].ebs[0].kms_key_id == aws_kms_key.cluster.arn,
        t.block_device_mappings[0].ebs[0].volume_size == (role == "inference" ? 50 : 20),
        alltrue([for s in t.tag_specifications : s.tags.Role == role && s.tags.Cluster == "slm-mesh" && !contains(keys(s.tags), "SlmMeshJoin")]),
        toset([for s in t.tag_specifications : s.resource_type]) == toset(["instance", "volume"]),
      ])
    ])
    error_message = "A client launch template lacks its kind's user data, groups, profile, IMDSv2, encrypted volume or tags."
  }
}

run "group_sizes_follow_the_counts" {
  command = plan

  variables {
    gateway_count   = 3
    caller_count    = 2
    inference_count = 4
  }

  assert {
    condition = alltrue([
      for role, want in { gateway = 3, caller = 2, inference = 4 } :
      aws_autoscaling_group.client[role].min_size == want &&
      aws_autoscaling_group.client[role].desired_capacity == want &&
      aws_autoscaling_group.client[role].max_size == want + 1
    ])
    error_message = "The groups' sizes must follow the count variables."
  }
}

run "lifecycle_hooks_hold_terminating_nodes" {
  # Every client group holds a terminating instance for the drain: the
  # hook drain.sh completes, by the name in its drain.conf, with a heartbeat
  # longer than the drain's deadline; CONTINUE when no answer comes.
  assert {
    condition = (
      keys(aws_autoscaling_lifecycle_hook.drain) == ["caller", "gateway", "inference"] &&
      alltrue([
        for role, h in aws_autoscaling_lifecycle_hook.drain :
        h.autoscaling_group_name == aws_autoscaling_group.client[role].name &&
        h.lifecycle_transition == "autoscaling:EC2_INSTANCE_TERMINATING" &&
        h.default_result == "CONTINUE" &&
        h.heartbeat_timeout == 420 && h.heartbeat_timeout > module.plan.drain.deadline_seconds + 60 &&
        strcontains(module.plan.agent_configs[role]["/etc/slm-mesh/drain.conf"], "\ngroup=${h.autoscaling_group_name}\n") &&
        strcontains(module.plan.agent_configs[role]["/etc/slm-mesh/drain.conf"], "\nhook=${h.name}\n")
      ])
    )
    error_message = "Each client group needs a termination lifecycle hook that its nodes' drain.conf names, held longer than the drain."
  }
}

run "inference_on_spot" {
  variables {
    inference_spot = true
  }

  # Spot for inference only: several instance types, capacity-optimized,
  # no on-demand capacity, replacements launched on rebalance
  # recommendations; gateway and caller stay on demand.
  assert {
    condition = (
      length(aws_autoscaling_group.client["inference"].launch_template) == 0 &&
      aws_autoscaling_group.client["inference"].capacity_rebalance &&
      one(one(aws_autoscaling_group.client["inference"].mixed_instances_policy).instances_distribution).on_demand_base_capacity == 0 &&
      one(one(aws_autoscaling_group.client["inference"].mixed_instances_policy).instances_distribution).on_demand_percentage_above_base_capacity == 0 &&
      one(one(aws_autoscaling_group.client["inference"].mixed_instances_policy).instances_distribution).spot_allocation_strategy == "capacity-optimized" &&
      one(one(one(aws_autoscaling_group.client["inference"].mixed_instances_policy).launch_template).launch_template_specification).launch_template_id == aws_launch_template.client["inference"].id &&
      [for o in one(one(aws_autoscaling_group.client["inference"].mixed_instances_policy).launch_template).override : o.instance_type] ==
      ["c7i-flex.large", "c7i.large", "m7i-flex.large", "m7i.large", "c6i.large", "c7a.large"] &&
      alltrue([
        for role in ["gateway", "caller"] :
        length(aws_autoscaling_group.client[role].mixed_instances_policy) == 0 && length(aws_autoscaling_group.client[role].launch_template) == 1 &&
        !aws_autoscaling_group.client[role].capacity_rebalance
      ]) &&
      length(aws_autoscaling_lifecycle_hook.drain) == 3
    )
    error_message = "inference_spot must put the inference group (only) on Spot over several types, capacity-optimized, with no on-demand base."
  }
}

run "spot_types_need_two_vcpus" {
  command = plan

  variables {
    inference_spot = true
  }

  override_data {
    target = data.aws_ec2_instance_type.spot
    values = { default_vcpus = 1 }
  }

  expect_failures = [data.aws_ec2_instance_type.spot]
}

run "spot_needs_several_types" {
  command = plan

  variables {
    inference_spot                = true
    inference_spot_instance_types = ["c7i.large"]
  }

  expect_failures = [var.inference_spot_instance_types]
}

run "lifecycle_action_scoped_to_own_groups" {
  # Regression guard: a client node may complete lifecycle actions of this
  # cluster's three client groups, by their ARNs, and nothing else of Auto
  # Scaling; servers nothing of it.
  assert {
    condition = (
      one([for s in data.aws_iam_policy_document.node["client"].statement : s.actions if s.sid == "CompleteOwnLifecycleActions" && coalesce(s.effect, "Allow") == "Allow"]) ==
      toset(["autoscaling:CompleteLifecycleAction"]) &&
      one([for s in data.aws_iam_policy_document.node["client"].statement : s.resources if s.sid == "CompleteOwnLifecycleActions"]) == toset([
        for role in ["gateway", "caller", "inference"] :
        "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/slm-mesh-${role}"
      ]) &&
      alltrue([for role, g in aws_autoscaling_group.client : g.name == "slm-mesh-${role}"]) &&
      alltrue(flatten([
        for role, doc in data.aws_iam_policy_document.node : [
          for s in doc.statement : s.sid == "CompleteOwnLifecycleActions" || !anytrue([for a in s.actions : startswith(a, "autoscaling:")])
        ]
      ])) &&
      length([for s in data.aws_iam_policy_document.node["server"].statement : s if s.sid == "CompleteOwnLifecycleActions"]) == 0
    )
    error_message = "Clients may only autoscaling:CompleteLifecycleAction on the cluster's own client groups; servers not at all."
  }

  # The drain token: the servers may write that one parameter (and encrypt
  # it with the cluster's key through SSM), clients may write none.
  assert {
    condition = (
      aws_ssm_parameter.drain_token.name == "/slm-mesh/slm-mesh/client/nomad/drain-token" &&
      aws_ssm_parameter.drain_token.type == "SecureString" &&
      aws_ssm_parameter.drain_token.key_id == aws_kms_key.cluster.arn &&
      one([for s in data.aws_iam_policy_document.node["server"].statement : s.resources if s.sid == "PublishDrainToken" && s.actions == toset(["ssm:PutParameter"])]) ==
      toset([aws_ssm_parameter.drain_token.arn]) &&
      alltrue(flatten([
        for role, doc in data.aws_iam_policy_document.node : [
          for s in doc.statement : s.sid == "PublishDrainToken" || !anytrue([for a in s.actions : contains(["ssm:PutParameter", "ssm:*", "*"], a)])
        ]
      ])) &&
      length([for s in data.aws_iam_policy_document.node["client"].statement : s if s.sid == "PublishDrainToken" || s.sid == "EncryptDrainToken"]) == 0
    )
    error_message = "Only the servers may write the drain token's parameter, and no other."
  }
}

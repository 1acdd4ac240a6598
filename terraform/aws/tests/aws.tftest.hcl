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

  # eu-west-1 as the EC2 API describes it when asked for t3.small and
  # c7i-flex.large: t3.small in all three zones, c7i-flex.large in a and b
  # only (newer types are not in every zone), one row per (zone, type).
  mock_data "aws_ec2_instance_type_offerings" {
    defaults = {
      id             = "eu-west-1"
      instance_types = ["t3.small", "c7i-flex.large", "t3.small", "t3.small", "c7i-flex.large"]
      locations      = ["eu-west-1a", "eu-west-1a", "eu-west-1c", "eu-west-1b", "eu-west-1b"]
      location_types = ["availability-zone", "availability-zone", "availability-zone", "availability-zone", "availability-zone"]
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

  # What the servers boot with: both agents expect three servers. The
  # instance carries exactly the document read here (base64gzip is
  # deterministic).
  assert {
    condition = alltrue([
      for k, n in aws_instance.node : alltrue([
        n.user_data_base64 == base64gzip(module.plan.user_data.server),
        strcontains({ for f in yamldecode(module.plan.user_data.server).write_files : f.path => f.content }["/etc/slm-mesh/consul/server.hcl"], "bootstrap_expect = 3\n"),
        strcontains({ for f in yamldecode(module.plan.user_data.server).write_files : f.path => f.content }["/etc/slm-mesh/nomad/server.hcl"], "bootstrap_expect = 3\n"),
      ]) if n.tags.Role == "server"
    ])
    error_message = "Every server's user data must set bootstrap_expect = 3 for Consul and Nomad."
  }

  # Spread over both zones, each data volume in its server's zone, and only
  # servers carry the auto-join tag.
  assert {
    condition = (
      length(distinct([for k, v in aws_ebs_volume.server_data : v.availability_zone])) == 2 &&
      alltrue([for k, v in aws_ebs_volume.server_data : v.encrypted && v.availability_zone == aws_subnet.private[local.nodes[k].zone].availability_zone]) &&
      alltrue([for k, a in aws_volume_attachment.server_data : a.instance_id == aws_instance.node[k].id && a.volume_id == aws_ebs_volume.server_data[k].id]) &&
      sort([for k, n in aws_instance.node : k if lookup(n.tags, "SlmMeshJoin", null) == "slm-mesh-server"]) == tolist(["server-0", "server-1", "server-2"])
    )
    error_message = "The servers must span both zones, each with its own data volume, and alone carry the join tag."
  }

  # The zones are the first two that offer every chosen instance type
  # (eu-west-1c has no c7i-flex.large in the mock's answer).
  assert {
    condition     = output.availability_zones == tolist(["eu-west-1a", "eu-west-1b"]) && tolist(aws_subnet.private[*].availability_zone) == tolist(["eu-west-1a", "eu-west-1b"])
    error_message = "The zones must be those that offer every chosen instance type."
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
      n.user_data_base64 == base64gzip(module.plan.user_data[n.tags.Role])
    ])
    error_message = "An instance's user data is not its kind's document from module.plan."
  }

  assert {
    condition = nonsensitive(alltrue(flatten([
      for kind, ud in module.plan.user_data : [
        for s in concat(
          [
            random_bytes.consul_gossip.base64, random_bytes.nomad_gossip.base64,
            random_uuid.consul_management.result, random_uuid.consul_agent.result, random_uuid.consul_default.result,
            random_uuid.consul_nomad.result, random_uuid.nomad_management.result, random_password.rpc.result,
          ],
          random_password.api_key[*].result,
          [for k, key in tls_private_key.agent : key.private_key_pem],
          [for k, key in tls_private_key.agent : split("\n", key.private_key_pem)[1]],
          [tls_private_key.agent_ca.private_key_pem, split("\n", tls_private_key.agent_ca.private_key_pem)[1]],
        ) : !strcontains(ud, s)
      ]
    ])))
    error_message = "A token, gossip key, API key or private key is in a node's user data."
  }

  assert {
    condition     = alltrue([for kind, ud in module.plan.user_data : !strcontains(ud, "PRIVATE KEY")])
    error_message = "A private key is in a node's user data."
  }

  # They are in SSM instead: SecureStrings under the cluster's KMS key.
  assert {
    condition = (
      length(aws_ssm_parameter.secret) == 18 &&
      alltrue([for k, p in aws_ssm_parameter.secret : p.type == "SecureString" && p.key_id == aws_kms_key.cluster.arn && startswith(p.name, "/slm-mesh/slm-mesh/")]) &&
      nonsensitive(aws_ssm_parameter.secret["server/nomad/management-token"].value == random_uuid.nomad_management.result) &&
      nonsensitive(aws_ssm_parameter.secret["server/api-keys"].value == join(",", random_password.api_key[*].result))
    )
    error_message = "Every secret must be an SSM SecureString under the cluster's prefix and KMS key."
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
  # paths: clients may read releases/*, servers also write snapshots/*;
  # nothing lists the bucket or reaches it whole.
  assert {
    condition = (
      [for s in data.aws_iam_policy_document.node["client"].statement : s.resources if anytrue([for a in s.actions : startswith(a, "s3:")])] ==
      [toset(["${aws_s3_bucket.artifacts.arn}/releases/*"])] &&
      [for s in data.aws_iam_policy_document.node["server"].statement : s.resources if anytrue([for a in s.actions : startswith(a, "s3:")])] ==
      [toset(["${aws_s3_bucket.artifacts.arn}/releases/*"]), toset(["${aws_s3_bucket.artifacts.arn}/snapshots/*"])]
    )
    error_message = "The instance roles' S3 access must be releases/* (and snapshots/* for servers) only."
  }

  assert {
    condition = alltrue(flatten([
      for role, doc in data.aws_iam_policy_document.node : [
        for s in doc.statement : (
          !anytrue([for a in s.actions : startswith(a, "s3:")]) ||
          (s.actions == toset(["s3:GetObject"]) || (role == "server" && s.actions == toset(["s3:PutObject"])))
        ) && coalesce(s.effect, "Allow") == "Allow"
      ]
    ]))
    error_message = "The instance roles may only get releases and (servers) put snapshots."
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

# The public API: an Application Load Balancer in the public subnets. It
# terminates TLS (443; 80 only redirects) and forwards /v1/* to the gateway
# nodes' port 3111 in the private subnets; any other path, /health and
# /metrics included, gets a fixed 404. module.plan decides the listeners,
# paths and target, and its tests hold them.
#
# The certificate, in order of preference: certificate_arn; an ACM
# certificate for domain_name, validated through route53_zone_id; or a
# self-signed one made here and imported into ACM, whose CA the api_ca_pem
# output gives to clients (curl --cacert).

locals {
  api            = module.plan.api
  use_domain     = var.certificate_arn == null && var.domain_name != null
  use_selfsigned = var.certificate_arn == null && var.domain_name == null
  api_host       = var.domain_name != null ? var.domain_name : aws_lb.api.dns_name
  certificate_arn = (
    var.certificate_arn != null ? var.certificate_arn :
    local.use_domain ? aws_acm_certificate_validation.api[0].certificate_arn :
    aws_acm_certificate.selfsigned[0].arn
  )
}

# The API is the product, so this load balancer faces the internet; its
# security group admits only 443/80 from allowed_api_cidrs.
#tfsec:ignore:aws-elb-alb-not-public:exp:2027-06-30
resource "aws_lb" "api" {
  name_prefix                = "slm-"
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = aws_subnet.public[*].id
  security_groups            = [aws_security_group.this["alb"].id]
  drop_invalid_header_fields = true
  # Generation can take minutes; the gateway's own request timeout (5m by
  # default) is the one that should end a request.
  idle_timeout = 330

  tags = { Name = "${local.name}-api" }
}

resource "aws_lb_target_group" "gateway" {
  name_prefix = "slm-"
  vpc_id      = aws_vpc.this.id
  target_type = "instance"
  port        = local.api.target.port
  protocol    = local.api.target.protocol
  # The gateways drain for drain_seconds after SIGTERM.
  deregistration_delay = 60

  # /health is 200 when a request can travel gateway -> caller -> inference,
  # so only gateways that can answer get traffic. The gateways' group
  # replaces a gateway this check finds unhealthy (README, "Scale").
  health_check {
    path                = local.api.target.health_path
    protocol            = local.api.target.protocol
    port                = "traffic-port"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  lifecycle {
    create_before_destroy = true
  }
}

# The gateways' Auto Scaling group registers its instances here, on this
# port (aws_autoscaling_group.client["gateway"], compute.tf).

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.api.arn
  port              = local.api.listeners.https.port
  protocol          = local.api.listeners.https.protocol
  ssl_policy        = local.api.listeners.https.ssl_policy
  certificate_arn   = local.certificate_arn

  default_action {
    type = "fixed-response"

    fixed_response {
      content_type = "application/json"
      status_code  = tostring(local.api.listeners.https.default_status)
      message_body = "{\"error\":{\"message\":\"not found\",\"type\":\"invalid_request_error\",\"code\":\"not_found\"}}"
    }
  }
}

resource "aws_lb_listener_rule" "api" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }

  condition {
    path_pattern {
      values = local.api.forward_paths
    }
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.api.arn
  port              = local.api.listeners.http.port
  protocol          = local.api.listeners.http.protocol

  default_action {
    type = "redirect"

    redirect {
      port        = local.api.listeners.http.redirect.port
      protocol    = local.api.listeners.http.redirect.protocol
      status_code = local.api.listeners.http.redirect.status_code
    }
  }
}

# --- A certificate for domain_name (ACM, validated through Route 53) ---------------

resource "aws_acm_certificate" "api" {
  count = local.use_domain ? 1 : 0

  domain_name       = var.domain_name
  validation_method = "DNS"

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = var.route53_zone_id != null
      error_message = "domain_name needs route53_zone_id (the zone that holds it), or give certificate_arn instead."
    }
  }
}

resource "aws_route53_record" "api_validation" {
  for_each = local.use_domain ? {
    for o in aws_acm_certificate.api[0].domain_validation_options : o.domain_name => o
  } : {}

  zone_id         = var.route53_zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "api" {
  count = local.use_domain ? 1 : 0

  certificate_arn         = aws_acm_certificate.api[0].arn
  validation_record_fqdns = [for r in aws_route53_record.api_validation : r.fqdn]
}

resource "aws_route53_record" "api" {
  count = var.domain_name != null && var.route53_zone_id != null ? 1 : 0

  zone_id = var.route53_zone_id
  name    = var.domain_name
  type    = "A"

  alias {
    name                   = aws_lb.api.dns_name
    zone_id                = aws_lb.api.zone_id
    evaluate_target_health = true
  }
}

# --- Otherwise a self-signed certificate ---------------------------------------------
# A CA of its own (never the agents' CA) signs a certificate for the load
# balancer's DNS name. Clients trust it with `curl --cacert` (api_ca_pem).

resource "tls_private_key" "api_ca" {
  count = local.use_selfsigned ? 1 : 0

  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "api_ca" {
  count = local.use_selfsigned ? 1 : 0

  private_key_pem       = tls_private_key.api_ca[0].private_key_pem
  is_ca_certificate     = true
  validity_period_hours = 5 * 365 * 24
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]

  subject {
    common_name  = "${var.cluster_name} API CA"
    organization = "slm-mesh"
  }
}

resource "tls_private_key" "api" {
  count = local.use_selfsigned ? 1 : 0

  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "api" {
  count = local.use_selfsigned ? 1 : 0

  private_key_pem = tls_private_key.api[0].private_key_pem
  dns_names       = [aws_lb.api.dns_name]

  subject {
    common_name = aws_lb.api.dns_name
  }
}

resource "tls_locally_signed_cert" "api" {
  count = local.use_selfsigned ? 1 : 0

  cert_request_pem      = tls_cert_request.api[0].cert_request_pem
  ca_private_key_pem    = tls_private_key.api_ca[0].private_key_pem
  ca_cert_pem           = tls_self_signed_cert.api_ca[0].cert_pem
  validity_period_hours = 365 * 24
  early_renewal_hours   = 30 * 24
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth"]
}

resource "aws_acm_certificate" "selfsigned" {
  count = local.use_selfsigned ? 1 : 0

  private_key       = tls_private_key.api[0].private_key_pem
  certificate_body  = tls_locally_signed_cert.api[0].cert_pem
  certificate_chain = tls_self_signed_cert.api_ca[0].cert_pem

  lifecycle {
    create_before_destroy = true
  }
}

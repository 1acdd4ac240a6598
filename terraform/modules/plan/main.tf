locals {
  # --- Address plan -----------------------------------------------------------
  # A CIDR a contains CIDR b when b's prefix is at least as long and b's
  # network, masked to a's prefix length, is a's network. Two CIDRs overlap
  # exactly when one contains the other.
  vpc_prefix = tonumber(split("/", var.vpc_cidr)[1])
  subnets    = concat(var.public_subnet_cidrs, var.private_subnet_cidrs)

  subnets_outside_vpc = [
    for c in local.subnets : c
    if !(tonumber(split("/", c)[1]) >= local.vpc_prefix && cidrhost("${split("/", c)[0]}/${local.vpc_prefix}", 0) == cidrhost(var.vpc_cidr, 0))
  ]
  overlapping_subnets = distinct(flatten([
    for i, a in local.subnets : [
      for j, b in local.subnets : "${a} and ${b}"
      if i < j && (
        (tonumber(split("/", b)[1]) >= tonumber(split("/", a)[1]) && cidrhost("${split("/", b)[0]}/${split("/", a)[1]}", 0) == cidrhost(a, 0)) ||
        (tonumber(split("/", a)[1]) >= tonumber(split("/", b)[1]) && cidrhost("${split("/", a)[0]}/${split("/", b)[1]}", 0) == cidrhost(b, 0))
      )
    ]
  ]))

  # --- Names ------------------------------------------------------------------
  # IAM allows at most 38 characters in a name_prefix (AWS appends 26). A
  # cluster_name may have 32, so long names are shortened to 15 characters
  # plus 8 of their hash, which keeps two long names that share a beginning
  # apart. Every prefix below is at most 24 + 1 + 9 + 1 = 35 characters.
  short_name = length(var.cluster_name) <= 24 ? var.cluster_name : "${substr(var.cluster_name, 0, 15)}-${substr(sha1(var.cluster_name), 0, 8)}"
  iam_name_prefixes = {
    for role in ["server", "client", "flow-logs"] : role => "${local.short_name}-${role}-"
  }

  # Where the secrets live in SSM Parameter Store. Clients may read
  # client/*; servers may read client/* and server/*.
  ssm_prefix = "/slm-mesh/${var.cluster_name}"

  # --- Ports ------------------------------------------------------------------
  # Every port a Nomad or Consul agent listens on. None of them may be
  # reachable from the internet: the agents' HTTP APIs hand out cluster
  # control, and gossip/RPC carry secrets.
  cluster_ports = {
    nomad_http        = { protocol = "tcp", from = 4646, to = 4646 }
    nomad_rpc         = { protocol = "tcp", from = 4647, to = 4647 }
    nomad_serf_tcp    = { protocol = "tcp", from = 4648, to = 4648 }
    nomad_serf_udp    = { protocol = "udp", from = 4648, to = 4648 }
    consul_server_rpc = { protocol = "tcp", from = 8300, to = 8300 }
    consul_serf_tcp   = { protocol = "tcp", from = 8301, to = 8302 }
    consul_serf_udp   = { protocol = "udp", from = 8301, to = 8302 }
    consul_http       = { protocol = "tcp", from = 8500, to = 8500 }
    consul_dns_tcp    = { protocol = "tcp", from = 8600, to = 8600 }
    consul_dns_udp    = { protocol = "udp", from = 8600, to = 8600 }
  }

  # Nomad's default range for dynamic ports: caller and inference listen on
  # one, and their peers reach them across the VPC.
  dynamic_ports = { protocol = "tcp", from = 20000, to = 32000 }
  # Who calls whom on them: tier (its nodes' extra group) => the group of
  # the only nodes that may call it.
  service_rpc = { caller = "gateway", inference = "caller" }

  # Which cluster ports each kind of node opens to the rest of the VPC.
  # Servers need all of them. Clients only need serf LAN (Consul) and Nomad's
  # HTTP API (the servers proxy `alloc logs/exec` to it); their Consul HTTP
  # API and DNS listen on loopback only.
  server_ports = keys(local.cluster_ports)
  client_ports = ["nomad_http", "consul_serf_tcp", "consul_serf_udp"]

  # --- The public API -----------------------------------------------------------
  # An Application Load Balancer in the public subnets terminates TLS and
  # forwards only the OpenAI-compatible routes to the gateway nodes in the
  # private subnets; /health and /metrics answer 404 from the internet. Port
  # 80 exists only to redirect to 443. terraform/aws builds its listeners
  # from these values.
  public_ports = [443, 80]
  api_listeners = {
    https = {
      port       = 443
      protocol   = "HTTPS"
      ssl_policy = var.api_tls_policy
      # Anything not matched by forward_paths.
      default_status = 404
    }
    http = {
      port     = 80
      protocol = "HTTP"
      redirect = { port = "443", protocol = "HTTPS", status_code = "HTTP_301" }
    }
  }
  api_forward_paths = ["/v1/*"]
  api_target = {
    port        = var.api_port
    protocol    = "HTTP"
    health_path = "/health"
  }

  # --- Security group rules -----------------------------------------------------
  # One flat list, consumed as-is by terraform/aws (one aws_security_group_rule
  # each). `sg` names the security group: "alb" (the load balancer),
  # "gateway" (extra group of the gateway nodes: the API from the ALB only),
  # "caller" and "inference" (extra groups of those nodes: service RPC from
  # the tier before only), "server" (control plane) or "client" (every
  # Nomad client). A rule has
  # either cidr_blocks or source_sg (another of these groups; for egress, the
  # destination).
  ingress_rules = concat(
    [
      for port in local.public_ports : {
        name        = port == 443 ? "https" : "http-redirect"
        sg          = "alb"
        protocol    = "tcp"
        from_port   = port
        to_port     = port
        cidr_blocks = var.allowed_api_cidrs
        source_sg   = null
        description = port == 443 ? "The API over TLS" : "Redirect to HTTPS only"
      }
    ],
    [{
      name        = "api-from-alb"
      sg          = "gateway"
      protocol    = "tcp"
      from_port   = var.api_port
      to_port     = var.api_port
      cidr_blocks = []
      source_sg   = "alb"
      description = "The gateway job API and health check, from the load balancer only"
    }],
    [
      for name in local.server_ports : {
        name        = "vpc-${replace(name, "_", "-")}"
        sg          = "server"
        protocol    = local.cluster_ports[name].protocol
        from_port   = local.cluster_ports[name].from
        to_port     = local.cluster_ports[name].to
        cidr_blocks = [var.vpc_cidr]
        source_sg   = null
        description = "Cluster traffic inside the VPC: ${replace(name, "_", " ")}"
      }
    ],
    [
      for name in local.client_ports : {
        name        = "vpc-${replace(name, "_", "-")}"
        sg          = "client"
        protocol    = local.cluster_ports[name].protocol
        from_port   = local.cluster_ports[name].from
        to_port     = local.cluster_ports[name].to
        cidr_blocks = [var.vpc_cidr]
        source_sg   = null
        description = "Cluster traffic inside the VPC: ${replace(name, "_", " ")}"
      }
    ],
    # Service RPC, tier by tier: a caller hears the gateways, an inference
    # instance the callers, and nothing else reaches their dynamic ports
    # (a compromised gateway cannot call inference around the caller's
    # policy). Each service's own health and metrics checks come from its
    # node's Consul agent, which security groups do not see.
    [
      for tier, from in local.service_rpc : {
        name        = "rpc-from-${from}"
        sg          = tier
        protocol    = local.dynamic_ports.protocol
        from_port   = local.dynamic_ports.from
        to_port     = local.dynamic_ports.to
        cidr_blocks = []
        source_sg   = from
        description = "Service RPC on Nomad dynamic ports, from the ${from} nodes only"
      }
    ],
  )

  # Egress: the ALB reaches the gateways' API port and nothing else. Nodes
  # reach anything inside the VPC, and HTTP/HTTPS out through the NAT gateway
  # for packages (apt verifies signatures), SSM, S3 (through the gateway
  # endpoint), the model download. DNS goes to the VPC resolver and NTP to
  # the link-local Time Sync service, neither of which security groups filter.
  egress_rules = concat(
    [{
      name        = "api-to-gateways"
      sg          = "alb"
      protocol    = "tcp"
      from_port   = var.api_port
      to_port     = var.api_port
      cidr_blocks = []
      source_sg   = "gateway"
      description = "Requests and health checks to the gateway nodes"
    }],
    flatten([
      for sg in ["server", "client"] : [
        {
          name        = "vpc-all"
          sg          = sg
          protocol    = "-1"
          from_port   = 0
          to_port     = 0
          cidr_blocks = [var.vpc_cidr]
          source_sg   = null
          description = "Anything inside the VPC"
        },
        {
          name        = "http"
          sg          = sg
          protocol    = "tcp"
          from_port   = 80
          to_port     = 80
          cidr_blocks = ["0.0.0.0/0"]
          source_sg   = null
          description = "Ubuntu package mirrors (apt verifies signatures)"
        },
        {
          name        = "https"
          sg          = sg
          protocol    = "tcp"
          from_port   = 443
          to_port     = 443
          cidr_blocks = ["0.0.0.0/0"]
          source_sg   = null
          description = "HashiCorp packages, AWS APIs (SSM, auto-join, S3), model download"
        },
      ]
    ]),
  )

  security_group_rules = merge(
    { for r in local.ingress_rules : "${r.sg}-ingress-${r.name}" => merge(r, { type = "ingress", cidr_blocks = tolist(r.cidr_blocks) }) },
    { for r in local.egress_rules : "${r.sg}-egress-${r.name}" => merge(r, { type = "egress", cidr_blocks = tolist(r.cidr_blocks) }) },
  )

  # Ingress rules open to the whole internet on anything but the load
  # balancer's 443 and 80. Must stay empty: the output below refuses to plan
  # otherwise, and the tests check it.
  world_open_rules = [
    for key, r in local.security_group_rules : key
    if r.type == "ingress" && (contains(r.cidr_blocks, "0.0.0.0/0") || contains(r.cidr_blocks, "::/0")) && !(
      r.sg == "alb" && r.protocol == "tcp" && r.from_port == r.to_port && contains(local.public_ports, r.from_port)
    )
  ]

  # Nodes must not accept anything from outside the VPC: every node ingress
  # rule comes from the VPC's own addresses or from one of its groups.
  node_rules_from_outside = [
    for key, r in local.security_group_rules : key
    if r.type == "ingress" && r.sg != "alb" && !alltrue([
      for c in r.cidr_blocks :
      tonumber(split("/", c)[1]) >= local.vpc_prefix && cidrhost("${split("/", c)[0]}/${local.vpc_prefix}", 0) == cidrhost(var.vpc_cidr, 0)
    ])
  ]
}

# A single server has no fault tolerance: losing it loses the cluster's
# state until a snapshot is restored. Allowed for development, with a
# warning on every plan.
check "single_server" {
  assert {
    condition     = var.server_count >= 3
    error_message = "server_count = 1: the control plane has no fault tolerance. Use it for development only; production needs 3 (or 5)."
  }
}

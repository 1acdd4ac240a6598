locals {
  # --- Address plan -----------------------------------------------------------
  # A CIDR a contains CIDR b when b's prefix is at least as long and b's
  # network, masked to a's prefix length, is a's network. Two CIDRs overlap
  # exactly when one contains the other.
  vpc_prefix     = tonumber(split("/", var.vpc_cidr)[1])
  public_prefix  = tonumber(split("/", var.public_subnet_cidr)[1])
  private_prefix = tonumber(split("/", var.private_subnet_cidr)[1])

  public_in_vpc  = local.public_prefix >= local.vpc_prefix && cidrhost("${split("/", var.public_subnet_cidr)[0]}/${local.vpc_prefix}", 0) == cidrhost(var.vpc_cidr, 0)
  private_in_vpc = local.private_prefix >= local.vpc_prefix && cidrhost("${split("/", var.private_subnet_cidr)[0]}/${local.vpc_prefix}", 0) == cidrhost(var.vpc_cidr, 0)
  subnets_overlap = (
    (local.private_prefix >= local.public_prefix && cidrhost("${split("/", var.private_subnet_cidr)[0]}/${local.public_prefix}", 0) == cidrhost(var.public_subnet_cidr, 0)) ||
    (local.public_prefix >= local.private_prefix && cidrhost("${split("/", var.public_subnet_cidr)[0]}/${local.private_prefix}", 0) == cidrhost(var.private_subnet_cidr, 0))
  )

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

  # Which cluster ports each kind of node opens to the rest of the VPC.
  # Servers (the gateway node) need all of them. Clients only need serf LAN
  # (Consul) and Nomad's HTTP API (the servers proxy `alloc logs/exec` to it);
  # their Consul HTTP API and DNS listen on loopback only.
  server_ports = keys(local.cluster_ports)
  client_ports = ["nomad_http", "consul_serf_tcp", "consul_serf_udp"]

  ssh_enabled   = length(var.allowed_ssh_cidrs) > 0
  admin_enabled = length(var.allowed_admin_cidrs) > 0

  # --- Security group rules -----------------------------------------------------
  # One flat list, consumed as-is by terraform/aws (one aws_security_group_rule
  # each). `sg` names the security group: "gateway" or "private".
  ingress_rules = concat(
    [{
      name        = "api"
      sg          = "gateway"
      protocol    = "tcp"
      from_port   = var.api_port
      to_port     = var.api_port
      cidr_blocks = var.allowed_api_cidrs
      description = "OpenAI-compatible API served by the gateway job"
    }],
    local.ssh_enabled ? [{
      name        = "ssh"
      sg          = "gateway"
      protocol    = "tcp"
      from_port   = 22
      to_port     = 22
      cidr_blocks = var.allowed_ssh_cidrs
      description = "SSH from operators; the gateway is also the jump host"
      }, {
      name        = "ssh-from-public-subnet"
      sg          = "private"
      protocol    = "tcp"
      from_port   = 22
      to_port     = 22
      cidr_blocks = [var.public_subnet_cidr]
      description = "SSH jumped through the gateway node"
    }] : [],
    local.admin_enabled ? [
      for name in ["nomad_http", "consul_http"] : {
        name        = "admin-${replace(name, "_", "-")}"
        sg          = "gateway"
        protocol    = local.cluster_ports[name].protocol
        from_port   = local.cluster_ports[name].from
        to_port     = local.cluster_ports[name].to
        cidr_blocks = var.allowed_admin_cidrs
        description = "Direct admin access to the ${replace(name, "_", " ")} API"
      }
    ] : [],
    [
      for name in local.server_ports : {
        name        = "vpc-${replace(name, "_", "-")}"
        sg          = "gateway"
        protocol    = local.cluster_ports[name].protocol
        from_port   = local.cluster_ports[name].from
        to_port     = local.cluster_ports[name].to
        cidr_blocks = [var.vpc_cidr]
        description = "Cluster traffic inside the VPC: ${replace(name, "_", " ")}"
      }
    ],
    [
      for name in local.client_ports : {
        name        = "vpc-${replace(name, "_", "-")}"
        sg          = "private"
        protocol    = local.cluster_ports[name].protocol
        from_port   = local.cluster_ports[name].from
        to_port     = local.cluster_ports[name].to
        cidr_blocks = [var.vpc_cidr]
        description = "Cluster traffic inside the VPC: ${replace(name, "_", " ")}"
      }
    ],
    [{
      name        = "vpc-dynamic-ports"
      sg          = "private"
      protocol    = local.dynamic_ports.protocol
      from_port   = local.dynamic_ports.from
      to_port     = local.dynamic_ports.to
      cidr_blocks = [var.vpc_cidr]
      description = "Service RPC on Nomad dynamic ports (gateway to caller, caller to inference)"
    }],
  )

  # Egress is limited to what the nodes need: anything inside the VPC, and
  # HTTP/HTTPS out through the IGW/NAT for the Ubuntu and HashiCorp package
  # repositories, the model download and service binaries. DNS goes to the
  # VPC resolver and NTP to the link-local Time Sync service, neither of which
  # security groups filter.
  egress_rules = flatten([
    for sg in ["gateway", "private"] : [
      {
        name        = "vpc-all"
        sg          = sg
        protocol    = "-1"
        from_port   = 0
        to_port     = 0
        cidr_blocks = [var.vpc_cidr]
        description = "Anything inside the VPC"
      },
      {
        name        = "http"
        sg          = sg
        protocol    = "tcp"
        from_port   = 80
        to_port     = 80
        cidr_blocks = ["0.0.0.0/0"]
        description = "Ubuntu package mirrors (apt verifies signatures)"
      },
      {
        name        = "https"
        sg          = sg
        protocol    = "tcp"
        from_port   = 443
        to_port     = 443
        cidr_blocks = ["0.0.0.0/0"]
        description = "HashiCorp packages, AWS APIs (auto-join), model and binary downloads"
      },
    ]
  ])

  # The rules that are meant to reach the internet. terraform/aws creates
  # them apart from the others, so that tfsec's findings on them can be
  # ignored with a reason while any other rule open to the internet fails.
  internet_rules = ["gateway-ingress-api", "gateway-egress-http", "gateway-egress-https", "private-egress-http", "private-egress-https"]

  # cidr_blocks is normalised to a list so that every rule has one type.
  security_group_rules = {
    for key, r in merge(
      { for r in local.ingress_rules : "${r.sg}-ingress-${r.name}" => merge(r, { type = "ingress" }) },
      { for r in local.egress_rules : "${r.sg}-egress-${r.name}" => merge(r, { type = "egress" }) },
    ) : key => merge(r, { cidr_blocks = tolist(r.cidr_blocks), internet = contains(local.internet_rules, key) })
  }

  # Rules that would expose a cluster port to the whole internet. Must stay
  # empty; the output below refuses to plan otherwise, and the tests check it.
  world_open_cluster_rules = [
    for key, r in local.security_group_rules : key
    if r.type == "ingress" && (contains(r.cidr_blocks, "0.0.0.0/0") || contains(r.cidr_blocks, "::/0")) && anytrue([
      for p in values(local.cluster_ports) :
      (r.protocol == "-1" || r.protocol == p.protocol) && (r.protocol == "-1" || (r.from_port <= p.to && r.to_port >= p.from))
    ])
  ]

  # Private nodes must not accept anything from outside the VPC.
  private_rules_from_outside = [
    for key, r in local.security_group_rules : key
    if r.type == "ingress" && r.sg == "private" && !alltrue([
      for c in r.cidr_blocks :
      tonumber(split("/", c)[1]) >= local.vpc_prefix && cidrhost("${split("/", c)[0]}/${local.vpc_prefix}", 0) == cidrhost(var.vpc_cidr, 0)
    ])
  ]
}

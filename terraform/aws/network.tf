# One VPC over three availability zones by default: in each, a public subnet
# (the load balancer; a NAT gateway in the first, or in each with
# nat_gateway_per_az) and a private subnet (every node; one server in each
# zone). Nodes have no public address.

locals {
  # Servers go to the zones in turn (compute.tf): the most any zone holds.
  servers_per_zone_max = ceil(var.server_count / local.zone_count)
  quorum               = floor(var.server_count / 2) + 1

  # The NAT gateways' zones, and for each zone's private route table the
  # NAT gateway (index into aws_nat_gateway.this) it routes through.
  nat_gateway_zones = var.nat_gateway_per_az ? range(local.zone_count) : [0]
  private_nat       = [for z in range(local.zone_count) : var.nat_gateway_per_az ? z : 0]
}

resource "aws_vpc" "this" {
  cidr_block           = module.plan.network.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = local.name }

  lifecycle {
    # The zones themselves are checked where they are read
    # (data.aws_ec2_instance_type_offerings.chosen, main.tf).
    # One zone must never hold a quorum of the servers: losing it would stop
    # both Raft clusters. With three zones, three servers are one per zone.
    precondition {
      condition     = var.server_count == 1 || local.servers_per_zone_max < local.quorum
      error_message = "${var.server_count} servers over ${local.zone_count} zones put ${local.servers_per_zone_max} in one zone, a quorum (${local.quorum}): losing that zone would stop the control plane. Use at least three zones (three public_subnet_cidrs and private_subnet_cidrs, three availability_zones that offer the instance types), or server_count = 1 for a development cluster."
    }
  }
}

# The VPC's default security group would otherwise allow all traffic between
# its members; with no rules it denies everything, so nothing can fall back
# on it.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id

  tags = { Name = "${local.name}-default-deny" }
}

resource "aws_subnet" "public" {
  count = local.zone_count

  vpc_id                  = aws_vpc.this.id
  cidr_block              = module.plan.network.public_subnet_cidrs[count.index]
  availability_zone       = local.availability_zones[count.index]
  map_public_ip_on_launch = false

  tags = { Name = "${local.name}-public-${count.index}", Tier = "public" }
}

resource "aws_subnet" "private" {
  count = local.zone_count

  vpc_id                  = aws_vpc.this.id
  cidr_block              = module.plan.network.private_subnet_cidrs[count.index]
  availability_zone       = local.availability_zones[count.index]
  map_public_ip_on_launch = false

  tags = { Name = "${local.name}-private-${count.index}", Tier = "private" }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = { Name = local.name }
}

resource "aws_eip" "nat" {
  count = length(local.nat_gateway_zones)

  domain = "vpc"

  tags = { Name = "${local.name}-nat-${local.availability_zones[local.nat_gateway_zones[count.index]]}" }

  depends_on = [aws_internet_gateway.this]
}

# Nodes reach package repositories, SSM and the model host through NAT;
# nothing outside can open a connection to them. One NAT gateway (default)
# keeps the cost down; while its zone is out, nodes lose outbound internet
# (not S3, which has its own endpoint, nor each other).
# nat_gateway_per_az puts one in each zone, each zone's nodes behind their
# own.
resource "aws_nat_gateway" "this" {
  count = length(local.nat_gateway_zones)

  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[local.nat_gateway_zones[count.index]].id

  tags = { Name = "${local.name}-${local.availability_zones[local.nat_gateway_zones[count.index]]}" }

  depends_on = [aws_internet_gateway.this]
}

# Addresses of a cluster made before NAT gateways could be per zone.
moved {
  from = aws_eip.nat
  to   = aws_eip.nat[0]
}

moved {
  from = aws_nat_gateway.this
  to   = aws_nat_gateway.this[0]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id

  tags = { Name = "${local.name}-public" }
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count = local.zone_count

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# One route table per zone's private subnet, whichever NAT gateway it uses.
resource "aws_route_table" "private" {
  count = local.zone_count

  vpc_id = aws_vpc.this.id

  tags = { Name = "${local.name}-private-${local.availability_zones[count.index]}" }
}

resource "aws_route" "private_nat" {
  count = local.zone_count

  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[local.private_nat[count.index]].id
}

resource "aws_route_table_association" "private" {
  count = local.zone_count

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

moved {
  from = aws_route_table.private
  to   = aws_route_table.private[0]
}

moved {
  from = aws_route.private_nat
  to   = aws_route.private_nat[0]
}

# Binaries and snapshots travel to and from S3 over the gateway endpoint,
# not the NAT gateway: free, and S3 stays reachable without internet.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id

  tags = { Name = "${local.name}-s3" }
}

# --- Flow logs ------------------------------------------------------------------
# A record of accepted and rejected connections, for incident response.

# Flow records hold addresses and ports, no payload; CloudWatch Logs encrypts
# them at rest with its own key. A customer-managed key (and its key policy
# for the logs service) is left to deployments that require one.
#tfsec:ignore:aws-cloudwatch-log-group-customer-key:exp:2027-06-30
resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/slm-mesh/${local.name}/vpc-flow-logs"
  retention_in_days = var.flow_log_retention_days
}

resource "aws_flow_log" "this" {
  vpc_id               = aws_vpc.this.id
  traffic_type         = "ALL"
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn         = aws_iam_role.flow_logs.arn

  tags = { Name = local.name }
}

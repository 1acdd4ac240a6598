# One VPC over at least two availability zones: in each, a public subnet
# (the load balancer; the NAT gateway in the first) and a private subnet
# (every node). Nodes have no public address.

resource "aws_vpc" "this" {
  cidr_block           = module.plan.network.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = local.name }

  lifecycle {
    precondition {
      condition     = length(local.availability_zones) == local.zone_count
      error_message = "Fewer than ${local.zone_count} availability zones in ${var.region} offer all of ${join(", ", local.instance_types)}; set availability_zones or other instance types."
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
  domain = "vpc"

  tags = { Name = "${local.name}-nat" }

  depends_on = [aws_internet_gateway.this]
}

# Nodes reach package repositories, SSM and the model host through NAT;
# nothing outside can open a connection to them. One NAT gateway keeps the
# cost down; while its zone is out, nodes lose outbound internet (not S3,
# which has its own endpoint, nor each other).
resource "aws_nat_gateway" "this" {
  allocation_id = aws_eip.nat.id
  subnet_id     = aws_subnet.public[0].id

  tags = { Name = local.name }

  depends_on = [aws_internet_gateway.this]
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

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id

  tags = { Name = "${local.name}-private" }
}

resource "aws_route" "private_nat" {
  route_table_id         = aws_route_table.private.id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this.id
}

resource "aws_route_table_association" "private" {
  count = local.zone_count

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# Binaries and snapshots travel to and from S3 over the gateway endpoint,
# not the NAT gateway: free, and S3 stays reachable without internet.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]

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

# One VPC in one availability zone: a public subnet for the gateway node and
# the NAT gateway, a private subnet for the caller and inference nodes.

resource "aws_vpc" "this" {
  cidr_block           = module.plan.network.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = local.name }

  lifecycle {
    precondition {
      condition     = local.availability_zone != null
      error_message = "No availability zone in ${var.region} offers all of ${join(", ", local.instance_types)}; set availability_zone or other instance types."
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
  vpc_id            = aws_vpc.this.id
  cidr_block        = module.plan.network.public_subnet_cidr
  availability_zone = local.availability_zone
  # Only the gateway node needs a public address, and it asks for one itself.
  map_public_ip_on_launch = false

  tags = { Name = "${local.name}-public", Tier = "public" }
}

resource "aws_subnet" "private" {
  vpc_id                  = aws_vpc.this.id
  cidr_block              = module.plan.network.private_subnet_cidr
  availability_zone       = local.availability_zone
  map_public_ip_on_launch = false

  tags = { Name = "${local.name}-private", Tier = "private" }
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

# Private nodes reach package repositories and the model host through NAT;
# nothing outside can open a connection to them.
resource "aws_nat_gateway" "this" {
  allocation_id = aws_eip.nat.id
  subnet_id     = aws_subnet.public.id

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
  subnet_id      = aws_subnet.public.id
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
  subnet_id      = aws_subnet.private.id
  route_table_id = aws_route_table.private.id
}

# --- Flow logs ------------------------------------------------------------------
# A record of accepted and rejected connections, for incident response.

# Flow records hold addresses and ports, no payload; CloudWatch Logs encrypts
# them at rest with its own key. A customer-managed KMS key (and its key
# policy for the logs service) is left to deployments that require one.
#tfsec:ignore:aws-cloudwatch-log-group-customer-key
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

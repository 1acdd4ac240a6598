# Six security groups: the load balancer's, the extra group of each client
# tier (the gateways': the API port, from the load balancer only; the
# callers': service RPC from the gateways only; the inference nodes':
# service RPC from the callers only), the servers' and every client's. Every rule comes from module.plan, where the tests check that
# nothing but the load balancer's 443/80 is open to the internet and that
# the nodes admit nothing from outside the VPC.

resource "aws_security_group" "this" {
  for_each = {
    alb       = "slm-mesh load balancer: the API from allowed_api_cidrs"
    gateway   = "slm-mesh gateway nodes: the API port from the load balancer only"
    caller    = "slm-mesh caller nodes: service RPC from the gateway nodes only"
    inference = "slm-mesh inference nodes: service RPC from the caller nodes only"
    server    = "slm-mesh Nomad and Consul servers: cluster traffic inside the VPC"
    client    = "slm-mesh Nomad clients: cluster traffic inside the VPC"
  }

  name_prefix = "${local.name}-${each.key}-"
  description = each.value
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${local.name}-${each.key}" }

  lifecycle {
    create_before_destroy = true
  }
}

# Rules between the groups (the load balancer and the gateways' API port).
resource "aws_security_group_rule" "from_group" {
  for_each = { for key, r in module.plan.security_group_rules : key => r if r.source_sg != null }

  security_group_id        = aws_security_group.this[each.value.sg].id
  type                     = each.value.type
  protocol                 = each.value.protocol
  from_port                = each.value.from_port
  to_port                  = each.value.to_port
  source_security_group_id = aws_security_group.this[each.value.source_sg].id
  description              = each.value.description
}

# Rules by address. The plan module's tests and output preconditions allow
# 0.0.0.0/0 only on the load balancer's tcp/443 and tcp/80 (ingress: the API
# is the product) and on the nodes' tcp/80 and tcp/443 egress (packages,
# SSM, the model download). tfsec cannot see these values (it does not
# expand a for_each over module outputs), so no tfsec ignore is written
# here: one would be inert. tfsec does check any rule written by hand in
# this module, which is why none is.
resource "aws_security_group_rule" "by_address" {
  for_each = { for key, r in module.plan.security_group_rules : key => r if r.source_sg == null }

  security_group_id = aws_security_group.this[each.value.sg].id
  type              = each.value.type
  protocol          = each.value.protocol
  from_port         = each.value.from_port
  to_port           = each.value.to_port
  cidr_blocks       = each.value.cidr_blocks
  description       = each.value.description
}

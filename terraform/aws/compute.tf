# The nodes. All share: IMDSv2 only with a hop limit of 1 (so task
# containers cannot reach instance credentials or user data through a
# bridge), encrypted gp3 root volumes, the auto-join instance profile.
#
# ami and user_data are ignored after creation: the AMI data source moves to
# each new Ubuntu release and cloud-init only runs on first boot, so a change
# to either would otherwise stop or replace running nodes on an unrelated
# apply. Roll a node deliberately with `tofu apply -replace=...` (README).

locals {
  metadata_options = {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }
}

resource "aws_instance" "gateway" {
  ami                    = local.ami_id
  instance_type          = var.gateway_instance_type
  subnet_id              = aws_subnet.public.id
  vpc_security_group_ids = [aws_security_group.gateway.id]
  iam_instance_profile   = aws_iam_instance_profile.node.name
  key_name               = var.ssh_key_name
  # A public address from the first second, so cloud-init can install
  # packages before the Elastic IP below is attached (it then replaces it).
  associate_public_ip_address = true
  user_data_base64            = module.plan.user_data_base64gzip["gateway"]

  metadata_options {
    http_endpoint               = local.metadata_options.http_endpoint
    http_tokens                 = local.metadata_options.http_tokens
    http_put_response_hop_limit = local.metadata_options.http_put_response_hop_limit
    instance_metadata_tags      = local.metadata_options.instance_metadata_tags
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.gateway_volume_size
    encrypted             = true
    delete_on_termination = true
  }

  tags = {
    Name                       = "${local.name}-gateway"
    Role                       = "gateway"
    (module.plan.join_tag.key) = module.plan.join_tag.value
  }

  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }

  depends_on = [aws_route.public_internet, aws_route_table_association.public]
}

# A stable address for api_url across stop/start.
resource "aws_eip" "gateway" {
  domain = "vpc"

  tags = { Name = "${local.name}-gateway" }

  depends_on = [aws_internet_gateway.this]
}

resource "aws_eip_association" "gateway" {
  allocation_id = aws_eip.gateway.id
  instance_id   = aws_instance.gateway.id
}

resource "aws_instance" "caller" {
  count = var.caller_count

  ami                         = local.ami_id
  instance_type               = var.caller_instance_type
  subnet_id                   = aws_subnet.private.id
  vpc_security_group_ids      = [aws_security_group.private.id]
  iam_instance_profile        = aws_iam_instance_profile.node.name
  key_name                    = var.ssh_key_name
  associate_public_ip_address = false
  user_data_base64            = module.plan.user_data_base64gzip["caller"]

  metadata_options {
    http_endpoint               = local.metadata_options.http_endpoint
    http_tokens                 = local.metadata_options.http_tokens
    http_put_response_hop_limit = local.metadata_options.http_put_response_hop_limit
    instance_metadata_tags      = local.metadata_options.instance_metadata_tags
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.caller_volume_size
    encrypted             = true
    delete_on_termination = true
  }

  tags = {
    Name = "${local.name}-caller-${count.index}"
    Role = "caller"
  }

  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }

  depends_on = [aws_route.private_nat, aws_route_table_association.private]
}

resource "aws_instance" "inference" {
  count = var.inference_count

  ami                         = local.ami_id
  instance_type               = var.inference_instance_type
  subnet_id                   = aws_subnet.private.id
  vpc_security_group_ids      = [aws_security_group.private.id]
  iam_instance_profile        = aws_iam_instance_profile.node.name
  key_name                    = var.ssh_key_name
  associate_public_ip_address = false
  user_data_base64            = module.plan.user_data_base64gzip["inference"]

  metadata_options {
    http_endpoint               = local.metadata_options.http_endpoint
    http_tokens                 = local.metadata_options.http_tokens
    http_put_response_hop_limit = local.metadata_options.http_put_response_hop_limit
    instance_metadata_tags      = local.metadata_options.instance_metadata_tags
  }

  # The model cache (host volume) lives on the root volume.
  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.inference_volume_size
    encrypted             = true
    delete_on_termination = true
  }

  tags = {
    Name = "${local.name}-inference-${count.index}"
    Role = "inference"
  }

  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }

  depends_on = [aws_route.private_nat, aws_route_table_association.private]
}

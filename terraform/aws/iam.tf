# Two instance roles. Both: cloud auto-join (describe instances), the
# Session Manager agent (AmazonSSMManagedInstanceCore), their SSM
# parameters through the cluster's KMS key. Clients may read the release
# binaries; servers may read the server secrets too and write snapshots.
# Nothing else: no role may write SSM, read another path or list the
# bucket.

locals {
  ssm_arn_prefix = "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter${module.plan.ssm_prefix}"
  role_ssm_paths = {
    server = ["client", "server"]
    client = ["client"]
  }
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "node" {
  for_each = local.role_ssm_paths

  statement {
    sid     = "CloudAutoJoin"
    actions = ["ec2:DescribeInstances", "ec2:DescribeTags"]
    # Describe calls do not support resource-level permissions; the region
    # condition is the narrowest scope EC2 offers for them.
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  statement {
    sid     = "ReadSecrets"
    actions = ["ssm:GetParameter"]
    # Each path is a subtree of this cluster's parameters (client/..., and
    # server/... for servers).
    resources = [for p in each.value : "${local.ssm_arn_prefix}/${p}/*"]
  }

  statement {
    sid       = "DecryptSecretsAndArtifacts"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.cluster.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${var.region}.amazonaws.com", "s3.${var.region}.amazonaws.com"]
    }
  }

  statement {
    sid     = "ReadReleases"
    actions = ["s3:GetObject"]
    # The objects under releases/ (one folder per version).
    resources = ["${aws_s3_bucket.artifacts.arn}/releases/*"]
  }

  dynamic "statement" {
    for_each = each.key == "server" ? [1] : []

    content {
      sid     = "WriteSnapshots"
      actions = ["s3:PutObject"]
      # New snapshot objects under snapshots/ only; versioning keeps any
      # object overwritten.
      resources = ["${aws_s3_bucket.artifacts.arn}/snapshots/*"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "server" ? [1] : []

    content {
      sid       = "EncryptSnapshots"
      actions   = ["kms:GenerateDataKey"]
      resources = [aws_kms_key.cluster.arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${var.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "node" {
  for_each = local.role_ssm_paths

  name_prefix        = module.plan.iam_name_prefixes[each.key]
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "node" {
  for_each = local.role_ssm_paths

  name   = "slm-mesh-node"
  role   = aws_iam_role.node[each.key].id
  policy = data.aws_iam_policy_document.node[each.key].json
}

# The Session Manager agent (preinstalled on Ubuntu's AMIs): the operator's
# only way in (port forwarding to Nomad and Consul, shells), with no
# inbound port.
resource "aws_iam_role_policy_attachment" "ssm_core" {
  for_each = local.role_ssm_paths

  role       = aws_iam_role.node[each.key].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "node" {
  for_each = local.role_ssm_paths

  name_prefix = module.plan.iam_name_prefixes[each.key]
  role        = aws_iam_role.node[each.key].name
}

# --- VPC flow logs ------------------------------------------------------------------

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    # ":*" is the log streams of this one group (one per network interface,
    # named by AWS), not a wildcard over other resources.
    #tfsec:ignore:aws-iam-no-policy-wildcards:exp:2027-06-30
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  name_prefix        = module.plan.iam_name_prefixes["flow-logs"]
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

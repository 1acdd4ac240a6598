# Two instance roles. Both: cloud auto-join (describe instances), the
# Session Manager agent (its channels only), their SSM parameters through
# the cluster's KMS key. Clients may read the releases and models and complete
# their own Auto Scaling groups' lifecycle actions (a node that has drained
# lets its termination go on); servers may read the server secrets too,
# write snapshots and write the clients' drain token. Nothing else: no role
# may write another SSM parameter, read another path or list the bucket.
#
# No AWS-managed policy is attached: AmazonSSMManagedInstanceCore, the
# usual one for Session Manager, also grants ssm:GetParameter(s) on every
# parameter, which would let any client node (root on it, or a task that
# reached its role) read the server secrets: the management tokens, the
# server TLS keys and the API keys. Clients are also denied the server
# subtree explicitly, reads and decryption both, so that a policy attached
# later cannot give it back.

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
    sid = "SessionManager"
    actions = [
      "ssm:UpdateInstanceInformation",
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
    ]
    # These actions take no resource-level permissions: the agent's
    # registration and its session channels, nothing that reads data.
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = each.key == "server" ? [] : [1]

    content {
      sid    = "NoServerSecrets"
      effect = "Deny"
      actions = [
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
        "ssm:GetParameterHistory",
      ]
      resources = ["${local.ssm_arn_prefix}/server", "${local.ssm_arn_prefix}/server/*"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "server" ? [] : [1]

    content {
      sid       = "NoServerSecretDecryption"
      effect    = "Deny"
      actions   = ["kms:Decrypt"]
      resources = [aws_kms_key.cluster.arn]

      # SSM encrypts each SecureString with its parameter's ARN as the
      # encryption context.
      condition {
        test     = "StringLike"
        variable = "kms:EncryptionContext:PARAMETER_ARN"
        values   = ["${local.ssm_arn_prefix}/server/*"]
      }
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
    for_each = each.key == "server" ? [] : [1]

    content {
      sid     = "ReadModels"
      actions = ["s3:GetObject"]
      # The models tools/release -model puts under models/<sha256>/, which
      # the inference job fetches as an artifact with the node's role (the
      # Nomad agent; tasks cannot reach the role). The inference nodes share
      # the client role with the others, so gateway and caller nodes may
      # read them too: open-weight files, no secret.
      resources = ["${aws_s3_bucket.artifacts.arn}/models/*"]
    }
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

  # A drained client node lets its own group terminate it. The action
  # takes the group as its resource; these are the cluster's client groups
  # (deterministic names, module.plan), and no other group.
  dynamic "statement" {
    for_each = each.key == "server" ? [] : [1]

    content {
      sid     = "CompleteOwnLifecycleActions"
      actions = ["autoscaling:CompleteLifecycleAction"]
      resources = [
        for role, name in module.plan.autoscaling_group_names :
        "arn:${data.aws_partition.current.partition}:autoscaling:${var.region}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${name}"
      ]
    }
  }

  # The servers publish the clients' drain token (acl-bootstrap.sh): this
  # one parameter, encrypted with the cluster's key through SSM.
  dynamic "statement" {
    for_each = each.key == "server" ? [1] : []

    content {
      sid       = "PublishDrainToken"
      actions   = ["ssm:PutParameter"]
      resources = [aws_ssm_parameter.drain_token.arn]
    }
  }

  dynamic "statement" {
    for_each = each.key == "server" ? [1] : []

    content {
      sid       = "EncryptDrainToken"
      actions   = ["kms:Encrypt"]
      resources = [aws_kms_key.cluster.arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${var.region}.amazonaws.com"]
      }

      condition {
        test     = "StringEquals"
        variable = "kms:EncryptionContext:PARAMETER_ARN"
        values   = [aws_ssm_parameter.drain_token.arn]
      }
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

# The cluster's KMS key (SSM parameters, the artifacts bucket, EBS volumes)
# and the private artifacts bucket:
#   releases/<version>/linux_amd64[_x86-64-v4]/{gateway,caller,inference,SHA256SUMS}
#     written by `make release`, read by the clients' Nomad artifact blocks
#     (go-getter with the instance role);
#   snapshots/{nomad,consul}/<cluster>-<time>.snap
#     written by the servers' snapshot timer, expired after
#     snapshot_retention_days.

resource "aws_kms_key" "cluster" {
  description             = "slm-mesh ${local.name}: SSM secrets, artifacts, EBS volumes"
  enable_key_rotation     = true
  deletion_window_in_days = 30
}

resource "aws_kms_alias" "cluster" {
  name          = "alias/slm-mesh-${local.name}"
  target_key_id = aws_kms_key.cluster.key_id
}

# Access logs would need a second bucket; CloudTrail data events record
# object reads if a deployment requires it.
#tfsec:ignore:aws-s3-enable-bucket-logging:exp:2027-06-30
resource "aws_s3_bucket" "artifacts" {
  bucket = local.artifacts_bucket

  # Snapshots are the control plane's backups: a destroy must not take them
  # along by accident (empty the bucket first, see README).
  force_destroy = false
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.cluster.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    id     = "expire-snapshots"
    status = "Enabled"

    filter {
      prefix = "snapshots/"
    }

    expiration {
      days = var.snapshot_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }

  rule {
    id     = "expire-replaced-releases"
    status = "Enabled"

    filter {
      prefix = "releases/"
    }

    noncurrent_version_expiration {
      noncurrent_days = 30
    }
  }

  depends_on = [aws_s3_bucket_versioning.artifacts]
}

# TLS only.
data "aws_iam_policy_document" "artifacts" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.artifacts.arn, "${aws_s3_bucket.artifacts.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  policy = data.aws_iam_policy_document.artifacts.json

  depends_on = [aws_s3_bucket_public_access_block.artifacts]
}

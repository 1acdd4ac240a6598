# Every secret of the cluster, as SSM Parameter Store SecureStrings
# encrypted with the cluster's KMS key; module.plan decides the names. The
# nodes read them at boot with their instance role (client/* on every node,
# server/* on servers), so no secret is in user data; the operator reads the
# management tokens and API keys the same way (the *_command outputs).
#
# Why SSM rather than sensitive outputs: reading needs ssm:GetParameter and
# kms:Decrypt on one path, which IAM can grant without access to the state,
# CloudTrail records each read, and a rotated secret is written to the same
# name. The values are also in the state (Terraform generates them), which
# is why the README insists on an encrypted remote backend.

resource "aws_ssm_parameter" "secret" {
  for_each = toset(module.plan.ssm_parameter_names)

  name        = "${module.plan.ssm_prefix}/${each.key}"
  description = "slm-mesh ${local.name}: ${each.key}"
  type        = "SecureString"
  # Every value fits the standard tier's 4 KB (ECDSA PEMs, up to 20 keys).
  tier   = "Standard"
  key_id = aws_kms_key.cluster.arn
  value  = module.plan.ssm_parameters[each.key]
}

# The clients' Nomad drain token (node write only, nomad/node-drain.policy.hcl).
# Nomad chooses a token's secret, so the first server to bootstrap ACLs
# creates it and overwrites this parameter (the servers may write this one
# parameter and no other); Terraform only creates it, with a value that is
# no token, and destroys it with the cluster.
resource "aws_ssm_parameter" "drain_token" {
  name        = "${module.plan.ssm_prefix}/${module.plan.drain.token_parameter}"
  description = "slm-mesh ${local.name}: ${module.plan.drain.token_parameter} (written by the servers)"
  type        = "SecureString"
  tier        = "Standard"
  key_id      = aws_kms_key.cluster.arn
  value       = "none: written by the servers' ACL bootstrap"

  lifecycle {
    ignore_changes = [value]
  }
}

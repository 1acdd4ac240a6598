# Where the operator reads the management tokens.
#
# SSM Parameter Store SecureString rather than a sensitive output: reading a
# token needs ssm:GetParameter and kms:Decrypt on this path, which IAM can
# grant to an operator without access to the whole state file, CloudTrail
# records each read, and a rotated token can be written to the same name.
# A sensitive output would require state access and leaves no audit trail.
# The values also sit in the state (Terraform generates them), which is why
# the README insists on an encrypted remote backend.

resource "aws_ssm_parameter" "consul_management_token" {
  name        = "/slm-mesh/${local.name}/consul/management-token"
  description = "Consul ACL management token of ${local.name} (initial_management)."
  type        = "SecureString"
  value       = random_uuid.consul_management.result
}

resource "aws_ssm_parameter" "nomad_management_token" {
  name        = "/slm-mesh/${local.name}/nomad/management-token"
  description = "Nomad ACL bootstrap (management) token of ${local.name}."
  type        = "SecureString"
  value       = random_uuid.nomad_management.result
}

# This module has no provider on purpose: it holds the decisions that matter
# (address plan, firewall rules, rendered cloud-init) as plain values, so that
# `tofu validate` and `tofu test` can check them on a machine that cannot
# download the AWS provider. terraform/aws turns its outputs into resources.
terraform {
  required_version = ">= 1.6.0"
}

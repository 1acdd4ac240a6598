locals {
  # Every resource's tags. Auto Scaling's instances get them through their
  # launch template, which the provider's default_tags do not reach.
  common_tags = merge(var.tags, {
    Project   = "slm-mesh"
    Cluster   = var.cluster_name
    ManagedBy = "terraform"
  })
}

provider "aws" {
  region = var.region

  default_tags {
    tags = local.common_tags
  }
}

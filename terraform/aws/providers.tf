provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      Project   = "slm-mesh"
      Cluster   = var.cluster_name
      ManagedBy = "terraform"
    })
  }
}

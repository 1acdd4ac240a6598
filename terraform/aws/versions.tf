terraform {
  # OpenTofu >= 1.6 or Terraform >= 1.6; both read this file.
  required_version = ">= 1.6.0"

  required_providers {
    # Both majors are fine for the resources used here; the lock file an
    # operator generates (see README) pins the exact build.
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60.0, < 7.0.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
}

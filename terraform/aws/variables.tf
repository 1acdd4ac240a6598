variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$", var.region))
    error_message = "The region must look like an AWS region name, e.g. eu-west-1."
  }
}

variable "cluster_name" {
  description = "Name of the cluster; prefixes resource names, SSM parameter paths and the auto-join tag."
  type        = string
  default     = "slm-mesh"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "The cluster_name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "availability_zone" {
  description = "Availability zone of both subnets. Null: the first zone of the region that offers every instance type chosen below."
  type        = string
  default     = null

  validation {
    condition     = var.availability_zone == null || can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9][a-z]$", var.availability_zone))
    error_message = "The availability_zone must look like eu-west-1a."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  type        = string
  default     = "10.20.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "The vpc_cidr must be an IPv4 CIDR."
  }
}

variable "public_subnet_cidr" {
  description = "IPv4 CIDR of the public subnet (gateway node, NAT gateway), inside vpc_cidr."
  type        = string
  default     = "10.20.0.0/24"

  validation {
    condition     = can(cidrnetmask(var.public_subnet_cidr))
    error_message = "The public_subnet_cidr must be an IPv4 CIDR."
  }
}

variable "private_subnet_cidr" {
  description = "IPv4 CIDR of the private subnet (caller and inference nodes), inside vpc_cidr and disjoint from the public subnet."
  type        = string
  default     = "10.20.1.0/24"

  validation {
    condition     = can(cidrnetmask(var.private_subnet_cidr))
    error_message = "The private_subnet_cidr must be an IPv4 CIDR."
  }
}

variable "allowed_api_cidrs" {
  description = "IPv4 CIDRs that may call the API on port 3111."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.allowed_api_cidrs) > 0 && alltrue([for c in var.allowed_api_cidrs : can(cidrnetmask(c))])
    error_message = "The allowed_api_cidrs must be a non-empty list of IPv4 CIDRs."
  }
}

variable "allowed_ssh_cidrs" {
  description = "IPv4 CIDRs that may SSH to the gateway node. Empty (default): no SSH at all."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.allowed_ssh_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "Every allowed_ssh_cidrs entry must be an IPv4 CIDR other than 0.0.0.0/0."
  }
}

variable "allowed_admin_cidrs" {
  description = "IPv4 CIDRs that may reach the Nomad (4646) and Consul (8500) HTTP APIs on the gateway directly, unencrypted. Empty (default): use the SSH tunnel."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.allowed_admin_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "Every allowed_admin_cidrs entry must be an IPv4 CIDR other than 0.0.0.0/0."
  }
}

variable "ssh_key_name" {
  description = "Name of an existing EC2 key pair for SSH. Null: no key, so no SSH even if allowed_ssh_cidrs is set."
  type        = string
  default     = null
}

variable "ami_id" {
  description = "AMI for every node. Null: the latest Ubuntu 24.04 LTS (amd64) published by Canonical. The cloud-init scripts assume Ubuntu/Debian (apt)."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "The ami_id must look like ami-0123456789abcdef0."
  }
}

variable "gateway_instance_type" {
  description = "Instance type of the gateway node (Nomad and Consul servers, gateway job)."
  type        = string
  default     = "c7i-flex.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.gateway_instance_type))
    error_message = "The gateway_instance_type must look like an EC2 instance type, e.g. c7i-flex.large."
  }
}

variable "caller_instance_type" {
  description = "Instance type of the caller nodes."
  type        = string
  default     = "c7i-flex.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.caller_instance_type))
    error_message = "The caller_instance_type must look like an EC2 instance type."
  }
}

variable "inference_instance_type" {
  description = "Instance type of the inference nodes (llama.cpp on CPU: prefer compute-optimised types with AVX2)."
  type        = string
  default     = "c7i-flex.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.inference_instance_type))
    error_message = "The inference_instance_type must look like an EC2 instance type."
  }
}

variable "caller_count" {
  description = "Number of caller nodes."
  type        = number
  default     = 1

  validation {
    condition     = var.caller_count >= 1 && floor(var.caller_count) == var.caller_count
    error_message = "The caller_count must be a whole number of at least 1."
  }
}

variable "inference_count" {
  description = "Number of inference nodes. Scale the inference job's count along with it."
  type        = number
  default     = 1

  validation {
    condition     = var.inference_count >= 1 && floor(var.inference_count) == var.inference_count
    error_message = "The inference_count must be a whole number of at least 1."
  }
}

variable "gateway_volume_size" {
  description = "Root volume size of the gateway node, GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.gateway_volume_size >= 8 && var.gateway_volume_size <= 1024
    error_message = "The gateway_volume_size must be between 8 and 1024 GiB."
  }
}

variable "caller_volume_size" {
  description = "Root volume size of the caller nodes, GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.caller_volume_size >= 8 && var.caller_volume_size <= 1024
    error_message = "The caller_volume_size must be between 8 and 1024 GiB."
  }
}

variable "inference_volume_size" {
  description = "Root volume size of the inference nodes, GiB; holds the model cache."
  type        = number
  default     = 50

  validation {
    condition     = var.inference_volume_size >= 8 && var.inference_volume_size <= 4096
    error_message = "The inference_volume_size must be between 8 and 4096 GiB."
  }
}

variable "nomad_version" {
  description = "Nomad version installed on every node (HashiCorp apt repository)."
  type        = string
  default     = "1.10.3"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.nomad_version))
    error_message = "The nomad_version must be an exact version such as 1.10.3."
  }
}

variable "consul_version" {
  description = "Consul version installed on every node (HashiCorp apt repository)."
  type        = string
  default     = "1.21.2"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.consul_version))
    error_message = "The consul_version must be an exact version such as 1.21.2."
  }
}

variable "datacenter" {
  description = "Nomad/Consul datacenter name; the jobs' datacenters variable must include it."
  type        = string
  default     = "dc1"

  validation {
    condition     = can(regex("^[a-z0-9-]+$", var.datacenter))
    error_message = "The datacenter must be lowercase letters, digits and hyphens."
  }
}

variable "service_binaries" {
  description = "Optional: service binaries (gateway, caller, inference) that cloud-init downloads into /usr/local/bin, each an https URL and its sha256. Empty: deliver them with the jobs' artifact variables instead."
  type = map(object({
    url    = string
    sha256 = string
  }))
  default = {}

  validation {
    condition     = alltrue([for name, b in var.service_binaries : contains(["gateway", "caller", "inference"], name) && can(regex("^[0-9a-f]{64}$", b.sha256))])
    error_message = "The service_binaries keys must be gateway, caller or inference, each with a 64-hex-digit sha256."
  }
}

variable "flow_log_retention_days" {
  description = "Days to keep VPC flow logs in CloudWatch Logs."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "The flow_log_retention_days must be a retention period CloudWatch Logs supports (1, 3, 5, 7, 14, 30, 60, 90, ...)."
  }
}

variable "tags" {
  description = "Extra tags on every resource (merged under the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "cluster_name" {
  description = "Name of the cluster; prefixes resource names and the cloud auto-join tag value."
  type        = string
  default     = "slm-mesh"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "The cluster_name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "AWS region, used by cloud auto-join on the nodes."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$", var.region))
    error_message = "The region must look like an AWS region name, e.g. eu-west-1."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  type        = string
  default     = "10.20.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && cidrhost(var.vpc_cidr, 0) == split("/", var.vpc_cidr)[0]
    error_message = "The vpc_cidr must be an IPv4 network address in CIDR notation (host bits zero), e.g. 10.20.0.0/16."
  }
}

variable "public_subnet_cidr" {
  description = "IPv4 CIDR of the public subnet (gateway node, NAT gateway). Must lie inside vpc_cidr."
  type        = string
  default     = "10.20.0.0/24"

  validation {
    condition     = can(cidrnetmask(var.public_subnet_cidr)) && cidrhost(var.public_subnet_cidr, 0) == split("/", var.public_subnet_cidr)[0]
    error_message = "The public_subnet_cidr must be an IPv4 network address in CIDR notation."
  }
}

variable "private_subnet_cidr" {
  description = "IPv4 CIDR of the private subnet (caller and inference nodes). Must lie inside vpc_cidr and not overlap the public subnet."
  type        = string
  default     = "10.20.1.0/24"

  validation {
    condition     = can(cidrnetmask(var.private_subnet_cidr)) && cidrhost(var.private_subnet_cidr, 0) == split("/", var.private_subnet_cidr)[0]
    error_message = "The private_subnet_cidr must be an IPv4 network address in CIDR notation."
  }
}

variable "api_port" {
  description = "TCP port the gateway serves the OpenAI-compatible API on (the gateway job's static port)."
  type        = number
  default     = 3111

  validation {
    condition     = var.api_port >= 1024 && var.api_port <= 65535 && floor(var.api_port) == var.api_port
    error_message = "The api_port must be an unprivileged TCP port (1024-65535)."
  }
}

variable "allowed_api_cidrs" {
  description = "IPv4 CIDRs allowed to reach the API port on the gateway. The API is the product, so the default is the whole internet; narrow it for a private deployment."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.allowed_api_cidrs) > 0 && alltrue([for c in var.allowed_api_cidrs : can(cidrnetmask(c))])
    error_message = "The allowed_api_cidrs must be a non-empty list of IPv4 CIDRs."
  }
}

variable "allowed_ssh_cidrs" {
  description = "IPv4 CIDRs allowed to SSH to the gateway node (which is also the jump host to the private nodes). Empty: no SSH rule at all."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.allowed_ssh_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "Every allowed_ssh_cidrs entry must be an IPv4 CIDR, and SSH may not be opened to 0.0.0.0/0."
  }
}

variable "allowed_admin_cidrs" {
  description = "IPv4 CIDRs allowed to reach the Nomad (4646) and Consul (8500) HTTP APIs on the gateway directly. Empty (the default): use the SSH tunnel instead."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.allowed_admin_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "Every allowed_admin_cidrs entry must be an IPv4 CIDR, and the cluster APIs may not be opened to 0.0.0.0/0."
  }
}

variable "nomad_version" {
  description = "Nomad version installed from HashiCorp's apt repository (package version without the -1 suffix)."
  type        = string
  default     = "1.10.3"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.nomad_version))
    error_message = "The nomad_version must be an exact version such as 1.10.3."
  }
}

variable "consul_version" {
  description = "Consul version installed from HashiCorp's apt repository (package version without the -1 suffix)."
  type        = string
  default     = "1.21.2"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.consul_version))
    error_message = "The consul_version must be an exact version such as 1.21.2."
  }
}

variable "hashicorp_apt_key_fingerprint" {
  description = "Fingerprint that the downloaded HashiCorp apt signing key must have; the node refuses to install otherwise."
  type        = string
  default     = "798AEC654E5C15428C8E42EEAA16FCBCA621E701"

  validation {
    condition     = can(regex("^[0-9A-F]{40}$", var.hashicorp_apt_key_fingerprint))
    error_message = "The hashicorp_apt_key_fingerprint must be 40 uppercase hex digits without spaces."
  }
}

variable "datacenter" {
  description = "Consul and Nomad datacenter name (the jobs' datacenters variable must match)."
  type        = string
  default     = "dc1"

  validation {
    condition     = can(regex("^[a-z0-9-]+$", var.datacenter))
    error_message = "The datacenter must be lowercase letters, digits and hyphens."
  }
}

variable "nomad_region" {
  description = "Nomad region name (the jobs' region variable must match)."
  type        = string
  default     = "global"

  validation {
    condition     = can(regex("^[a-z0-9-]+$", var.nomad_region))
    error_message = "The nomad_region must be lowercase letters, digits and hyphens."
  }
}

variable "inference_count" {
  description = "Number of inference nodes."
  type        = number
  default     = 1

  validation {
    condition     = var.inference_count >= 1 && var.inference_count <= 20 && floor(var.inference_count) == var.inference_count
    error_message = "The inference_count must be a whole number from 1 to 20."
  }
}

variable "caller_count" {
  description = "Number of caller nodes."
  type        = number
  default     = 1

  validation {
    condition     = var.caller_count >= 1 && var.caller_count <= 10 && floor(var.caller_count) == var.caller_count
    error_message = "The caller_count must be a whole number from 1 to 10."
  }
}

variable "service_binaries" {
  description = "Service binaries to install into /usr/local/bin on the nodes, by name (gateway, caller, inference): an https URL and its sha256. Empty: the jobs fetch them as artifacts (their *_binary_url variables) instead."
  type = map(object({
    url    = string
    sha256 = string
  }))
  default = {}

  validation {
    condition = alltrue([
      for name, b in var.service_binaries :
      contains(["gateway", "caller", "inference"], name) && startswith(b.url, "https://") && can(regex("^[0-9a-f]{64}$", b.sha256))
    ])
    error_message = "The service_binaries keys must be gateway, caller or inference, each with an https url and a 64-hex-digit sha256."
  }
}

# Secrets. terraform/aws generates them with the random provider (which this
# module cannot use: it must stay provider-free) and passes them in.

variable "consul_gossip_key" {
  description = "Consul gossip encryption key: 32 random bytes, base64."
  type        = string
  sensitive   = true

  validation {
    condition     = can(base64decode(var.consul_gossip_key)) && length(var.consul_gossip_key) == 44
    error_message = "The consul_gossip_key must be 32 bytes in base64 (44 characters)."
  }
}

variable "nomad_gossip_key" {
  description = "Nomad server gossip encryption key: 32 random bytes, base64."
  type        = string
  sensitive   = true

  validation {
    condition     = can(base64decode(var.nomad_gossip_key)) && length(var.nomad_gossip_key) == 44
    error_message = "The nomad_gossip_key must be 32 bytes in base64 (44 characters)."
  }
}

variable "tokens" {
  description = "ACL secrets (UUIDs) chosen by Terraform: consul_management, consul_agent (agents' node registration), consul_default (read-only discovery for requests without a token), consul_nomad (Nomad registering services), nomad_management; and rpc (the services' shared RPC token, written to the Nomad Variable nomad/jobs)."
  type = object({
    consul_management = string
    consul_agent      = string
    consul_default    = string
    consul_nomad      = string
    nomad_management  = string
    rpc               = string
  })
  sensitive = true

  validation {
    condition = alltrue([
      for k in ["consul_management", "consul_agent", "consul_default", "consul_nomad", "nomad_management"] :
      can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.tokens[k]))
    ]) && can(regex("^[A-Za-z0-9]{32,}$", var.tokens.rpc))
    error_message = "ACL tokens must be lowercase UUIDs and the rpc token at least 32 alphanumeric characters."
  }
}

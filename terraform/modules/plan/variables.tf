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

variable "public_subnet_cidrs" {
  description = "IPv4 CIDRs of the public subnets (the load balancer, the NAT gateway), one per availability zone, at least two (an ALB needs two zones). Each must lie inside vpc_cidr."
  type        = list(string)
  default     = ["10.20.0.0/24", "10.20.1.0/24"]

  validation {
    condition     = length(var.public_subnet_cidrs) >= 2 && alltrue([for c in var.public_subnet_cidrs : can(cidrnetmask(c)) && cidrhost(c, 0) == split("/", c)[0]])
    error_message = "The public_subnet_cidrs must be at least two IPv4 network addresses in CIDR notation."
  }
}

variable "private_subnet_cidrs" {
  description = "IPv4 CIDRs of the private subnets (every node), one per availability zone, as many as public_subnet_cidrs. Each must lie inside vpc_cidr; no two subnets may overlap."
  type        = list(string)
  default     = ["10.20.10.0/24", "10.20.11.0/24"]

  validation {
    condition     = length(var.private_subnet_cidrs) >= 2 && alltrue([for c in var.private_subnet_cidrs : can(cidrnetmask(c)) && cidrhost(c, 0) == split("/", c)[0]])
    error_message = "The private_subnet_cidrs must be at least two IPv4 network addresses in CIDR notation."
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
  description = "IPv4 CIDRs allowed to reach the load balancer (HTTPS 443, and 80 which only redirects). The API is the product, so the default is the whole internet; narrow it for a private deployment."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.allowed_api_cidrs) > 0 && alltrue([for c in var.allowed_api_cidrs : can(cidrnetmask(c))])
    error_message = "The allowed_api_cidrs must be a non-empty list of IPv4 CIDRs."
  }
}

variable "api_tls_policy" {
  description = "TLS policy of the load balancer's HTTPS listener. Only policies that refuse anything below TLS 1.2 are accepted."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  validation {
    condition     = can(regex("^ELBSecurityPolicy-(TLS13-1-[23]-|TLS-1-2-|FS-1-2-)", var.api_tls_policy))
    error_message = "The api_tls_policy must be an ELBSecurityPolicy that requires TLS 1.2 or later (TLS13-1-2-*, TLS13-1-3-*, TLS-1-2-*, FS-1-2-*)."
  }
}

variable "ec2_endpoint" {
  description = "EC2 API endpoint that cloud auto-join (retry_join) asks for the servers' addresses, as go-discover's endpoint=. Empty: the region's own endpoint, which is what a cluster on AWS uses. The cluster in a box sets its AWS API emulator's."
  type        = string
  default     = ""

  validation {
    condition     = var.ec2_endpoint == "" || can(regex("^https?://[A-Za-z0-9.:-]+/?$", var.ec2_endpoint))
    error_message = "The ec2_endpoint must be empty or an http(s) URL of a host (and port), without spaces."
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

variable "server_count" {
  description = "Number of Nomad and Consul server nodes (the control plane; each runs both servers). 3 tolerates the loss of one; 1 is a cheap development cluster without fault tolerance."
  type        = number
  default     = 3

  validation {
    condition     = floor(var.server_count) == var.server_count && (var.server_count == 1 || (var.server_count >= 3 && var.server_count <= 7 && var.server_count % 2 == 1))
    error_message = "The server_count must be 1 (development only) or an odd number from 3 to 7: an even count adds no fault tolerance over the odd count below it."
  }
}

variable "artifacts_bucket" {
  description = "Name of the private S3 bucket with the release binaries (releases/<version>/linux_amd64/...) and the control plane's snapshots (snapshots/...)."
  type        = string
  default     = "slm-mesh-artifacts"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.artifacts_bucket))
    error_message = "The artifacts_bucket must be a valid S3 bucket name."
  }
}

variable "snapshot_schedule" {
  description = "systemd OnCalendar expression for the control plane snapshots to S3 (taken on the Nomad leader)."
  type        = string
  default     = "hourly"

  validation {
    condition     = can(regex("^[A-Za-z0-9 *:/,.~-]+$", var.snapshot_schedule))
    error_message = "The snapshot_schedule must be a systemd OnCalendar expression such as hourly or *-*-* 00/6:00:00."
  }
}

variable "server_data_volume_ids" {
  description = "The EBS volume holding each server's Raft data, by the server's name (e.g. server-0 = vol-0123456789abcdef0): server_user_data has one document per entry, and each server finds its volume by this id and formats nothing else. Empty: no server documents."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name, id in var.server_data_volume_ids : can(regex("^vol-[0-9a-f]{8,17}$", id))])
    error_message = "Each of server_data_volume_ids must be an EBS volume id such as vol-0123456789abcdef0."
  }
}

variable "server_data_device_name" {
  description = "Device name under which the data volume is attached to a server (aws_volume_attachment.device_name). Only Xen instances use it, as /dev/xvdX; on Nitro instances the volume is found by its id."
  type        = string
  default     = "/dev/sdf"

  validation {
    condition     = can(regex("^/dev/sd[f-p]$", var.server_data_device_name))
    error_message = "The server_data_device_name must be one of /dev/sdf to /dev/sdp (the names AWS recommends for EBS volumes)."
  }
}

# Secrets. terraform/aws generates them (random and tls providers, which this
# module cannot use: it must stay provider-free) and passes them in. This
# module decides where each one goes: an SSM SecureString parameter readable
# by the roles that need it (ssm_parameters), and never the user data. The
# tests pass recognisable fakes and check that no user data contains one.

variable "secrets" {
  description = "Every secret of the cluster: gossip keys, ACL tokens (UUIDs), the services' RPC tokens (one per hop: gateway to caller, caller to inference) and API keys, and the agents' TLS CA certificate with the server and client certificates and keys (PEM)."
  type = object({
    consul_gossip_key = string
    nomad_gossip_key  = string
    consul_management = string
    consul_agent      = string
    consul_default    = string
    consul_nomad      = string
    nomad_management  = string
    caller_token      = string
    inference_token   = string
    api_keys          = list(string)
    tls = object({
      ca_cert            = string
      nomad_server_cert  = string
      nomad_server_key   = string
      nomad_client_cert  = string
      nomad_client_key   = string
      consul_server_cert = string
      consul_server_key  = string
      consul_client_cert = string
      consul_client_key  = string
      # RPC between tiers: its own CA (a task's certificate must never be
      # one Nomad's API accepts) and a certificate per private tier, named
      # after its Consul service.
      rpc_ca_cert        = string
      rpc_caller_cert    = string
      rpc_caller_key     = string
      rpc_inference_cert = string
      rpc_inference_key  = string
    })
  })
  sensitive = true

  validation {
    condition = alltrue([
      for k in ["consul_management", "consul_agent", "consul_default", "consul_nomad", "nomad_management"] :
      can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.secrets[k]))
    ]) && alltrue([for k in ["caller_token", "inference_token"] : can(regex("^[A-Za-z0-9]{32,}$", var.secrets[k]))]) && var.secrets.caller_token != var.secrets.inference_token
    error_message = "ACL tokens must be lowercase UUIDs, and the two RPC tokens distinct and each at least 32 alphanumeric characters."
  }

  validation {
    condition     = length(var.secrets.api_keys) >= 1 && alltrue([for k in var.secrets.api_keys : can(regex("^[A-Za-z0-9_-]{32,}$", k))])
    error_message = "There must be at least one API key, each at least 32 characters of letters, digits, _ and - (no comma: the gateway reads them comma-separated)."
  }

  validation {
    condition = alltrue([
      # Not base64decode: it fails on bytes that are not UTF-8, i.e. on
      # nearly every real key (random_bytes).
      for k in ["consul_gossip_key", "nomad_gossip_key"] : can(regex("^[A-Za-z0-9+/]{43}=$", var.secrets[k]))
    ])
    error_message = "The gossip keys must be 32 bytes in base64 (44 characters)."
  }
}

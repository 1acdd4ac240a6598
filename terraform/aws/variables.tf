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

variable "availability_zones" {
  description = "Availability zones, one public and one private subnet in each, as many as public_subnet_cidrs (three by default: one server in each, so that losing a zone never loses the servers' quorum; at least two, which only a single-server cluster may use). Null: the first zones, in name order, of the region that offer every instance type chosen below."
  type        = list(string)
  default     = null

  validation {
    condition     = var.availability_zones == null || (try(length(var.availability_zones), 0) >= 2 && alltrue([for z in coalesce(var.availability_zones, []) : can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9][a-z]$", z))]))
    error_message = "The availability_zones must be at least two zone names such as eu-west-1a."
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

variable "public_subnet_cidrs" {
  description = "IPv4 CIDRs of the public subnets (load balancer, NAT gateways), one per zone, inside vpc_cidr; their number is the number of zones."
  type        = list(string)
  default     = ["10.20.0.0/24", "10.20.1.0/24", "10.20.2.0/24"]
}

variable "private_subnet_cidrs" {
  description = "IPv4 CIDRs of the private subnets (every node), one per zone, inside vpc_cidr."
  type        = list(string)
  default     = ["10.20.10.0/24", "10.20.11.0/24", "10.20.12.0/24"]
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway in each zone, each zone's private subnet routed through its own: losing a zone then leaves the other zones' nodes their outbound internet (packages, SSM, the model download). False (default): one NAT gateway, in the first zone, for every zone; cheaper, but while that zone is out no node reaches the internet (S3 still, through its endpoint)."
  type        = bool
  default     = false
}

variable "allowed_api_cidrs" {
  description = "IPv4 CIDRs that may reach the load balancer (HTTPS; port 80 only redirects). The default is the whole internet."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.allowed_api_cidrs) > 0 && alltrue([for c in var.allowed_api_cidrs : can(cidrnetmask(c))])
    error_message = "The allowed_api_cidrs must be a non-empty list of IPv4 CIDRs."
  }
}

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS listener. Null: a DNS-validated ACM certificate for domain_name when domain_name and route53_zone_id are set, else a self-signed one made here (see the api_ca_pem output)."
  type        = string
  default     = null

  validation {
    condition     = var.certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "The certificate_arn must be an ACM certificate ARN."
  }
}

variable "domain_name" {
  description = "Host name of the API, e.g. api.example.com, in the Route 53 zone route53_zone_id: Terraform requests and validates its ACM certificate and points an alias record at the load balancer. Null: use the load balancer's own name."
  type        = string
  default     = null

  validation {
    condition     = var.domain_name == null || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,}$", var.domain_name))
    error_message = "The domain_name must be a lowercase DNS name such as api.example.com."
  }
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone that holds domain_name (required with it)."
  type        = string
  default     = null
}

variable "api_key_count" {
  description = "Number of API keys Terraform generates (SSM server/api-keys, comma-separated; the gateway accepts any of them)."
  type        = number
  default     = 1

  validation {
    condition     = var.api_key_count >= 1 && var.api_key_count <= 20 && floor(var.api_key_count) == var.api_key_count
    error_message = "The api_key_count must be a whole number from 1 to 20."
  }
}

variable "key_name" {
  description = "Optional EC2 key pair for SSH over Session Manager (no inbound port is opened either way). Null (default): no key; use `aws ssm start-session`."
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

variable "server_instance_type" {
  description = "Instance type of the server nodes (Nomad and Consul servers)."
  type        = string
  default     = "t3.small"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.server_instance_type))
    error_message = "The server_instance_type must look like an EC2 instance type, e.g. c7i-flex.large."
  }
}

variable "gateway_instance_type" {
  description = "Instance type of the gateway nodes (the gateway job behind the load balancer)."
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
    error_message = "The caller_instance_type must look like an EC2 instance type, e.g. c7i-flex.large."
  }
}

variable "inference_instance_type" {
  description = "Instance type of the inference nodes (llama.cpp on CPU: compute-optimised types with AVX2 at least; a release built with -arch x86-64-v4 is placed only on nodes with AVX-512, as c7i, m7i, c7a and m7a have)."
  type        = string
  default     = "c7i-flex.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.inference_instance_type))
    error_message = "The inference_instance_type must look like an EC2 instance type, e.g. c7i-flex.large."
  }
}

variable "server_count" {
  description = "Number of server nodes, one per zone in turn (server-0 in the first zone, server-1 in the second, ...); also bootstrap_expect. 3 (default) tolerates the loss of one server or one zone; 1 is a development cluster without fault tolerance (plan warns). Plan refuses a count that would put a quorum of servers in one zone."
  type        = number
  default     = 3
}

variable "gateway_count" {
  description = "Number of gateway nodes (min and desired size of their Auto Scaling group, spread over the zones; one gateway instance each: the job uses a static port)."
  type        = number
  default     = 2

  validation {
    condition     = var.gateway_count >= 1 && var.gateway_count <= 50 && floor(var.gateway_count) == var.gateway_count
    error_message = "The gateway_count must be a whole number from 1 to 50."
  }
}

variable "caller_count" {
  description = "Number of caller nodes (min and desired size of their Auto Scaling group)."
  type        = number
  default     = 1

  validation {
    condition     = var.caller_count >= 1 && var.caller_count <= 50 && floor(var.caller_count) == var.caller_count
    error_message = "The caller_count must be a whole number from 1 to 50."
  }
}

variable "inference_count" {
  description = "Number of inference nodes (min and desired size of their Auto Scaling group). Scale the inference job's count along with it."
  type        = number
  default     = 1

  validation {
    condition     = var.inference_count >= 1 && var.inference_count <= 50 && floor(var.inference_count) == var.inference_count
    error_message = "The inference_count must be a whole number from 1 to 50."
  }
}

variable "inference_spot" {
  description = "Run the inference nodes on Spot instances: their group launches any of inference_spot_instance_types, capacity-optimized, no on-demand base, and replaces a node on EC2's rebalance recommendation; an interrupted node drains within EC2's two-minute notice. False (default): on-demand inference_instance_type."
  type        = bool
  default     = false
}

variable "inference_spot_instance_types" {
  description = "With inference_spot: the instance types the inference group may launch on Spot, several so that one type's Spot pool running dry does not stop it, each with at least 2 vCPUs (plan checks). Compute-optimised types with AVX2 at least, as for inference_instance_type."
  type        = list(string)
  default     = ["c7i-flex.large", "c7i.large", "m7i-flex.large", "m7i.large", "c6i.large", "c7a.large"]

  validation {
    condition     = length(var.inference_spot_instance_types) >= 2 && length(distinct(var.inference_spot_instance_types)) == length(var.inference_spot_instance_types) && alltrue([for t in var.inference_spot_instance_types : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", t))])
    error_message = "The inference_spot_instance_types must be at least two distinct EC2 instance types, e.g. c7i.large."
  }
}

variable "root_volume_size" {
  description = "Root volume size of the server, gateway and caller nodes, GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 1024
    error_message = "The root_volume_size must be between 8 and 1024 GiB."
  }
}

variable "server_data_volume_size" {
  description = "Size of each server's data volume (Nomad and Consul Raft data), GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.server_data_volume_size >= 8 && var.server_data_volume_size <= 1024
    error_message = "The server_data_volume_size must be between 8 and 1024 GiB."
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

variable "snapshot_schedule" {
  description = "systemd OnCalendar expression of the control plane snapshots to S3."
  type        = string
  default     = "hourly"
}

variable "snapshot_retention_days" {
  description = "Days to keep control plane snapshots in S3."
  type        = number
  default     = 30

  validation {
    condition     = var.snapshot_retention_days >= 1 && floor(var.snapshot_retention_days) == var.snapshot_retention_days
    error_message = "The snapshot_retention_days must be a whole number of at least 1."
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

variable "alarm_email" {
  description = "E-mail address the alarms notify (through the SNS topic in the output alarm_topic_arn, which AWS asks the address to confirm). Empty: the topic has no subscriber; subscribe a pager or chat integration to it yourself."
  type        = string
  default     = ""

  validation {
    condition     = var.alarm_email == "" || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alarm_email))
    error_message = "The alarm_email must be empty or an e-mail address."
  }
}

variable "alarm_5xx_percent" {
  description = "Alarm when more than this percentage of the API's requests in a minute are answered 5xx (by the gateways or the load balancer itself), three minutes in a row."
  type        = number
  default     = 5

  validation {
    condition     = var.alarm_5xx_percent > 0 && var.alarm_5xx_percent <= 100
    error_message = "The alarm_5xx_percent must be in (0, 100]."
  }
}

variable "alarm_response_seconds" {
  description = "Alarm when the gateways' 90th-percentile response time over five minutes exceeds this many seconds, three periods in a row. A streamed answer counts until its last token, so this bounds whole generations, not the first token."
  type        = number
  default     = 30

  validation {
    condition     = var.alarm_response_seconds > 0
    error_message = "The alarm_response_seconds must be positive."
  }
}

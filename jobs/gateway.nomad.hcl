# slm-gateway: the public, OpenAI-compatible API. It listens on a static
# port (3111) on the gateway node(s), where the load balancer reaches it,
# rate-limits each API key, and finds healthy slm-caller instances in
# Consul at run time.
#
# Rendered and submitted by `go run ./tools/submit`; docs/nomad.md explains
# every variable.

variable "region" {
  description = "Nomad region the job runs in."
  type        = string
  default     = "global"
}

variable "datacenters" {
  description = "Nomad datacenters the job may run in."
  type        = list(string)
  default     = ["dc1"]
}

variable "node_pool" {
  description = "Nomad node pool the job is placed in."
  type        = string
  default     = "default"
}

variable "gateway_role" {
  description = "Value that the client's meta.slm_role must contain (nomad/client.hcl sets it)."
  type        = string
  default     = "gateway"
}

variable "version" {
  description = "slm-mesh version being deployed. Changing it rolls out a new deployment."
  type        = string
  default     = "dev"
}

variable "driver" {
  description = "Task driver: exec on a cluster, raw_exec on a local dev agent."
  type        = string
  default     = "exec"

  validation {
    condition     = contains(["exec", "raw_exec"], var.driver)
    error_message = "The driver must be exec or raw_exec."
  }
}

variable "bin_dir" {
  description = "Absolute directory on the node holding the service binaries (used when gateway_binary_url is empty). With the exec driver it must be in the client's chroot_env: /usr/local/bin is (nomad/client.hcl)."
  type        = string
  default     = "/usr/local/bin"
}

variable "gateway_binary_url" {
  description = "URL of the gateway binary, fetched as an artifact. Empty: run bin_dir/gateway."
  type        = string
  default     = ""
}

variable "gateway_binary_sha256" {
  description = "sha256 of the binary at gateway_binary_url (required with it)."
  type        = string
  default     = ""

  validation {
    condition     = var.gateway_binary_sha256 == "" || (strlen(var.gateway_binary_sha256) == 64 && regex_replace(var.gateway_binary_sha256, "[0-9a-f]", "") == "")
    error_message = "The gateway_binary_sha256 must be 64 lowercase hex digits."
  }
}

variable "consul_addr" {
  description = "HTTP address of the Consul agent the service reads peers from (the node's own agent)."
  type        = string
  default     = "127.0.0.1:8500"
}

variable "secrets_var" {
  description = "Path of the Nomad Variable holding this job's secrets (caller_token; api_keys if clients need keys). A job's tasks may read nomad/jobs/<job ID> and no other job's path."
  type        = string
  default     = "nomad/jobs/slm-gateway"

  # One submission's values go to all three jobs: a secrets_var given
  # there would point two of them at a path their tasks cannot read.
  validation {
    condition     = var.secrets_var == "nomad/jobs/slm-gateway" || substr(var.secrets_var, 0, 23) == "nomad/jobs/slm-gateway/"
    error_message = "The secrets_var of slm-gateway must be nomad/jobs/slm-gateway or the path of one of its groups or tasks below it: its tasks may read no other. It is one value for every job of a submission, so set it only when submitting this job alone (-job gateway)."
  }
}

variable "rpc_tls" {
  description = "RPC over TLS between tiers, with the certificates in the job's variable (rpc_ca, the CA that signed the callers' certificates). false on one machine, where the hops never leave it."
  type        = bool
  default     = true
}

variable "log_level" {
  description = "Log level of the service: trace, debug, info, warn or error."
  type        = string
  default     = "info"
}

variable "drain_seconds" {
  description = "Seconds running requests get to finish after SIGTERM. The kill timeout is 15s longer; raise the client's max_kill_timeout to match."
  type        = number
  default     = 60
}

variable "gateway_port" {
  description = "Static port of the public API on the gateway node."
  type        = number
  default     = 3111
}

variable "gateway_bind" {
  description = "Host address the API listens on. Empty: the node's address that Nomad gives the port (the one registered in Consul and that the load balancer reaches); 127.0.0.1 keeps a local run private."
  type        = string
  default     = ""
}

variable "gateway_count" {
  description = "Number of gateway instances; each needs a gateway node of its own (static port)."
  type        = number
  default     = 1
}

variable "gateway_canary" {
  description = "Canaries placed before an update replaces the old instances. A canary needs a gateway node where the static port is free, so it is 0 unless there are more gateway nodes than gateway_count."
  type        = number
  default     = 0
}

variable "gateway_cpu" {
  description = "CPU reserved per instance, in MHz."
  type        = number
  default     = 300
}

variable "gateway_memory" {
  description = "Memory per instance, in MiB."
  type        = number
  default     = 256
}

variable "gateway_rate_limit" {
  description = "Chat requests per second allowed per API key (or client address when no keys are set); 0 turns the limit off."
  type        = number
  default     = 5

  validation {
    condition     = var.gateway_rate_limit >= 0 && floor(var.gateway_rate_limit) == var.gateway_rate_limit
    error_message = "The gateway_rate_limit must be a whole number of requests per second, 0 or more."
  }
}

variable "gateway_rate_burst" {
  description = "Requests allowed at once above gateway_rate_limit."
  type        = number
  default     = 10

  validation {
    condition     = var.gateway_rate_burst >= 1 && floor(var.gateway_rate_burst) == var.gateway_rate_burst
    error_message = "The gateway_rate_burst must be a whole number, 1 or more."
  }
}

variable "gateway_request_timeout" {
  description = "Longest a request may take, generation included."
  type        = string
  default     = "5m"
}

locals {
  # $${...} is a literal ${NOMAD_IP_http}, which Nomad fills in when it
  # starts the task: the host address it picked for the port.
  bind = var.gateway_bind != "" ? var.gateway_bind : "$${NOMAD_IP_http}"

  use_binary_artifact = var.gateway_binary_url != ""
  command             = local.use_binary_artifact ? "local/gateway" : "${var.bin_dir}/gateway"
}

job "slm-gateway" {
  region      = var.region
  datacenters = var.datacenters
  node_pool   = var.node_pool
  type        = "service"

  meta {
    slm_version = var.version
  }

  constraint {
    attribute = "${meta.slm_role}"
    operator  = "set_contains"
    value     = var.gateway_role
  }

  group "gateway" {
    count = var.gateway_count

    network {
      port "http" {
        static = var.gateway_port
      }
    }

    # Without canaries (see gateway_canary) an update replaces one instance
    # at a time and reverts when the new one does not become healthy.
    update {
      max_parallel      = 1
      canary            = var.gateway_canary
      auto_promote      = var.gateway_canary > 0
      auto_revert       = true
      health_check      = "checks"
      min_healthy_time  = "10s"
      healthy_deadline  = "5m"
      progress_deadline = "6m"
    }

    restart {
      attempts = 3
      interval = "10m"
      delay    = "15s"
      mode     = "fail"
    }

    reschedule {
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "10m"
      unlimited      = true
    }

    service {
      provider = "consul"
      name     = "slm-gateway"
      port     = "http"
      tags     = ["slm-mesh", "http", "openai", "version-${var.version}"]

      meta {
        version = var.version
      }

      # /health is 200 only when a request can travel gateway -> caller ->
      # inference, so a deployment is healthy only when the API answers.
      check {
        name     = "gateway health"
        type     = "http"
        path     = "/health"
        interval = "10s"
        timeout  = "3s"
      }

      # Restarts hang on this liveness check, not on /health: a gateway is
      # not broken because the tiers behind it are.
      check {
        name     = "gateway alive"
        type     = "tcp"
        interval = "10s"
        timeout  = "2s"

        check_restart {
          limit = 3
          grace = "30s"
        }
      }
    }

    task "gateway" {
      driver = var.driver

      # Consul deregisters the instance first, so a load balancer that reads
      # Consul stops sending new requests before SIGTERM starts the drain.
      shutdown_delay = "5s"
      kill_timeout   = "${var.drain_seconds + 15}s"

      config {
        command = local.command
        args = concat([
          "-addr=${local.bind}:${NOMAD_PORT_http}",
          "-discovery=consul",
          "-consul-addr=${var.consul_addr}",
          "-request-timeout=${var.gateway_request_timeout}",
          "-rate-limit=${var.gateway_rate_limit}",
          "-rate-burst=${var.gateway_rate_burst}",
          "-drain-timeout=${var.drain_seconds}s",
          "-log-level=${var.log_level}",
          "-log-json",
          ], var.rpc_tls ? [
          "-caller-ca=${NOMAD_SECRETS_DIR}/rpc-ca.pem",
        ] : [])
      }

      dynamic "artifact" {
        for_each = local.use_binary_artifact ? [var.gateway_binary_url] : []

        content {
          source      = artifact.value
          destination = "local/gateway"
          mode        = "file"

          options {
            checksum = "sha256:${var.gateway_binary_sha256}"
          }
        }
      }

      # The CA that signed the callers' RPC certificates, which it checks.
      # From the job's own Nomad Variable, as the tokens; never in the job.
      # Written into the task's own secrets directory, which no other task
      # reaches, readable by the task's user.
      dynamic "template" {
        for_each = var.rpc_tls ? {
          "rpc-ca.pem" = "rpc_ca"
        } : {}

        content {
          destination = "${NOMAD_SECRETS_DIR}/${template.key}"
          change_mode = "restart"
          data        = "{{ with nomadVar \"${var.secrets_var}\" }}{{ .${template.value} }}{{ end }}"
        }
      }

      # Secrets come from the job's own Nomad Variable at run time and are
      # never part of the job: the token callers require (item caller_token,
      # required; the task waits until the variable exists) and, when the
      # item api_keys is set, the comma-separated API keys clients must
      # present. The gateway holds no secret that opens inference.
      template {
        destination = "${NOMAD_SECRETS_DIR}/rpc.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
        {{- with nomadVar "${var.secrets_var}" }}
        SLM_RPC_TOKEN={{ .caller_token }}
        {{- range $key, $value := . }}{{ if eq $key "api_keys" }}
        SLM_API_KEYS={{ $value }}
        {{- end }}{{ end }}
        {{- end }}
        EOT
      }

      resources {
        cpu    = var.gateway_cpu
        memory = var.gateway_memory
      }
    }
  }
}

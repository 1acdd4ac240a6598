# slm-caller: the policy tier. It serves inference::get_response to the
# gateways and forwards each request to a healthy slm-inference instance that
# it finds in Consul at run time. Gateways find it through Consul too, so it
# listens on a dynamic port.
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

variable "caller_role" {
  description = "Value that the client's meta.slm_role must contain (nomad/client.hcl sets it): callers stay off the inference nodes' CPUs."
  type        = string
  default     = "caller"
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
  description = "Absolute directory on the node holding the service binaries (used when caller_binary_url is empty). With the exec driver it must be in the client's chroot_env: /usr/local/bin is (nomad/client.hcl)."
  type        = string
  default     = "/usr/local/bin"
}

variable "caller_binary_url" {
  description = "URL of the caller binary, fetched as an artifact. Empty: run bin_dir/caller."
  type        = string
  default     = ""
}

variable "caller_binary_sha256" {
  description = "sha256 of the binary at caller_binary_url (required with it)."
  type        = string
  default     = ""

  validation {
    condition     = var.caller_binary_sha256 == "" || (strlen(var.caller_binary_sha256) == 64 && regex_replace(var.caller_binary_sha256, "[0-9a-f]", "") == "")
    error_message = "The caller_binary_sha256 must be 64 lowercase hex digits."
  }
}

variable "consul_addr" {
  description = "HTTP address of the Consul agent the service reads peers from (the node's own agent)."
  type        = string
  default     = "127.0.0.1:8500"
}

variable "secrets_var" {
  description = "Path of the Nomad Variable holding this job's secrets (caller_token, inference_token). A job's tasks may read nomad/jobs/<job ID> and no other job's path."
  type        = string
  default     = "nomad/jobs/slm-caller"

  # One submission's values go to all three jobs: a secrets_var given
  # there would point two of them at a path their tasks cannot read.
  validation {
    condition     = var.secrets_var == "nomad/jobs/slm-caller" || substr(var.secrets_var, 0, 22) == "nomad/jobs/slm-caller/"
    error_message = "The secrets_var of slm-caller must be nomad/jobs/slm-caller or the path of one of its groups or tasks below it: its tasks may read no other. It is one value for every job of a submission, so set it only when submitting this job alone (-job caller)."
  }
}

variable "rpc_tls" {
  description = "RPC over TLS between tiers, with the certificates in the job's variable (caller_cert, caller_key; rpc_ca to check inference's). false on one machine, where the hops never leave it."
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

variable "caller_count" {
  description = "Number of caller instances."
  type        = number
  default     = 2
}

variable "caller_canary" {
  description = "Canaries placed before an update replaces the old instances (0 disables canaries)."
  type        = number
  default     = 1
}

variable "caller_cpu" {
  description = "CPU reserved per instance, in MHz."
  type        = number
  default     = 200
}

variable "caller_memory" {
  description = "Memory per instance, in MiB."
  type        = number
  default     = 128
}

variable "caller_max_tokens_limit" {
  description = "Largest max_tokens a request may ask for."
  type        = number
  default     = 2048
}

variable "caller_routing" {
  description = "How a request picks an inference instance: prefix (the turns of a conversation go to the instance holding them in its KV cache, within a load bound) or least-busy."
  type        = string
  default     = "prefix"

  validation {
    condition     = contains(["prefix", "least-busy"], var.caller_routing)
    error_message = "The caller_routing must be prefix or least-busy."
  }
}

variable "model_name" {
  description = "The model a request that names none goes to: the inference job's default model (its model_name, in group \"inference\"), whatever else it serves (extra_models). One value for both jobs."
  type        = string
  default     = "gemma-3-270m-it"
}

locals {
  use_binary_artifact = var.caller_binary_url != ""
  command             = local.use_binary_artifact ? "local/caller" : "${var.bin_dir}/caller"
}

job "slm-caller" {
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
    value     = var.caller_role
  }

  group "caller" {
    count = var.caller_count

    network {
      port "rpc" {}
    }

    update {
      max_parallel      = 1
      canary            = var.caller_canary
      auto_promote      = var.caller_canary > 0
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
      name     = "slm-caller"
      port     = "rpc"
      tags     = ["slm-mesh", "rpc", "version-${var.version}"]

      meta {
        version = var.version
      }

      # /health is 200 only while the caller sees a healthy inference
      # instance: gateways are handed callers that can serve.
      # Over TLS when RPC is: the port speaks nothing else. Consul checks
      # liveness, not identity, so it does not verify the certificate
      # (which names the tier, not the address).
      check {
        name            = "caller health"
        type            = "http"
        protocol        = var.rpc_tls ? "https" : "http"
        tls_skip_verify = var.rpc_tls
        path            = "/health"
        interval        = "10s"
        timeout         = "3s"
      }

      # Restarts hang on this liveness check, not on /health: a caller is not
      # broken because inference is down, and restarting every caller then
      # would only add churn.
      check {
        name     = "caller alive"
        type     = "tcp"
        interval = "10s"
        timeout  = "2s"

        check_restart {
          limit = 3
          grace = "30s"
        }
      }
    }

    task "caller" {
      driver = var.driver

      # Consul deregisters the instance first, so gateways stop sending new
      # requests before SIGTERM starts the drain.
      shutdown_delay = "5s"
      kill_timeout   = "${var.drain_seconds + 15}s"

      config {
        command = local.command
        args = concat([
          "-addr=${NOMAD_ADDR_rpc}",
          "-discovery=consul",
          "-consul-addr=${var.consul_addr}",
          "-max-tokens-limit=${var.caller_max_tokens_limit}",
          "-routing=${var.caller_routing}",
          "-default-model=${var.model_name}",
          "-drain-timeout=${var.drain_seconds}s",
          "-log-level=${var.log_level}",
          "-log-json",
          ], var.rpc_tls ? [
          "-tls-cert=${NOMAD_SECRETS_DIR}/rpc.pem",
          "-tls-key=${NOMAD_SECRETS_DIR}/rpc-key.pem",
          "-inference-ca=${NOMAD_SECRETS_DIR}/rpc-ca.pem",
        ] : [])
      }

      dynamic "artifact" {
        for_each = local.use_binary_artifact ? [var.caller_binary_url] : []

        content {
          source      = artifact.value
          destination = "local/caller"
          mode        = "file"

          options {
            checksum = "sha256:${var.caller_binary_sha256}"
          }
        }
      }

      # The caller's RPC certificate (it names slm-caller) and the CA that
      # signed inference's, which it checks.
      # From the job's own Nomad Variable, as the tokens; never in the job.
      # Written into the task's own secrets directory, which no other task
      # reaches, readable by the task's user.
      dynamic "template" {
        for_each = var.rpc_tls ? {
          "rpc.pem"     = "caller_cert"
          "rpc-key.pem" = "caller_key"
          "rpc-ca.pem"  = "rpc_ca"
        } : {}

        content {
          destination = "${NOMAD_SECRETS_DIR}/${template.key}"
          change_mode = "restart"
          data        = "{{ with nomadVar \"${var.secrets_var}\" }}{{ .${template.value} }}{{ end }}"
        }
      }

      # The tokens come from the job's own Nomad Variable at run time and
      # are never part of the job: caller_token, which gateways must present,
      # and inference_token, which the caller presents to inference. The
      # task waits until the variable exists.
      template {
        destination = "${NOMAD_SECRETS_DIR}/rpc.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
        {{- with nomadVar "${var.secrets_var}" }}
        SLM_RPC_TOKEN={{ .caller_token }}
        SLM_INFERENCE_TOKEN={{ .inference_token }}
        {{- end }}
        EOT
      }

      resources {
        cpu    = var.caller_cpu
        memory = var.caller_memory
      }
    }
  }
}

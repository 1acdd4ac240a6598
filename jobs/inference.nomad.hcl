# slm-inference: loads one GGUF model with llama.cpp and serves
# inference::run_inference to the callers. Callers find it through Consul
# (service "slm-inference"), so it listens on a dynamic port.
#
# Rendered and submitted by `go run ./tools/submit`; docs/nomad.md explains
# every variable. The same file runs on AWS (exec driver, binaries in
# bin_dir, model cached on a host volume, or fetched from the artifacts
# bucket) and on a laptop with jobs/local.vars.hcl (raw_exec, the
# checkout's binaries, model artifact).

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

variable "inference_role" {
  description = "Value that the client's meta.slm_role must contain (nomad/client.hcl sets it): inference nodes run nothing else."
  type        = string
  default     = "inference"
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
  description = "Absolute directory on the node holding the service binaries (used when inference_binary_url is empty). With the exec driver it must be in the client's chroot_env: /usr/local/bin is (nomad/client.hcl)."
  type        = string
  default     = "/usr/local/bin"
}

variable "inference_binary_url" {
  description = "URL of the inference binary, fetched as an artifact. Empty: run bin_dir/inference."
  type        = string
  default     = ""
}

variable "inference_binary_sha256" {
  description = "sha256 of the binary at inference_binary_url (required with it)."
  type        = string
  default     = ""

  validation {
    condition     = var.inference_binary_sha256 == "" || (strlen(var.inference_binary_sha256) == 64 && regex_replace(var.inference_binary_sha256, "[0-9a-f]", "") == "")
    error_message = "The inference_binary_sha256 must be 64 lowercase hex digits."
  }
}

variable "inference_x86_64_level" {
  description = "x86-64 level the inference binary needs beyond AVX2, as tools/release -arch writes it: \"v4\" (AVX-512) places the job only on nodes whose meta.slm_x86_64_levels lists it (each client writes it at start: terraform/modules/plan/templates/cpu-meta.sh). Empty: any node."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "v4"], var.inference_x86_64_level)
    error_message = "The inference_x86_64_level must be empty or \"v4\"."
  }
}

variable "consul_addr" {
  description = "HTTP address of the Consul agent the service reads peers from (the node's own agent)."
  type        = string
  default     = "127.0.0.1:8500"
}

variable "secrets_var" {
  description = "Path of the Nomad Variable holding this job's secrets (inference_token). A job's tasks may read nomad/jobs/<job ID> and no other job's path."
  type        = string
  default     = "nomad/jobs/slm-inference"

  # One submission's values go to all three jobs: a secrets_var given
  # there would point two of them at a path their tasks cannot read.
  validation {
    condition     = var.secrets_var == "nomad/jobs/slm-inference" || substr(var.secrets_var, 0, 25) == "nomad/jobs/slm-inference/"
    error_message = "The secrets_var of slm-inference must be nomad/jobs/slm-inference or the path of one of its groups or tasks below it: its tasks may read no other. It is one value for every job of a submission, so set it only when submitting this job alone (-job inference)."
  }
}

variable "rpc_tls" {
  description = "RPC over TLS between tiers, with the certificates in the job's variable (inference_cert, inference_key). false on one machine, where the hops never leave it."
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

variable "inference_count" {
  description = "Number of inference instances."
  type        = number
  default     = 1
}

variable "inference_canary" {
  description = "Canaries placed before an update replaces the old instances (0: replace them one at a time). A canary needs a node with inference_cores free: with every inference node busy (one 2-vCPU node per instance) it could never be placed, so it is 0 unless there are spare inference nodes."
  type        = number
  default     = 0
}

variable "inference_cores" {
  description = "CPU cores reserved for each instance alone (resources.cores: no other task runs on them). 0: share the node's CPUs by inference_cpu instead, for agents that cannot reserve cores."
  type        = number
  default     = 2

  validation {
    condition     = var.inference_cores >= 0 && floor(var.inference_cores) == var.inference_cores
    error_message = "The inference_cores must be a whole number, 0 or more."
  }
}

variable "inference_cpu" {
  description = "CPU per instance in MHz, used only when inference_cores is 0."
  type        = number
  default     = 2000
}

variable "inference_memory" {
  description = "Memory per instance, in MiB: the model plus the KV cache of every parallel sequence."
  type        = number
  default     = 1536
}

variable "inference_threads" {
  description = "llama.cpp threads. 0: one per core given (inference_cores), or, when inference_cores is 0, the service's default: one per CPU of the node but one."
  type        = number
  default     = 0

  validation {
    condition     = var.inference_threads >= 0 && floor(var.inference_threads) == var.inference_threads
    error_message = "The inference_threads must be a whole number, 0 or more."
  }
}

variable "inference_parallel" {
  description = "Sequences decoded together (continuous batching)."
  type        = number
  default     = 8
}

variable "inference_kv_cache_type" {
  description = "KV cache type: f16, or q8_0 / q4_0 (1/2, 1/4 of the memory; slightly slower)."
  type        = string
  default     = "f16"

  validation {
    condition     = contains(["f16", "q8_0", "q4_0"], var.inference_kv_cache_type)
    error_message = "The inference_kv_cache_type must be f16, q8_0 or q4_0."
  }
}

variable "inference_ctx" {
  description = "Context per request in tokens (prompt plus completion)."
  type        = number
  default     = 2048
}

variable "model_url" {
  description = "URL of the GGUF model: https (with model_cache_dir and raw_exec, a path on the node also works), or go-getter's S3 form s3::https://<bucket>.s3.<region>.amazonaws.com/<key>, which tools/release -model writes for the artifacts bucket: Nomad fetches that one with the node's instance role."
  type        = string
  default     = "https://huggingface.co/ggml-org/gemma-3-270m-it-GGUF/resolve/main/gemma-3-270m-it-Q8_0.gguf"
}

variable "model_name" {
  description = "Name the model is served under (the \"model\" of the OpenAI API)."
  type        = string
  default     = "gemma-3-270m-it"
}

variable "model_sha256" {
  description = "sha256 of the model file; the download is refused when it differs."
  type        = string
  default     = "0ef57d2c838458a1952664260dcba38e5bdda37494f3af732f06e4add24068e3"

  validation {
    condition     = strlen(var.model_sha256) == 64 && regex_replace(var.model_sha256, "[0-9a-f]", "") == ""
    error_message = "The model_sha256 must be 64 lowercase hex digits."
  }
}

variable "extra_models" {
  description = "Models served beside the default one (model_url, model_name, model_sha256, inference_count), each by a task group of its own named inference-<name>: a list of { name, url, sha256, count }, url as model_url takes it. The caller routes a request to the instances of the model it names, and one that names none to model_name. A running group keeps its count across submissions (nomad job scale slm-inference inference-<name> N changes it); count is what a new group starts with."
  type = list(object({
    name   = string
    url    = string
    sha256 = string
    count  = number
  }))
  default = []

  validation {
    condition     = length([for m in var.extra_models : m if m.name == "" || regex_replace(m.name, "[a-z0-9._-]", "") != ""]) == 0 && length(distinct([for m in var.extra_models : m.name])) == length(var.extra_models)
    error_message = "Each of extra_models needs a name of its own, made of lowercase letters, digits, dots, dashes and underscores."
  }

  validation {
    condition     = length([for m in var.extra_models : m if strlen(m.sha256) != 64 || regex_replace(m.sha256, "[0-9a-f]", "") != ""]) == 0
    error_message = "The sha256 of each of extra_models must be 64 lowercase hex digits."
  }

  validation {
    condition     = length([for m in var.extra_models : m if m.count < 0 || floor(m.count) != m.count]) == 0
    error_message = "The count of each of extra_models must be a whole number, 0 or more."
  }
}

variable "model_cache_volume" {
  description = "Client host volume that caches the model across restarts and deployments (nomad/client.hcl declares it). Empty: fetch the model as an artifact into each allocation instead."
  type        = string
  default     = "slm-model-cache"
}

variable "model_cache_dir" {
  description = "Directory on the node that caches the model, for drivers without volume mounts (raw_exec); used only when model_cache_volume is empty. Empty too: the model is an artifact."
  type        = string
  default     = ""
}

variable "inference_disk" {
  description = "Disk in MB each instance reserves on its node (ephemeral_disk.size) when the model is an s3:: URL and lives in the allocation: the model, the binary and the logs."
  type        = number
  default     = 1024
}

variable "startup_grace" {
  description = "How long a new instance may take to download and load the model before failing checks restart it."
  type        = string
  default     = "10m"
}

locals {
  # llama.cpp's threads spin while they wait for each other, so a thread
  # whose CPU another process takes stalls every decode step, 9 to 35
  # times over (docs/PERFORMANCE.md, "CPU contention"). With reserved cores
  # the task runs on exactly inference_cores CPUs that no other task
  # shares (Nomad's cpuset; NOMAD_CPU_CORES lists them, so it is not a
  # count), and that is the thread count. Without (0), -threads=0 lets the
  # service leave one of the node's CPUs free.
  threads = var.inference_threads > 0 ? var.inference_threads : var.inference_cores

  use_binary_artifact = var.inference_binary_url != ""
  command             = local.use_binary_artifact ? "local/inference" : "${var.bin_dir}/inference"

  # Where the model cache volume is mounted inside the task.
  model_mount = "/srv/slm-models"

  # Every model the job serves, one task group each: the default model in
  # group "inference", then extra_models in groups named after them.
  #
  # An s3:: model is in the cluster's private artifacts bucket, which only
  # Nomad's artifact fetcher can read (the agent, with the node's instance
  # role; tasks cannot reach the metadata service, so the service could not
  # sign a request). Nomad fetches artifacts into the task dir of every new
  # allocation, before any task could look at a cache, so the cache is the
  # allocation's own disk made sticky (the group's ephemeral_disk): a
  # replacement on the same node (an update, a reschedule) gets its
  # predecessor's local/ moved over, and the fetcher skips a file whose
  # sha256 already matches. The host volume is not used then.
  #
  # With a cache (the host volume, or a directory for raw_exec), the service
  # downloads the model itself, checks it against its sha256, and later
  # starts on the node reuse it. Without one, Nomad's artifact block fetches
  # and checks it into each allocation's task dir.
  models = concat(
    [{ group = "inference", name = var.model_name, url = var.model_url, sha256 = var.model_sha256, count = var.inference_count }],
    [for m in var.extra_models : merge(m, { group = "inference-${m.name}" })],
  )
  groups = { for m in local.models : m.group => merge(m, {
    s3     = substr(m.url, 0, 4) == "s3::"
    volume = substr(m.url, 0, 4) == "s3::" ? "" : var.model_cache_volume
    cache  = substr(m.url, 0, 4) == "s3::" ? "" : (var.model_cache_volume != "" ? local.model_mount : var.model_cache_dir)
  }) }
}

job "slm-inference" {
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
    value     = var.inference_role
  }

  dynamic "group" {
    for_each = local.groups
    labels   = [group.key]

    content {
      count = group.value.count

      # Instances go to different nodes whenever there is room: a node lost
      # takes one instance, not all. A spread rather than distinct_hosts: the
      # reserved cores already keep two instances off each other's CPUs, and
      # distinct_hosts would leave a canary or a rescheduled instance
      # unplaceable whenever every inference node already runs one (and would
      # break the single-node dev agent).
      spread {
        attribute = "${node.unique.id}"
        weight    = 100
      }

      # A binary built for AVX-512 dies of an illegal instruction elsewhere:
      # with one, the job waits for a node that has it rather than crash-loop.
      # ($${ is a literal ${: the node attribute is Nomad's to interpolate.)
      dynamic "constraint" {
        for_each = var.inference_x86_64_level == "" ? [] : [var.inference_x86_64_level]
        content {
          attribute = "$${meta.slm_x86_64_levels}"
          operator  = "set_contains"
          value     = constraint.value
        }
      }

      network {
        port "rpc" {}
      }

      dynamic "volume" {
        for_each = group.value.volume != "" ? [group.value.volume] : []
        labels   = ["models"]

        content {
          type      = "host"
          source    = volume.value
          read_only = false
        }
      }

      # The s3:: model's cache (see locals): Nomad places a replacement on its
      # predecessor's node when it fits and moves its local/ over.
      dynamic "ephemeral_disk" {
        for_each = group.value.s3 ? [var.inference_disk] : []

        content {
          sticky = true
          size   = ephemeral_disk.value
        }
      }

      update {
        max_parallel      = 1
        canary            = var.inference_canary
        auto_promote      = var.inference_canary > 0
        auto_revert       = true
        health_check      = "checks"
        min_healthy_time  = "10s"
        healthy_deadline  = "15m"
        progress_deadline = "20m"
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
        name     = "slm-inference"
        port     = "rpc"
        tags     = ["slm-mesh", "rpc", "version-${var.version}"]

        meta {
          version = var.version
          model   = group.value.name
        }

        # /health answers 503 while the model loads and 200 once it serves, so
        # Consul only hands callers ready instances.
        # Over TLS when RPC is (see the caller's check).
        check {
          name            = "inference health"
          type            = "http"
          protocol        = var.rpc_tls ? "https" : "http"
          tls_skip_verify = var.rpc_tls
          path            = "/health"
          interval        = "10s"
          timeout         = "3s"

          check_restart {
            limit = 3
            grace = var.startup_grace
          }
        }
      }

      task "inference" {
        driver = var.driver

        # Consul deregisters the instance first, so callers stop sending new
        # requests before SIGTERM starts the drain.
        shutdown_delay = "5s"
        kill_timeout   = "${var.drain_seconds + 15}s"

        config {
          command = local.command
          args = concat([
            "-addr=${NOMAD_ADDR_rpc}",
            "-model-sha256=${group.value.sha256}",
            "-model-name=${group.value.name}",
            "-threads=${local.threads}",
            "-parallel=${var.inference_parallel}",
            "-ctx=${var.inference_ctx}",
            "-kv-cache-type=${var.inference_kv_cache_type}",
            "-drain-timeout=${var.drain_seconds}s",
            "-log-level=${var.log_level}",
            "-log-json",
            ], group.value.cache == "" ? ["-model=${NOMAD_TASK_DIR}/model.gguf"] : ["-model=${group.value.url}", "-cache-dir=${group.value.cache}"], var.rpc_tls ? [
            "-tls-cert=${NOMAD_SECRETS_DIR}/rpc.pem",
            "-tls-key=${NOMAD_SECRETS_DIR}/rpc-key.pem",
          ] : [])
        }

        dynamic "artifact" {
          for_each = local.use_binary_artifact ? [var.inference_binary_url] : []

          content {
            source      = artifact.value
            destination = "local/inference"
            mode        = "file"

            options {
              checksum = "sha256:${var.inference_binary_sha256}"
            }
          }
        }

        dynamic "artifact" {
          for_each = group.value.cache == "" ? [group.value.url] : []

          content {
            source      = artifact.value
            destination = "local/model.gguf"
            mode        = "file"

            options {
              checksum = "sha256:${group.value.sha256}"
            }
          }
        }

        dynamic "volume_mount" {
          for_each = group.value.volume != "" ? ["models"] : []

          content {
            volume      = volume_mount.value
            destination = local.model_mount
          }
        }

        # Inference's RPC certificate (it names slm-inference).
        # From the job's own Nomad Variable, as the tokens; never in the job.
        # Written into the task's own secrets directory, which no other task
        # reaches, readable by the task's user.
        dynamic "template" {
          for_each = var.rpc_tls ? {
            "rpc.pem"     = "inference_cert"
            "rpc-key.pem" = "inference_key"
          } : {}

          content {
            destination = "${NOMAD_SECRETS_DIR}/${template.key}"
            change_mode = "restart"
            data        = "{{ with nomadVar \"${var.secrets_var}\" }}{{ .${template.value} }}{{ end }}"
          }
        }

        # The token callers must present (item inference_token) comes from
        # the job's own Nomad Variable at run time and is never part of the
        # job. The task waits until the variable exists.
        template {
          destination = "${NOMAD_SECRETS_DIR}/rpc.env"
          env         = true
          change_mode = "restart"
          data        = <<-EOT
          {{- with nomadVar "${var.secrets_var}" }}
          SLM_RPC_TOKEN={{ .inference_token }}
          {{- end }}
          EOT
        }

        # cores and cpu exclude each other: null leaves one of them unset.
        resources {
          cores  = var.inference_cores > 0 ? var.inference_cores : null
          cpu    = var.inference_cores > 0 ? null : var.inference_cpu
          memory = var.inference_memory
        }
      }
    }
  }
}

# Variables for running the three jobs on one machine: `nomad agent -dev`
# (with nomad/dev.hcl) and `consul agent -dev`, with the binaries built by
# `make build`. docs/nomad.md walks through it.
#
# bin_dir is not set here because it is the absolute path of your checkout;
# pass it on the command line:
#
#   go run ./tools/submit -var-file jobs/local.vars.hcl -var bin_dir=$PWD/.cache/bin

# The dev agent runs tasks as the agent's user without isolation.
driver = "raw_exec"

datacenters = ["dc1"]

# The single dev node runs every tier: these are the roles nomad/dev.hcl
# gives it (meta.slm_role), where a cluster has one role per node.
caller_role    = "private"
inference_role = "private"

# A laptop has no host volume for the model: Nomad fetches it as an
# artifact (checked against model_sha256) into each allocation instead. To
# download it once, add -var model_cache_dir=$HOME/.cache/slm-mesh/models
# (the cache `make run` fills).
model_cache_volume = ""

# Every hop stays on this machine: plain RPC, no certificates to make.
rpc_tls = false

# Keep the API on loopback, without a rate limit.
gateway_bind       = "127.0.0.1"
gateway_rate_limit = 0

# One instance of each tier; the dev node has room for the caller's and the
# inference's canaries (no reserved cores here), not for a second gateway on
# port 3111.
gateway_count    = 1
caller_count     = 1
inference_count  = 1
inference_canary = 1

# Small enough for a laptop running everything else too. A dev agent may
# not reserve cores (raw_exec needs cgroups for it, and none on macOS):
# inference shares the CPUs by MHz, and -threads=0 leaves the service its
# default: one llama.cpp thread per CPU but one.
inference_cores    = 0
inference_cpu      = 1000
inference_memory   = 1024
inference_parallel = 4

# The dev agent caps kill_timeout at its max_kill_timeout (nomad/dev.hcl).
drain_seconds = 20

log_level = "debug"

# Extra settings for a single-machine `nomad agent -dev -config nomad/dev.hcl`.
# Not a Terraform template: it has no placeholders and is used as is.

client {
  # The one dev node runs every tier, so it carries every role: gateway,
  # caller and inference as on a cluster, and "private", the role that
  # jobs/local.vars.hcl gives both caller and inference.
  meta {
    slm_role = "gateway,caller,inference,private"
  }

  # Room for the services' drain (see jobs/local.vars.hcl, drain_seconds).
  max_kill_timeout = "1m"
}

# The jobs run the checkout's binaries without isolation.
plugin "raw_exec" {
  config {
    enabled = true
  }
}

# The operator's Nomad ACL policy: what `go run ./tools/submit` and the
# daily `nomad job status`, `nomad alloc logs` and `nomad node status` need,
# and nothing of the cluster's configuration, agents or ACLs. The servers
# apply it as "slm-operator" at bootstrap (acl-bootstrap.sh); the operator
# token is created from it once with the management token, which then stays
# for break-glass only (README, "On AWS").
namespace "default" {
  # Parse, plan, register and stop the jobs; watch their deployments,
  # evaluations and allocations; read their logs. Not alloc-exec,
  # alloc-node-exec or read-fs: the operator never gets a shell in a task.
  capabilities = ["list-jobs", "parse-job", "read-job", "submit-job", "read-logs"]

  # submit checks that each job's secrets exist before it registers.
  variables {
    path "nomad/jobs/*" {
      capabilities = ["read"]
    }
  }
}

# Which nodes are up, drained or gone.
node {
  policy = "read"
}

# The inference job mounts the slm-model-cache host volume read-write,
# which Nomad allows a job's submitter only with this capability.
host_volume "slm-model-cache" {
  capabilities = ["mount-readwrite"]
}

# Nomad ACL policy of the client nodes' drain token (SSM
# client/nomad/drain-token): a node about to be terminated drains itself
# (terraform/modules/plan/templates/drain.sh). Draining needs node write,
# which also reads nodes; nothing else: no job, variable or agent access.
# Nomad cannot scope node rules to one node, so any client may drain any
# node with it (and only drain or mark nodes ineligible).
node {
  policy = "write"
}

#!/bin/bash
# Drains this Nomad client before its instance goes away, then lets Auto
# Scaling go on with the termination. Runs from boot on every client node
# (slm-drain.service) and polls the instance metadata service (IMDSv2):
#
#   autoscaling/target-lifecycle-state  "Terminated": the group is
#       terminating this instance and holds it in Terminating:Wait (the
#       lifecycle hook) until complete-lifecycle-action or the hook's
#       heartbeat timeout;
#   spot/instance-action                present: EC2 reclaims this Spot
#       instance in two minutes.
#
# Either way it drains its own node with a deadline (the allocations are
# stopped, each service draining its requests within its kill_timeout, and
# placed on other nodes), then completes its own lifecycle action with
# CONTINUE. A path that answers 404 (no notice yet, not Spot, not in a
# group) or a metadata service that does not answer means nothing to do:
# it asks again after a pause. A step that fails is logged and the next
# still runs: a node that cannot drain must not hold up its replacement.
#
# Settings: /etc/slm-mesh/drain.conf, rendered by terraform/modules/plan
# (or the file SLM_DRAIN_CONF names): region, group, hook,
# token_parameter, deadline and spot_deadline (seconds), imds (base URL),
# interval (seconds between polls), client_id_file, NOMAD_ADDR,
# NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY. Shell variables are written without braces, as in the
# templates next to this file.
set -uo pipefail
umask 077
export PATH=$PATH:/snap/bin

conf=$(printenv SLM_DRAIN_CONF || echo /etc/slm-mesh/drain.conf)
# shellcheck source=/dev/null
. "$conf"

log() { echo "slm-drain: $*" >&2; }

# meta PATH prints the instance metadata at PATH, and fails quietly when
# the path answers 404 or the service does not answer.
meta() {
  local token
  token=$(curl -fs -m 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" "$imds/latest/api/token") || return 1
  curl -fs -m 2 -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/$1"
}

terminating() { [ "$(meta autoscaling/target-lifecycle-state)" = Terminated ]; }

until terminating && limit=$deadline || { meta spot/instance-action >/dev/null && limit=$spot_deadline; }; do
  sleep "$interval"
done

node=$(cat "$client_id_file" 2>/dev/null) || node=
if [ -z "$node" ]; then
  log "no Nomad node id in $client_id_file: nothing to drain"
else
  log "the instance is going away: draining node $node (deadline $limit s)"
  # The node's own token (node write, nothing else; see
  # nomad/node-drain.policy.hcl), read from SSM when needed.
  NOMAD_TOKEN=$(aws ssm get-parameter --region "$region" --with-decryption \
    --name "$token_parameter" --query Parameter.Value --output text) || NOMAD_TOKEN=
  export NOMAD_TOKEN
  # Waits until every allocation has stopped, at most until the deadline
  # (then Nomad stops the rest), plus a margin for the last ones to exit.
  if timeout $((limit + 60)) nomad node drain -enable -yes -deadline "$limit"s "$node"; then
    log "node $node drained"
  else
    log "draining node $node failed; the termination goes on"
  fi
fi

# On Spot the group may not be terminating the instance yet: EC2 reclaims
# it either way, and the group starts a replacement once it is gone.
until terminating; do
  sleep "$interval"
done
instance=$(meta instance-id) || instance=
n=0
until aws autoscaling complete-lifecycle-action --region "$region" \
  --auto-scaling-group-name "$group" --lifecycle-hook-name "$hook" \
  --instance-id "$instance" --lifecycle-action-result CONTINUE; do
  n=$((n + 1))
  if [ "$n" -ge 5 ]; then
    log "could not complete the lifecycle action of $instance: the group goes on at the hook's heartbeat timeout"
    exit 1
  fi
  sleep "$interval"
done
log "lifecycle action of $instance in $group completed"

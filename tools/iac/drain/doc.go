// Package drain tests the client nodes' drain script,
// terraform/modules/plan/templates/drain.sh, as a node runs it: against a
// real Nomad agent with ACLs, with the token policy the servers create
// (nomad/node-drain.policy.hcl), and stand-ins for what only AWS provides:
// the instance metadata service and the AWS CLI.
package drain

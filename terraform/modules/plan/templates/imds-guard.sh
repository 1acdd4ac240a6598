#!/bin/bash
# Keeps the tasks of this Nomad client away from the instance metadata
# service (169.254.169.254): its credentials are the node's instance role
# and must serve the agents only. Exec tasks share the host's network, so
# IMDSv2's hop limit does not stop them; the kernel's owner match does. Only
# root (Nomad, the artifact downloads, the SSM agent, cloud-init) and the
# consul user (cloud auto-join) may reach it. Exec tasks run as nobody (or
# another user), never as root or consul: nomad/client.hcl denies both.
# slm-imds-guard.service runs this at every boot, before Nomad.
set -euo pipefail

ipt() { iptables -w 10 "$@"; }

ipt -N SLM-IMDS 2>/dev/null || true
ipt -F SLM-IMDS
ipt -A SLM-IMDS -m owner --uid-owner 0 -j RETURN
ipt -A SLM-IMDS -m owner --uid-owner consul -j RETURN
ipt -A SLM-IMDS -j DROP
ipt -C OUTPUT -d 169.254.169.254/32 -j SLM-IMDS 2>/dev/null || ipt -I OUTPUT 1 -d 169.254.169.254/32 -j SLM-IMDS

#!/bin/sh
# Writes the x86-64 levels this node's CPU runs as Nomad client meta, before
# every start of the agent (nomad.service, ExecStartPre), so that a node
# whose instance type changed reports its new CPU. An inference release
# built for AVX-512 (tools/release -arch x86-64-v4) is placed only where
# meta.slm_x86_64_levels lists v4; an AVX2 build runs anywhere. Nomad merges
# this file's meta with client.hcl's. Servers do not have this script.
set -eu
levels=v3,v4
for f in avx512f avx512bw avx512cd avx512dq avx512vl; do
	grep -qw "$f" /proc/cpuinfo || levels=v3
done
umask 077
printf 'client {\n  meta {\n    slm_x86_64_levels = "%s"\n  }\n}\n' "$levels" >/etc/nomad.d/cpu.hcl.tmp
mv /etc/nomad.d/cpu.hcl.tmp /etc/nomad.d/cpu.hcl

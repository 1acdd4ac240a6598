#!/bin/sh
# Builds the Nomad agent pinned in this module (tools/nomad/go.mod) into the
# path given as $1, by default .cache/bin/nomad at the repository root.
# Nothing is built when that binary is newer than tools/nomad/go.sum, which
# changes whenever the pinned version does, and than this script, which
# holds the build's tags.
#
#   tools/nomad/build.sh                  # -> .cache/bin/nomad
#   tools/nomad/build.sh /usr/local/bin/nomad
#   FORCE=1 tools/nomad/build.sh          # rebuild anyway
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-"$root/.cache/bin/nomad"}

case $out in
/*) ;;
*) out="$(pwd)/$out" ;; # go build runs in tools/nomad; keep $1 relative to the caller
esac

if [ -z "${FORCE:-}" ] && [ -x "$out" ] && [ "$out" -nt "$here/go.sum" ] && [ "$out" -nt "$here/build.sh" ]; then
	echo "nomad: $out is up to date"
	exit 0
fi

mkdir -p "$(dirname "$out")"
echo "nomad: building $out (several minutes on a cold module and build cache)"
start=$(date +%s)
cd "$here"
# The tags are those of HashiCorp's release builds but "ui" (the web UI's
# assets are generated files the module does not ship; without the tag the
# agent serves a placeholder page): "release" leaves out what exists for
# Nomad's own tests only (the mock_driver task driver, a hook that fails
# allocations on request), "codegen_generated" builds in the generated
# msgpack codecs of the RPC structs. cgo must stay on (CGO_ENABLED=1): the
# exec driver starts each task through runc's libcontainer, whose nsenter
# package is C code that runs before Go starts; without cgo every exec
# task fails to start. The binary is therefore not static (glibc). Written
# to a temporary name first, so that an interrupted build never leaves a
# half-written binary that looks up to date.
CGO_ENABLED=1 go build -trimpath -tags 'codegen_generated release' -ldflags='-s -w' -o "$out.part" github.com/hashicorp/nomad
mv "$out.part" "$out"
echo "nomad: built in $(($(date +%s) - start))s"
"$out" version | head -n 1

#!/bin/sh
# Builds the Consul agent pinned in this module (tools/consul/go.mod) into
# the path given as $1, by default .cache/bin/consul at the repository root.
# Nothing is built when that binary is newer than tools/consul/go.sum, which
# changes whenever the pinned version does.
#
#   tools/consul/build.sh                  # -> .cache/bin/consul
#   tools/consul/build.sh /usr/local/bin/consul
#   FORCE=1 tools/consul/build.sh          # rebuild anyway
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-"$root/.cache/bin/consul"}

case $out in
/*) ;;
*) out="$(pwd)/$out" ;; # go build runs in tools/consul; keep $1 relative to the caller
esac

if [ -z "${FORCE:-}" ] && [ -x "$out" ] && [ "$out" -nt "$here/go.sum" ]; then
	echo "consul: $out is up to date"
	exit 0
fi

mkdir -p "$(dirname "$out")"
echo "consul: building $out (a few minutes on a cold module and build cache)"
cd "$here"
# CGO_ENABLED=0: a static binary that runs on any Linux host and in CI images.
# Write to a temporary name first, so an interrupted build never leaves a
# half-written binary that looks up to date.
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out.part" github.com/hashicorp/consul
mv "$out.part" "$out"
"$out" version | head -n 1

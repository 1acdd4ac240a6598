#!/bin/sh
# Serves a GGUF model with ollama, the anchor slm-mesh is compared with in
# docs/PERFORMANCE.md, on loopback: until interrupted, or, given more
# arguments, while tools/bench runs with them against ollama as endpoint A:
# a tools/bench command (sweep, the default, conversation, single or embed),
# then its flags.
#
#   sh tools/bench/ollama.sh .cache/models/gemma3-270m-random.gguf
#   THREADS=2 PARALLEL=8 PORT=11434 sh tools/bench/ollama.sh MODEL.gguf
#   sh tools/bench/ollama.sh MODEL.gguf sweep -mesh MODEL.gguf -mesh-as b   # make bench-ollama
#   sh tools/bench/ollama.sh MODEL.gguf conversation -mesh MODEL.gguf -mesh-as b
#   THREADS=2 sh tools/bench/ollama.sh EMBEDDING.gguf embed -mesh EMBEDDING.gguf -mesh-as b -threads 2
#
# ollama is built from the Go module proxy (the same module slm-mesh takes
# its llama package from) with the project's cgo flags into .cache/bin/ollama,
# once. Its models live in .cache/ollama, never in the user's ~/.ollama. The
# model is served as "slm-anchor" with THREADS threads and PARALLEL parallel
# sequences of CTX tokens each — the settings the mesh gets from
# `make bench-ollama`.
set -eu

version=v0.24.0
model=${1:?usage: ollama.sh MODEL.gguf [bench command and flags]}
shift
threads=${THREADS:-$(nproc)}
parallel=${PARALLEL:-8}
ctx=${CTX:-2048}
port=${PORT:-11434}

root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.cache/bin/ollama"
cflags="${CGO_CFLAGS:--O3 -march=native -DGGML_USE_CPU_REPACK}"
cxxflags="${CGO_CXXFLAGS:--O3 -march=native -DGGML_USE_CPU_REPACK}"
# The stamp names the version and the flags: other flags rebuild ollama, so
# that it is compared with the mesh built the same way.
stamp="$bin.$version.$(printf '%s|%s' "$cflags" "$cxxflags" | cksum | cut -d' ' -f1)"
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")
[ -f "$model" ] || { echo "ollama.sh: no model at $model" >&2; exit 1; }

if [ ! -x "$bin" ] || [ ! -e "$stamp" ]; then
	echo "ollama.sh: building ollama $version into $bin (minutes on a cold build cache)"
	mkdir -p "$root/.cache/bin"
	GOBIN="$root/.cache/bin" \
		CGO_CFLAGS="$cflags" CGO_CXXFLAGS="$cxxflags" \
		go install -trimpath "github.com/ollama/ollama@$version"
	rm -f "$bin".v*
	touch "$stamp"
fi

export OLLAMA_HOST="127.0.0.1:$port"
export OLLAMA_MODELS="$root/.cache/ollama"
export OLLAMA_NUM_PARALLEL="$parallel"
export OLLAMA_KEEP_ALIVE=-1
export OLLAMA_NOHISTORY=1

mkdir -p "$OLLAMA_MODELS"
log="$OLLAMA_MODELS/serve.log"
"$bin" serve >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM

tries=0
until "$bin" list >/dev/null 2>&1; do
	tries=$((tries + 1))
	if [ $tries -gt 100 ] || ! kill -0 $pid 2>/dev/null; then
		echo "ollama.sh: ollama did not start on $OLLAMA_HOST; its log:" >&2
		tail -n 20 "$log" >&2
		exit 1
	fi
	sleep 0.1
done

modelfile=$(mktemp)
cat >"$modelfile" <<EOF
FROM $model
PARAMETER num_thread $threads
PARAMETER num_ctx $ctx
PARAMETER temperature 1
EOF
"$bin" create slm-anchor -f "$modelfile" >/dev/null
rm -f "$modelfile"

echo "ollama.sh: serving $model as slm-anchor at http://$OLLAMA_HOST (pid $pid, $threads threads, $parallel parallel; log $log)"
if [ $# -eq 0 ]; then
	echo "ollama.sh: Ctrl-C stops it"
	wait $pid
	exit
fi

cd "$root"
# The command goes before the flags, ollama's included.
cmd=sweep
case $1 in
-*) ;;
*) cmd=$1; shift ;;
esac
go run ./tools/bench "$cmd" -a "http://$OLLAMA_HOST" -model slm-anchor "$@"
# ollama decodes in a runner process of its own; its peak memory is the
# figure comparable with the inference service's.
for runner in $(pgrep -f "ollama runner" || true); do
	echo "ollama runner (pid $runner): peak RSS $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' "/proc/$runner/status")"
done

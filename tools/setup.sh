#!/bin/sh
# Checks, and installs when it can, what building the inference service
# needs: a C/C++ compiler and the headers that the ollama Go module leaves
# out of llama.cpp (nlohmann/json, stb_image, and miniaudio, for which the
# project ships a stand-in: see docs/build.md).
#
# As root on Debian/Ubuntu it installs what is missing; otherwise it prints
# the command to run and fails.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
missing=""
command -v gcc >/dev/null 2>&1 || missing="$missing gcc"
command -v g++ >/dev/null 2>&1 || missing="$missing g++"
[ -f /usr/include/nlohmann/json_fwd.hpp ] || missing="$missing nlohmann-json3-dev"
[ -f /usr/include/stb/stb_image.h ] || missing="$missing libstb-dev"

if [ -n "$missing" ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "setup: installing$missing"
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
	else
		echo "setup: missing build dependencies; run:" >&2
		echo "  sudo apt-get install -y$missing" >&2
		exit 1
	fi
fi

# The miniaudio stand-in goes where the compiler finds it without an -I flag
# that names this checkout: the Go build cache then stays valid whichever
# folder the repository is cloned into.
stub=/usr/local/include/miniaudio/miniaudio.h
if ! cmp -s "$root/third_party/miniaudio/miniaudio.h" "$stub" 2>/dev/null; then
	if [ -w /usr/local/include ] || [ "$(id -u)" = 0 ]; then
		mkdir -p "$(dirname "$stub")"
		cp "$root/third_party/miniaudio/miniaudio.h" "$stub"
		echo "setup: installed $stub"
	else
		echo "setup: cannot write $stub; the build adds -I$root/third_party instead" >&2
	fi
fi

#!/usr/bin/env bash
# Installs the built beitv2 into a temporary prefix, builds tests/consumer against it and runs it.
#   run.sh BUILD_DIR TORCH_DIR
set -euo pipefail
build=$1
torch_dir=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake=$( [ -x /usr/bin/cmake ] && echo /usr/bin/cmake || command -v cmake )
"$cmake" --install "$build" --prefix "$work/prefix" > /dev/null
"$cmake" -S "$here" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DTorch_DIR="$torch_dir" > "$work/configure.log" || { cat "$work/configure.log"; exit 1; }
"$cmake" --build "$work/build" -j2 > "$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/build/consumer" /usr/share/doc/opencv-doc/examples/data/baboon.jpg

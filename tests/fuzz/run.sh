#!/usr/bin/env bash
# Builds the safetensors fuzz target (clang, ASan + UBSan) and fuzzes for SECONDS (default 60), starting from
# copies of the seed corpus and the malformed corpus. Exits non-zero on any crash, sanitizer report, leak,
# timeout or out-of-memory; the reproducer is kept under the build dir's artifacts/.
#   tests/fuzz/run.sh [SECONDS]          # build dir: ${BEITV2_BUILD_DIR:-build}/fuzz (relative to the repo root)
#   <build>/fuzz_safetensors ARTIFACT    # replay a reproducer
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/env.sh"
cd "$BEITV2_ROOT"
seconds=${1:-60}
build=$BEITV2_BUILD_DIR/fuzz

cxx=${BEITV2_FUZZ_CXX:-clang++}
if ! command -v "$cxx" > /dev/null; then
  echo "fuzz: $cxx not found; scripts/setup.sh installs clang and its fuzzer runtime" >&2
  exit 1
fi
mkdir -p "$build"
torch_prefix=$("$BEITV2_BUILD_PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')
opts=(-DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$torch_prefix")
command -v ccache > /dev/null && opts+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
[ -f "$build/CMakeCache.txt" ] || { command -v ninja > /dev/null && opts+=(-G Ninja); }
"$BEITV2_CMAKE" -S tests/fuzz -B "$build" "${opts[@]}" > "$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; exit 1; }
"$BEITV2_CMAKE" --build "$build" -j "${BEITV2_JOBS:-2}" > "$build/build.log" 2>&1 \
  || { cat "$build/build.log"; exit 1; }

# Fuzz a copy: libFuzzer adds the inputs it finds to its corpus folder.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$build/artifacts"
cp tests/fuzz/corpus/*.safetensors tests/data/safetensors_malformed/*.safetensors "$work/corpus/"
echo "fuzz: $build/fuzz_safetensors for $seconds s"
start=$(date +%s)
rc=0
"$build/fuzz_safetensors" "$work/corpus" -max_total_time="$seconds" -timeout=10 \
  -dict=tests/fuzz/safetensors.dict -artifact_prefix="$build/artifacts/" -print_final_stats=1 \
  > "$work/fuzz.log" 2>&1 || rc=$?
grep -E '^(stat::|Done )' "$work/fuzz.log" || true
if [ "$rc" -ne 0 ]; then
  tail -n 80 "$work/fuzz.log"
  echo "fuzz: FAILED (exit $rc) after $(( $(date +%s) - start )) s; reproducer in $build/artifacts/" >&2
  exit "$rc"
fi
echo "fuzz: no crash in $(( $(date +%s) - start )) s"

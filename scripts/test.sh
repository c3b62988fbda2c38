#!/usr/bin/env bash
# Builds if needed, then runs the whole suite (unit, golden, slow, install) with ctest.
#   scripts/test.sh                 # everything
#   scripts/test.sh -L unit         # extra arguments go to ctest (e.g. a label, or -R REGEX)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEITV2_ROOT"
if [ ! -f "$BEITV2_BUILD_DIR/CMakeCache.txt" ]; then
  scripts/setup.sh
fi
"$BEITV2_CMAKE" --build "$BEITV2_BUILD_DIR" -j "${BEITV2_JOBS:-2}"
[ -x "$BEITV2_REF_PYTHON" ] || unset BEITV2_REF_PYTHON   # slow golden tests then skip, saying why
start=$(date +%s)
ctest --test-dir "$BEITV2_BUILD_DIR" --output-on-failure -j "${BEITV2_JOBS:-2}" "$@"
echo "test.sh: suite took $(( $(date +%s) - start )) s"

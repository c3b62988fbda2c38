#!/usr/bin/env bash
# Side-by-side speed: beitv2 (C++) and the PyTorch reference, same machine, same threads, one run.
# Prints each JSON line and the ratio beitv2 / reference (>1 = beitv2 faster).
#   scripts/bench.sh [--model vit_base_patch16_224] [--batch 8] [--threads 2] [--iters 10]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEITV2_ROOT"
"$BEITV2_CMAKE" --build "$BEITV2_BUILD_DIR" -j "${BEITV2_JOBS:-2}" --target beitv2-bench > /dev/null
ours=$("$BEITV2_BUILD_DIR/bin/beitv2-bench" vit-forward "$@")
ref=$("$BEITV2_REF_PYTHON" tools/bench_reference.py vit-forward "$@")
echo "$ours"
echo "$ref"
python3 - "$ours" "$ref" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{a['bench']} {a['model']} batch {a['batch']} threads {a['threads']}: beitv2 {a['images_per_s']:.2f} img/s "
      f"(torch {a['torch']}), {b['impl']} {b['images_per_s']:.2f} img/s (torch {b['torch']}), "
      f"ratio {a['images_per_s'] / b['images_per_s']:.2f}x")
PY

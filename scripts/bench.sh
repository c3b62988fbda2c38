#!/usr/bin/env bash
# Side-by-side speed, same machine, same threads, one run: beitv2 (C++), the plain-PyTorch rendering on the
# same torch build the C++ links (build env), and timm (reference env, newer torch). Prints each JSON line and
# the ratios beitv2 / PyTorch (>1 = beitv2 faster).
#   scripts/bench.sh [vit-forward] [--model vit_base_patch16_224] [--batch 8] [--threads 2] [--iters 10]
#   scripts/bench.sh vqkd-train-step [--size tiny|base] [--batch 8] [--threads 2] [--iters 10]
#   scripts/bench.sh mim-train-step [--size tiny|base] [--batch 8] [--threads 2] [--iters 10]
# (the data loader has its own: scripts/bench_data.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEITV2_ROOT"
bench=vit-forward
if [ $# -gt 0 ] && [[ $1 != --* ]]; then bench=$1; shift; fi
"$BEITV2_CMAKE" --build "$BEITV2_BUILD_DIR" -j "${BEITV2_JOBS:-2}" --target beitv2-bench > /dev/null
lines=("$("$BEITV2_BUILD_DIR/bin/beitv2-bench" "$bench" "$@")")
plain=(--impl plain)
[ "$bench" = vit-forward ] || plain=()
lines+=("$("$BEITV2_BUILD_PYTHON" tools/bench_reference.py "$bench" "${plain[@]}" "$@")")
if [ -x "$BEITV2_REF_PYTHON" ]; then
  timm=(--impl timm)
  [ "$bench" = vit-forward ] || timm=()
  lines+=("$("$BEITV2_REF_PYTHON" tools/bench_reference.py "$bench" "${timm[@]}" "$@")")
fi
printf '%s\n' "${lines[@]}"
python3 - "${lines[@]}" <<'PY'
import json, sys
ours, *refs = [json.loads(a) for a in sys.argv[1:]]
print(f"{ours['bench']} {ours['model']} batch {ours['batch']} threads {ours['threads']}: "
      f"beitv2 {ours['images_per_s']:.2f} img/s (torch {ours['torch']})")
flops = ours.get("gflop_per_image")
if flops:  # the train steps: FLOP rate as a share of each side's own GEMM rate, peak memory
    print(f"  {flops:.1f} GFLOP per image (counted from the shapes); beitv2 {ours['achieved_gflops']:.1f} GFLOP/s "
          f"= {100 * ours['gemm_share']:.0f}% of the GEMM rate ({ours['gemm_gflops']:.1f} GFLOP/s), "
          f"peak RSS {ours['peak_rss_mib']:.0f} MiB")
for r in refs:
    line = (f"  vs {r['impl']} {r['images_per_s']:.2f} img/s (torch {r['torch']}): "
            f"ratio {ours['images_per_s'] / r['images_per_s']:.2f}x")
    if flops and "gemm_gflops" in r:
        line += (f"; {100 * flops * r['images_per_s'] / r['gemm_gflops']:.0f}% of its GEMM rate "
                 f"({r['gemm_gflops']:.1f} GFLOP/s), peak RSS {r['peak_rss_mib']:.0f} MiB")
    print(line)
PY

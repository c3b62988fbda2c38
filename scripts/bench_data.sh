#!/usr/bin/env bash
# Data-loader speed side by side, same machine, same worker count, one run: beitv2's threaded loader
# (build/bin/beitv2-bench data-loader) against torchvision + PIL + torch DataLoader (tools/bench_reference.py
# data-loader, reference env), both doing decode -> RandomResizedCrop(224, bicubic) -> hflip -> uint8 batches,
# on the opencv-doc photos and on a Fashion-MNIST ImageFolder (prepared once under ~/.cache/beitv2).
# Prints each JSON line and the ratio beitv2 / torchvision (>1 = beitv2 faster). Never part of the tests.
#   scripts/bench_data.sh [--workers 2] [--batch 32] [--measure 2000]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEITV2_ROOT"
workers=2 batch=32 measure=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --measure) measure=$2; shift 2 ;;
    *) echo "bench_data.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$BEITV2_REF_PYTHON" ] || { echo "bench_data.sh: needs the reference env ($BEITV2_REF_PYTHON): scripts/setup.sh" >&2; exit 1; }
"$BEITV2_CMAKE" --build "$BEITV2_BUILD_DIR" -j "${BEITV2_JOBS:-2}" --target beitv2-bench > /dev/null
fmnist="$BEITV2_CACHE/fashion-mnist"
python3 tools/prepare_fashion_mnist.py "$fmnist" --limit 1000 > /dev/null   # 10,000 train images, idempotent
common=(--workers "$workers" --batch "$batch" --measure "$measure")
lines=()
for set in "folder /usr/share/doc/opencv-doc/examples/data" "image_folder $fmnist/train"; do
  read -r kind dir <<< "$set"
  lines+=("$("$BEITV2_BUILD_DIR/bin/beitv2-bench" data-loader --kind "$kind" --images "$dir" "${common[@]}")")
  lines+=("$("$BEITV2_REF_PYTHON" tools/bench_reference.py data-loader --kind "$kind" --images "$dir" "${common[@]}")")
done
printf '%s\n' "${lines[@]}"
python3 - "$(nproc)" "${lines[@]}" <<'PY'
import json, sys
cores, rows = sys.argv[1], [json.loads(a) for a in sys.argv[2:]]
print(f"data-loader, decode + RandomResizedCrop 224 bicubic + flip -> uint8, {rows[0]['workers']} workers, "
      f"batch {rows[0]['batch']}, {cores} cores:")
for ours, ref in zip(rows[0::2], rows[1::2]):
    print(f"  {ours['images']} ({ours['dataset_size']} images): beitv2 {ours['images_per_s']:.0f} img/s, "
          f"{ref['impl']} {ref['images_per_s']:.0f} img/s: ratio {ours['images_per_s'] / ref['images_per_s']:.2f}x")
PY

#!/usr/bin/env bash
# The main job on the embedded default: train-vqkd on the ~90 opencv-doc photos (configs/vqkd_tiny_photos.yaml:
# a tiny tokenizer, a native teacher with random weights, 300 steps, ~1 minute on 2 cores), then tokenise the
# photos with the result. Extra arguments go to train-vqkd (e.g. --set train.steps=100).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEITV2_ROOT"
out=runs/vqkd_tiny_photos
rm -rf "$out"
"$BEITV2_BUILD_DIR/bin/train-vqkd" --config configs/vqkd_tiny_photos.yaml --set train.out_dir=$out "$@"
"$BEITV2_BUILD_DIR/bin/tokenize-images" --weights $out/tokenizer.safetensors \
  --images /usr/share/doc/opencv-doc/examples/data --out $out/tokens.jsonl
echo "demo: run directory $out (log.txt, metrics.jsonl, plots/, checkpoints/, tokenizer.safetensors, tokens.jsonl)"

#!/usr/bin/env bash
# The main job on the embedded default, on the ~90 opencv-doc photos: train-vqkd (configs/vqkd_tiny_photos.yaml:
# a tiny tokenizer against a native teacher with random weights, 300 steps), tokenise the photos with it, then
# pretrain-beitv2 with that tokenizer (configs/beitv2_tiny_photos.yaml: a 4-block BEiT v2 with the CLS head,
# 300 steps). ~3 minutes on 2 cores. Extra arguments go to train-vqkd (e.g. --set train.steps=100).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEITV2_ROOT"
out=runs/vqkd_tiny_photos
mim=runs/beitv2_tiny_photos
rm -rf "$out" "$mim"
"$BEITV2_BUILD_DIR/bin/train-vqkd" --config configs/vqkd_tiny_photos.yaml --set train.out_dir=$out "$@"
"$BEITV2_BUILD_DIR/bin/tokenize-images" --weights $out/tokenizer.safetensors \
  --images /usr/share/doc/opencv-doc/examples/data --out $out/tokens.jsonl
"$BEITV2_BUILD_DIR/bin/pretrain-beitv2" --config configs/beitv2_tiny_photos.yaml \
  --set tokenizer.path=$out/tokenizer.safetensors --set train.out_dir=$mim
echo "demo: run directories $out (tokenizer.safetensors, tokens.jsonl) and $mim (backbone.safetensors);"
echo "      each with config.yaml, log.txt, metrics.jsonl, plots/, checkpoints/"

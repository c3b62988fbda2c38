#!/usr/bin/env bash
# The main job: BEiT v2 end to end on Fashion-MNIST with beitv2-pipeline (configs/fashion_mnist/pipeline.yaml):
# a supervised teacher, the VQ-KD tokenizer distilled from it, BEiT v2 pretraining, linear probes (random,
# BEiT v2, teacher, raw pixels) and fine-tuning (scratch vs BEiT v2), then runs/fashion_mnist/report.md.
# About 12 minutes on 2 cores (docs/pipeline.md). A rerun skips finished stages and resumes an interrupted one.
# Extra arguments go to beitv2-pipeline (e.g. --set seed=1 --set out_dir=runs/fashion_mnist_seed1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEITV2_ROOT"
# Debian's dataset-fashion-mnist as train/ and val/ ImageFolders of PNGs (once; idempotent).
[ -d data/fashion_mnist/val/9_Ankle_boot ] || python3 tools/prepare_fashion_mnist.py data/fashion_mnist
exec "$BEITV2_BUILD_DIR/bin/beitv2-pipeline" --config configs/fashion_mnist/pipeline.yaml "$@"

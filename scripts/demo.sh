#!/usr/bin/env bash
# The main job on the embedded default: until the trainers land, a real ViT-B/16 forward pass over the
# opencv-doc photos (decode, resize 256, centre crop 224, normalise, forward), printing the feature shape and
# throughput. Extra arguments go to extract-features (see --help).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "$BEITV2_BUILD_DIR/bin/extract-features" --model vit_base_patch16_224 \
  --images /usr/share/doc/opencv-doc/examples/data "$@"

#!/usr/bin/env python3
"""The pretrained backbone the segmentation margin test starts from (tests/unit/test_seg.cpp,
Seg.PretrainedBackboneBeatsRandomOnSingleItemScenes): the main job's BEiT v2 backbone (scripts/demo.sh, seed 0:
runs/fashion_mnist/pretrain/backbone.safetensors; width 64, depth 4, patch 4, 28x28 Fashion-MNIST) without the
pretraining-only tensors (the CLS head's blocks, the LM head, the mask token, the relative_position_index
buffer). 204,208 float32 parameters, 0.8 MB.

  ~/.cache/beitv2/ref-env/bin/python tests/reference/gen_seg_backbone_fixture.py \\
      runs/fashion_mnist/pretrain/backbone.safetensors tests/data/pretrained/fmnist_beitv2_backbone.safetensors
"""
import os
import sys

from safetensors import safe_open
from safetensors.torch import save_file

DROP = ("cls_pt_layers.", "lm_head.", "mask_token")


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with safe_open(src, "pt") as f:
        meta = f.metadata() or {}
        keep = {k: f.get_tensor(k) for k in f.keys()
                if not k.startswith(DROP) and not k.endswith("relative_position_index")}
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    save_file(keep, dst, metadata={"source": "beitv2 main job (scripts/demo.sh, seed 0) pretrain/backbone.safetensors",
                                   "generator": "tests/reference/gen_seg_backbone_fixture.py",
                                   **{k: v for k, v in meta.items() if k in ("format", "config")}})
    print(f"{dst}: {len(keep)} tensors, {os.path.getsize(dst)} bytes")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks that a classifier written in timm's layout (finetune-beitv2 output.timm_layout, beitv2 to_timm_layout)
loads STRICTLY into timm's Beit and gives the logits our C++ model gave.

  check_classifier_timm.py WEIGHTS EXPECT IMG PATCH DIM DEPTH HEADS INIT_VALUES CLASSES

EXPECT holds `input` (B, 3, IMG, IMG) normalised pixels and `logits` (B, CLASSES) from the C++ side. Exit 0 when
the strict load succeeds and the logits agree within atol 1e-4; prints the difference otherwise.
Runs in the reference environment (timm, safetensors).
"""
import sys

import torch
from safetensors.torch import load_file
from timm.models.beit import Beit


def main():
    weights, expect = sys.argv[1], sys.argv[2]
    img, patch, dim, depth, heads = (int(v) for v in sys.argv[3:8])
    init_values, classes = float(sys.argv[8]), int(sys.argv[9])
    model = Beit(img_size=img, patch_size=patch, in_chans=3, num_classes=classes, global_pool="avg", embed_dim=dim,
                 depth=depth, num_heads=heads, qkv_bias=True, mlp_ratio=4.0, init_values=init_values or None,
                 use_abs_pos_emb=False, use_rel_pos_bias=True, use_shared_rel_pos_bias=False).eval()
    model.load_state_dict(load_file(weights), strict=True)
    e = load_file(expect)
    with torch.no_grad():
        logits = model(e["input"])
    diff = (logits - e["logits"]).abs().max().item()
    if diff > 1e-4:
        print(f"logits differ: max |diff| {diff}")
        return 1
    print(f"strict load OK, max |logit diff| {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

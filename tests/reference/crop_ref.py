#!/usr/bin/env python3
"""Reference RandomResizedCrop box sampling: a plain-Python rendering of torchvision's
RandomResizedCrop.get_params (torchvision/transforms/transforms.py), used by tests/unit/test_data.cpp to compare
box statistics with the C++ sampler (data/transforms.h, random_resized_crop_box).

Algorithm (as torchvision): up to 10 tries of target_area = H*W * U(scale) and aspect = exp(U(log ratio));
w = int(round(sqrt(target_area * aspect))), h = int(round(sqrt(target_area / aspect))); accepted when
0 < w <= W and 0 < h <= H, with top ~ randint[0, H-h] and left ~ randint[0, W-w]. Otherwise the centre crop:
in_ratio = W/H; below min(ratio) -> w = W, h = round(w / min(ratio)); above max(ratio) -> h = H,
w = round(h * max(ratio)); else the whole image; top = (H-h)//2, left = (W-w)//2.
torchvision draws its uniforms with torch (float32); Python's random gives the same distributions in double
precision, and only the standard library is needed.

  python3 crop_ref.py --height 375 --width 500 --scale 0.08 1 --draws 20000 --seed 0 --out boxes.json

Writes JSON: boxes (list of [top, left, height, width]) and fallbacks (how many were centre crops).
"""
import argparse
import json
import math
import random


def get_params(rng, height, width, scale, ratio):
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return (rng.randint(0, height - h), rng.randint(0, width - w), h, w), False
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return ((height - h) // 2, (width - w) // 2, h, w), True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.08, 1.0))
    ap.add_argument("--ratio", type=float, nargs=2, default=(3 / 4, 4 / 3))
    ap.add_argument("--draws", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    boxes, fallbacks = [], 0
    for _ in range(a.draws):
        box, fell_back = get_params(rng, a.height, a.width, a.scale, a.ratio)
        boxes.append(box)
        fallbacks += fell_back
    with open(a.out, "w") as f:
        json.dump({"generator": "tests/reference/crop_ref.py", "boxes": boxes, "fallbacks": fallbacks}, f)


if __name__ == "__main__":
    main()

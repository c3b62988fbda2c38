#!/usr/bin/env python3
"""Pixel reference for data/pil_ops.h and data/transforms.h: runs the operations the reference pipelines use
(Pillow, torchvision's PIL functional API, timm's RandAugment op functions) on images written by
tests/unit/test_data_reference.cpp and saves the results as PNG for the test to compare.

Needs the reference environment (Pillow, torchvision, timm):
  $BEITV2_REF_PYTHON tests/reference/pil_ops_ref.py --dir DIR     # reads DIR/jobs.json, writes DIR/<out>.png

jobs.json: a list of {"input": "<png in DIR>", "op": <name>, "out": "<png>", ...arguments}. Ops:
  resize (size [h, w], filter)               PIL Image.resize
  tv_resized_crop (box [top, left, h, w], size [h, w], filter)   torchvision F.resized_crop (PIL path)
  tv_resize_center_crop (resize, crop [h, w], filter)            torchvision Resize(int) + CenterCrop
  tv_brightness | tv_contrast | tv_saturation (factor)            torchvision F.adjust_* (PIL path)
  timm:<Name> (args [...])                   timm.data.auto_augment op functions with the recipe's kwargs
                                             (bicubic resample, fillcolor = fill)
"""
import argparse
import json
import os

from PIL import Image
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode
from timm.data import auto_augment as aa

FILTERS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
           "lanczos": InterpolationMode.LANCZOS, "nearest": InterpolationMode.NEAREST}
PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS,
               "nearest": Image.NEAREST}


def posterize_pillow9(img, bits):
    # Pillow >= 10 rejects bits = 0; the official environment's Pillow 8 (timm 0.4.12) returned black.
    if bits >= 8:
        return img
    mask = ~(2 ** (8 - bits) - 1) if bits > 0 else 0
    return img.point([i & mask for i in range(256)] * 3)


def run(job, img):
    op = job["op"]
    if op == "resize":
        h, w = job["size"]
        return img.resize((w, h), PIL_FILTERS[job["filter"]])
    if op == "tv_resized_crop":
        t, l, h, w = job["box"]
        return F.resized_crop(img, t, l, h, w, job["size"], FILTERS[job["filter"]])
    if op == "tv_resize_center_crop":
        return F.center_crop(F.resize(img, job["resize"], FILTERS[job["filter"]]), job["crop"])
    if op == "tv_brightness":
        return F.adjust_brightness(img, job["factor"])
    if op == "tv_contrast":
        return F.adjust_contrast(img, job["factor"])
    if op == "tv_saturation":
        return F.adjust_saturation(img, job["factor"])
    if op.startswith("timm:"):
        name = op[5:]
        kwargs = dict(fillcolor=tuple(job.get("fill", (124, 116, 104))), resample=Image.BICUBIC)
        if name in ("Posterize", "PosterizeIncreasing") and job["args"][0] == 0:
            return posterize_pillow9(img, 0)
        return aa.NAME_TO_OP[name](img, *job["args"], **kwargs)
    raise ValueError(f"unknown op {op}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    with open(os.path.join(a.dir, "jobs.json")) as f:
        jobs = json.load(f)
    cache = {}
    for job in jobs:
        src = job["input"]
        if src not in cache:
            cache[src] = Image.open(os.path.join(a.dir, src)).convert("RGB")
        out = run(job, cache[src].copy())
        out.convert("RGB").save(os.path.join(a.dir, job["out"]))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How much a frozen backbone's patch features say about the item under each patch: a per-patch linear probe
(README, "Segmentation"). Features of every block of the ViT (plain_vit.py, the official names) for
Fashion-MNIST images or for prepare_fmnist_scenes.py scenes; each patch's label is the majority class of its
pixels, and only item patches count (background patches are left out); a linear classifier (Adam, 300 steps
of 4096 patches) is fitted on training patches and scored on validation patches. Prints the accuracy per
block for the pretrained backbone and for a random one (trunc-normal 0.02 init, as the ViT's own).

  ~/.cache/beitv2/ref-env/bin/python tests/reference/seg_patch_probe.py runs/fashion_mnist/pretrain/backbone.safetensors
  ~/.cache/beitv2/ref-env/bin/python tests/reference/seg_patch_probe.py BACKBONE --scenes data/fmnist_scenes_p32 --size 32
Measured 2026-11-29 (main job seed 0, block 3): Fashion-MNIST 53.8% (random 17.8%); 1-3-item 32x32 plain scenes
29.0% (14.2%); 2-4-item 64x64 plain scenes 23.7% (15.2%).
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
from plain_vit import VisionTransformer  # noqa: E402
import seg_ref  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
PATCH = 4


def fmnist(split, n):
    from prepare_fashion_mnist import read_split
    (count, h, w), pixels, labels = read_split("/usr/share/datasets/fashion-mnist", split)
    x = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(count, 1, h, w)[:n].float() / 255
    y = torch.frombuffer(bytearray(labels), dtype=torch.uint8)[:n].long()
    mask = (x[:, 0] > 0.08).long() * (y[:, None, None] + 1)  # 0 background, k + 1 item k
    return x.expand(-1, 3, -1, -1), mask


def scenes(root, split, n):
    from PIL import Image
    xs, ys = [], []
    for i in range(n):
        stem = f"fmnist_scene_{i:06d}.png"
        xs.append(np.array(Image.open(os.path.join(root, "images", split, stem)).convert("RGB")))
        ys.append(np.array(Image.open(os.path.join(root, "annotations", split, stem))))
    x = torch.tensor(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
    return x, (torch.tensor(np.stack(ys)).long() - 1).clamp(min=0)  # 0 background, k + 1 item k


def patch_labels(mask):
    share = F.avg_pool2d(F.one_hot(mask, 11).permute(0, 3, 1, 2).float(), PATCH).flatten(2)
    return share.argmax(1)  # (B, N)


def block_features(vit, x):
    out = []
    with torch.no_grad():
        t = vit.patch_embed.proj((x - MEAN) / STD).flatten(2).transpose(1, 2)
        t = torch.cat([vit.cls_token.expand(t.shape[0], -1, -1), t], 1)
        bias = vit.rel_pos_bias() if vit.rel_pos_bias is not None else None
        for blk in vit.blocks:
            t = blk(t, bias)
            out.append(t[:, 1:])
    return out


def probe(f_train, l_train, f_val, l_val):
    keep_t, keep_v = l_train > 0, l_val > 0
    xt, yt, xv, yv = f_train[keep_t], l_train[keep_t], f_val[keep_v], l_val[keep_v]
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    xt, xv = (xt - mu) / sd, (xv - mu) / sd
    lin = torch.nn.Linear(xt.shape[1], 11)
    opt = torch.optim.Adam(lin.parameters(), 1e-2)
    for _ in range(300):
        i = torch.randint(0, len(xt), (4096,))
        loss = F.cross_entropy(lin(xt[i]), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (lin(xv).argmax(1) == yv).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backbone")
    ap.add_argument("--scenes", help="a prepare_fmnist_scenes.py folder (default: Fashion-MNIST itself)")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--train", type=int, default=2000)
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.scenes:
        (xt, mt), (xv, mv) = scenes(a.scenes, "training", a.train), scenes(a.scenes, "validation", 500)
    else:
        (xt, mt), (xv, mv) = fmnist("train", 3 * a.train), fmnist("val", 2000)
    grid = a.size // PATCH
    cfg = dict(img_size=a.size, patch_size=PATCH, embed_dim=64, depth=4, num_heads=4, init_values=0.1,
               use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True, use_mean_pooling=False)
    pretrained = VisionTransformer(**cfg)
    sd = load_file(a.backbone)
    sd.pop("rel_pos_bias.relative_position_index", None)
    if grid != 7:
        key = "rel_pos_bias.relative_position_bias_table"
        sd[key] = seg_ref.resize_rel_pos_table(sd[key], grid).float()
    pretrained.load_state_dict(sd, strict=False)
    random = VisionTransformer(**cfg)
    for m in random.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    lt, lv = patch_labels(mt), patch_labels(mv)
    for name, vit in (("pretrained", pretrained), ("random", random)):
        ft, fv = block_features(vit, xt), block_features(vit, xv)
        print(name, " ".join(f"block {i}: {probe(ft[i], lt, fv[i], lv):.3f}" for i in range(len(ft))), flush=True)


if __name__ == "__main__":
    main()

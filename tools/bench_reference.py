#!/usr/bin/env python3
"""PyTorch side of scripts/bench.sh: the same benchmark as build/bin/beitv2-bench, one JSON line each.

vit-forward: timm's Beit built with the same config as beitv2's registry preset (eval, inference mode,
random input, same batch and thread count), median seconds per forward over --iters after --warmup.
Runs in the reference environment (timm needs torchvision): ~/.cache/beitv2/ref-env/bin/python.
"""
import argparse
import json
import time

import torch

PRESETS = {  # beitv2 registry name -> timm Beit kwargs (models/registry.cpp)
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12, use_abs_pos_emb=True),
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6, use_abs_pos_emb=True),
    "vit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3, use_abs_pos_emb=True),
    "beitv2_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12, use_abs_pos_emb=False,
                                    use_rel_pos_bias=True, init_values=0.1),
}


def vit_forward(args):
    from timm.models.beit import Beit
    import timm
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = Beit(img_size=224, patch_size=16, num_classes=0, global_pool="avg", qkv_bias=True,
                 **PRESETS[args.model]).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(x)
        for _ in range(args.iters):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({"bench": "vit-forward", "impl": f"timm {timm.__version__}", "model": args.model,
                      "batch": args.batch, "threads": args.threads, "iters": args.iters, "median_s": median,
                      "images_per_s": args.batch / median, "torch": torch.__version__}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="bench", required=True)
    vf = sub.add_parser("vit-forward")
    vf.add_argument("--model", default="vit_base_patch16_224", choices=sorted(PRESETS))
    vf.add_argument("--batch", type=int, default=8)
    vf.add_argument("--threads", type=int, default=2)
    vf.add_argument("--warmup", type=int, default=2)
    vf.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    {"vit-forward": vit_forward}[args.bench](args)


if __name__ == "__main__":
    main()

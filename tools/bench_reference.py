#!/usr/bin/env python3
"""PyTorch side of scripts/bench.sh: the same benchmark as build/bin/beitv2-bench, one JSON line each.

vit-forward: the same config as beitv2's registry preset (eval, inference mode, random input, same batch and
thread count), median seconds per forward over --iters after --warmup, built by
  --impl plain: tests/reference/plain_vit.py in plain torch, run by the build environment, i.e. the very torch
                build the C++ links (the like-for-like comparison);
  --impl timm:  timm's Beit, run by the reference environment (timm needs torchvision; a newer torch).

data-loader: the torchvision + PIL counterpart of `beitv2-bench data-loader` (reference environment): the same
files (same extension filter and order), PIL decoding (Image.open(f).convert("RGB")), RandomResizedCrop(size,
bicubic) -> RandomHorizontalFlip -> PILToTensor (uint8, like beitv2's batches), a DataLoader with the same
batch size and number of worker processes (persistent, shuffled), timed over the same number of images after
the same warm-up batches.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))

PRESETS = {  # beitv2 registry name -> timm Beit kwargs (models/registry.cpp)
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12, use_abs_pos_emb=True),
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6, use_abs_pos_emb=True),
    "vit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3, use_abs_pos_emb=True),
    "beitv2_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12, use_abs_pos_emb=False,
                                    use_rel_pos_bias=True, init_values=0.1),
}


def build(impl, preset):
    if impl == "plain":
        import plain_vit
        return plain_vit.VisionTransformer(**preset), f"plain torch (tests/reference/plain_vit.py)"
    import timm
    from timm.models.beit import Beit
    return Beit(img_size=224, patch_size=16, num_classes=0, global_pool="avg", qkv_bias=True, **preset), \
        f"timm {timm.__version__}"


def vit_forward(args):
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, impl = build(args.impl, PRESETS[args.model])
    model.eval()
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
    print(json.dumps({"bench": "vit-forward", "impl": impl, "model": args.model,
                      "batch": args.batch, "threads": args.threads, "iters": args.iters, "median_s": median,
                      "images_per_s": args.batch / median, "torch": torch.__version__}))


def vqkd_train_step(args):
    """One VQ-KD training step in PyTorch eager: teacher forward (no grad), tokenizer forward + backward, AdamW."""
    import plain_vit
    import vqkd_ref
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    base = args.size == "base"
    if base:  # vqkd_encoder_base_decoder_1x768x12_dino + a ViT-B/16 teacher
        model = vqkd_ref.VQKD(img=224, patch=16, dim=768, enc_depth=12, dec_depth=1, heads=12, n_code=8192,
                              code_dim=32, target_dim=768)
        teacher = plain_vit.VisionTransformer()
    else:  # vqkd_test_tiny + a vit_test_tiny teacher
        model = vqkd_ref.VQKD(target_dim=32)
        teacher = plain_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    with torch.no_grad():  # a random unit codebook, initialised
        q = model.quantize.embedding
        q.weight.copy_(vqkd_ref.l2norm(torch.randn_like(q.weight)))
        q.initted.fill_(1.0)
    model.train()
    teacher.eval()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.99),
                            weight_decay=1e-4)
    s = 224 if base else 32
    images = torch.randint(0, 256, (args.batch, 3, s, s), dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    params = [p for p in model.parameters() if p.requires_grad]

    def step():  # what beitv2's train_step does: forward, finite check, backward, grad norm, AdamW
        with torch.no_grad():
            targets = teacher.fc_norm(teacher.forward_features((images.float() / 255 - mean) / std)[:, 1:])
        loss = model(images, targets)[0]
        assert math.isfinite(loss.item())
        opt.zero_grad()
        loss.backward()
        assert math.isfinite(torch.nn.utils.clip_grad_norm_(params, float("inf")).item())
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    impl = "plain torch (vqkd_ref + plain_vit)" if vqkd_ref.Beit is None else "timm Beit (vqkd_ref)"
    print(json.dumps({"bench": "vqkd-train-step", "impl": impl, "model": args.size, "batch": args.batch,
                      "threads": args.threads, "iters": args.iters, "median_s": median,
                      "images_per_s": args.batch / median, "torch": torch.__version__}))


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def list_images(root, kind):
    """The files beitv2's ImageDataset::folder / image_folder picks up, in its order."""
    def scan(d):
        out = []
        for dirpath, _, files in os.walk(d, followlinks=True):
            out += [os.path.join(dirpath, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        return sorted(out)
    if kind == "folder":
        return [(f, -1) for f in scan(root)]
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    return [(f, k) for k, c in enumerate(classes) for f in scan(os.path.join(root, c))]


def data_loader(args):
    from PIL import Image
    import torchvision
    import torchvision.transforms as T

    torch.set_num_threads(1)
    files = list_images(args.images, args.kind)
    tf = T.Compose([T.RandomResizedCrop(args.size, interpolation=T.InterpolationMode.BICUBIC),
                    T.RandomHorizontalFlip(), T.PILToTensor()])

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            path, label = files[i]
            with open(path, "rb") as f:
                img = Image.open(f).convert("RGB")
            return tf(img), label

    loader = torch.utils.data.DataLoader(Files(), batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                         drop_last=False, persistent_workers=args.workers > 0,
                                         generator=torch.Generator().manual_seed(args.seed))
    batches = timed = 0
    checksum = 0
    t0 = None
    while timed < args.measure:
        for x, _ in loader:
            checksum += int(x[0, 0, 0, 0])
            batches += 1
            if batches == args.warmup:
                t0 = time.perf_counter()
            if batches > args.warmup:
                timed += x.shape[0]
            if timed >= args.measure:
                break
    seconds = time.perf_counter() - t0
    print(json.dumps({"bench": "data-loader", "impl": f"torchvision {torchvision.__version__} + PIL "
                      f"{Image.__version__} DataLoader", "images": args.images, "dataset_size": len(files),
                      "workers": args.workers, "batch": args.batch, "size": args.size, "timed_images": timed,
                      "seconds": seconds, "images_per_s": timed / seconds, "torch": torch.__version__}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="bench", required=True)
    vf = sub.add_parser("vit-forward")
    vf.add_argument("--impl", choices=["plain", "timm"], default="plain")
    vf.add_argument("--model", default="vit_base_patch16_224", choices=sorted(PRESETS))
    vf.add_argument("--batch", type=int, default=8)
    vf.add_argument("--threads", type=int, default=2)
    vf.add_argument("--warmup", type=int, default=2)
    vf.add_argument("--iters", type=int, default=10)
    vq = sub.add_parser("vqkd-train-step")
    vq.add_argument("--size", choices=["tiny", "base"], default="tiny")
    vq.add_argument("--batch", type=int, default=8)
    vq.add_argument("--threads", type=int, default=2)
    vq.add_argument("--warmup", type=int, default=2)
    vq.add_argument("--iters", type=int, default=10)
    dl = sub.add_parser("data-loader")
    dl.add_argument("--images", default="/usr/share/doc/opencv-doc/examples/data")
    dl.add_argument("--kind", choices=["folder", "image_folder"], default="folder")
    dl.add_argument("--workers", type=int, default=2)
    dl.add_argument("--batch", type=int, default=32)
    dl.add_argument("--size", type=int, default=224)
    dl.add_argument("--warmup", type=int, default=2)
    dl.add_argument("--measure", type=int, default=1000)
    dl.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    {"vit-forward": vit_forward, "vqkd-train-step": vqkd_train_step, "data-loader": data_loader}[args.bench](args)


if __name__ == "__main__":
    main()

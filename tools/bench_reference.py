#!/usr/bin/env python3
"""PyTorch side of scripts/bench.sh: the same benchmark as build/bin/beitv2-bench, one JSON line each.

vit-forward: the same config as beitv2's registry preset (eval, inference mode, random input, same batch and
thread count), median seconds per forward over --iters after --warmup, built by
  --impl plain: tests/reference/plain_vit.py in plain torch, run by the build environment, i.e. the very torch
                build the C++ links (the like-for-like comparison);
  --impl timm:  timm's Beit, run by the reference environment (timm needs torchvision; a newer torch).

vqkd-train-step, mim-train-step: the training steps of train-vqkd and pretrain-beitv2 in PyTorch eager (see the
functions), with this machine's fp32 GEMM rate measured in the same process and the peak RSS.

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


def gemm_rate(args):
    """The GEMM rate (FLOP/s) measured here: CPU a 2048^3 fp32 torch.mm at the current thread count; CUDA an
    8192^3 mm in the step's dtype (fp16/bf16 under amp, else fp32). Median of 5."""
    cuda = args.device == "cuda"
    n = 8192 if cuda else 2048
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.amp, torch.float32) if cuda else torch.float32
    a, b = torch.randn(n, n, device=args.device, dtype=dtype), torch.randn(n, n, device=args.device, dtype=dtype)
    c = torch.empty(n, n, device=args.device, dtype=dtype)
    return 2 * n ** 3 / median_seconds(lambda: torch.mm(a, b, out=c), 2, 5, cuda)


class Amp:
    """The official mixed precision: autocast on CUDA (fp16 with a GradScaler, as the official NativeScaler, or
    bf16 without), nothing on the CPU or with --amp none."""

    def __init__(self, args):
        self.on = args.device == "cuda" and args.amp != "none"
        self.dtype = torch.float16 if args.amp == "fp16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if self.on and args.amp == "fp16" else None

    def autocast(self):
        return torch.autocast("cuda", dtype=self.dtype, enabled=self.on)

    def step(self, loss, opt, params, clip):
        if self.scaler is None:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            return norm
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(opt)
        self.scaler.update()
        return norm


def median_seconds(f, warmup, iters, cuda=False):
    def call():
        f()
        if cuda:
            torch.cuda.synchronize()
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def profile(step, args):
    """--profile: one step under torch.profiler, the ops by self CPU time on stderr (where the non-GEMM time goes)."""
    from torch.profiler import profile as run_profile, ProfilerActivity
    with run_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile), file=sys.stderr)


def step_record(bench, impl, args, median, gemm):
    """The JSON line of a train-step benchmark (scripts/bench.sh adds the FLOP share from beitv2's count)."""
    import resource
    r = {"bench": bench, "impl": impl, "model": args.size, "device": args.device, "amp": args.amp,
         "batch": args.batch, "threads": args.threads, "iters": args.iters, "median_s": median,
         "images_per_s": args.batch / median, "gemm_gflops": gemm / 1e9,
         "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "torch": torch.__version__}
    if args.device == "cuda":
        r["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return r


def vqkd_train_step(args):
    """One VQ-KD training step in PyTorch eager: teacher forward (no grad), tokenizer forward + backward, AdamW."""
    import plain_vit
    import vqkd_ref
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    gemm = gemm_rate(args)
    amp = Amp(args)
    base = args.size == "base"
    if base:  # vqkd_encoder_base_decoder_3x768x12_clip (3-block decoder) + a ViT-B/16 teacher
        model = vqkd_ref.VQKD(img=224, patch=16, dim=768, enc_depth=12, dec_depth=3, heads=12, n_code=8192,
                              code_dim=32, target_dim=768)
        teacher = plain_vit.VisionTransformer()
    else:  # vqkd_test_tiny + a vit_test_tiny teacher
        model = vqkd_ref.VQKD(target_dim=32)
        teacher = plain_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    with torch.no_grad():  # a random unit codebook, initialised
        q = model.quantize.embedding
        q.weight.copy_(vqkd_ref.l2norm(torch.randn_like(q.weight)))
        q.initted.fill_(1.0)
    model.train().to(args.device)
    teacher.eval().to(args.device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.99),
                            weight_decay=1e-4)
    s = 224 if base else 32
    images = torch.randint(0, 256, (args.batch, 3, s, s), dtype=torch.uint8).to(args.device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=args.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=args.device).view(1, 3, 1, 1)

    params = [p for p in model.parameters() if p.requires_grad]

    def step():  # what beitv2's train_step does: forward, finite check, backward, grad norm, AdamW
        with torch.no_grad(), amp.autocast():
            targets = teacher.fc_norm(teacher.forward_features((images.float() / 255 - mean) / std)[:, 1:])
        with amp.autocast():
            loss = model(images, targets)[0]
        assert math.isfinite(loss.item())
        opt.zero_grad()
        assert math.isfinite(amp.step(loss, opt, params, float("inf")).item())

    median = median_seconds(step, args.warmup, args.iters, args.device == "cuda")
    if args.profile:
        profile(step, args)
    impl = "plain torch (vqkd_ref + plain_vit)" if vqkd_ref.Beit is None else "timm Beit (vqkd_ref)"
    print(json.dumps(step_record("vqkd-train-step", impl, args, median, gemm)))


def mim_train_step(args):
    """One BEiT v2 pretraining step in PyTorch eager: the frozen tokenizer's ids (no grad), the MIM model with the
    CLS head (shared relative position bias, layer scale; plain_vit blocks), both cross-entropies on the masked
    patches, backward, grad-norm clip 3, AdamW: what pretrain-beitv2's train_step does."""
    import torch.nn as nn
    import torch.nn.functional as F
    import plain_vit
    import vqkd_ref
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    gemm = gemm_rate(args)
    amp = Amp(args)
    base = args.size == "base"
    img, patch, dim, depth, heads, vocab, early, masked = \
        (224, 16, 768, 12, 12, 8192, 9, 75) if base else (32, 8, 32, 2, 2, 64, 1, 6)

    class Mim(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = plain_vit.VisionTransformer(img_size=img, patch_size=patch, embed_dim=dim, depth=depth,
                                                   num_heads=heads, init_values=0.1, use_abs_pos_emb=False,
                                                   use_shared_rel_pos_bias=True, use_mean_pooling=False)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.cls_pt_layers = nn.ModuleList(plain_vit.Block(dim, heads, 4.0, 0.1, None) for _ in range(2))
            self.lm_head = nn.Linear(dim, vocab)

        def forward(self, x, mask):
            v = self.vit
            t = v.patch_embed.proj(x).flatten(2).transpose(1, 2)
            w = mask.unsqueeze(-1).to(t.dtype)
            t = torch.cat([v.cls_token.expand(t.shape[0], -1, -1), t * (1 - w) + self.mask_token * w], 1)
            bias = v.rel_pos_bias()
            hidden = []
            for blk in v.blocks:
                t = blk(t, bias)
                hidden.append(t)
            h = torch.cat([t[:, :1], hidden[early - 1][:, 1:]], 1)
            for blk in self.cls_pt_layers:
                h = blk(h, bias)
            return self.lm_head(v.norm(t)[:, 1:][mask]), self.lm_head(v.norm(h)[:, 1:][mask])

    if base:  # a ViT-B/16 VQ-KD tokenizer
        tokenizer = vqkd_ref.VQKD(img=224, patch=16, dim=768, enc_depth=12, dec_depth=1, heads=12, n_code=8192,
                                  code_dim=32, target_dim=768)
    else:
        tokenizer = vqkd_ref.VQKD(target_dim=32)
    with torch.no_grad():  # a random unit codebook, initialised
        q = tokenizer.quantize.embedding
        q.weight.copy_(vqkd_ref.l2norm(torch.randn_like(q.weight)))
        q.initted.fill_(1.0)
    tokenizer.eval().to(args.device)
    model = Mim().train().to(args.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1.5e-3, betas=(0.9, 0.999), weight_decay=0.05)
    images = torch.randint(0, 256, (args.batch, 3, img, img), dtype=torch.uint8)
    mask = torch.zeros(args.batch, (img // patch) ** 2, dtype=torch.bool)
    for i in range(args.batch):
        mask[i, torch.randperm(mask.shape[1])[:masked]] = True
    images, mask = images.to(args.device), mask.to(args.device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=args.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=args.device).view(1, 3, 1, 1)

    def step():
        with torch.no_grad():  # the tokenizer in fp32, as the official (and beitv2)
            labels = tokenizer.get_tokens(images)[mask]
        with amp.autocast():
            logits, cls_logits = model((images.float() / 255 - mean) / std, mask)
        loss = F.cross_entropy(logits.float(), labels) + F.cross_entropy(cls_logits.float(), labels)
        assert math.isfinite(loss.item())
        opt.zero_grad()
        assert math.isfinite(amp.step(loss, opt, params, 3.0).item())

    median = median_seconds(step, args.warmup, args.iters, args.device == "cuda")
    if args.profile:
        profile(step, args)
    print(json.dumps(step_record("mim-train-step", "plain torch (plain_vit + vqkd_ref)", args, median, gemm)))


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
    vq.add_argument("--profile", type=int, default=0, help="print the top N ops of one profiled step (stderr)")
    vq.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    vq.add_argument("--amp", choices=["none", "fp16", "bf16"], default="none", help="CUDA autocast dtype")
    mi = sub.add_parser("mim-train-step")
    mi.add_argument("--size", choices=["tiny", "base"], default="tiny")
    mi.add_argument("--batch", type=int, default=8)
    mi.add_argument("--threads", type=int, default=2)
    mi.add_argument("--warmup", type=int, default=2)
    mi.add_argument("--iters", type=int, default=10)
    mi.add_argument("--profile", type=int, default=0, help="print the top N ops of one profiled step (stderr)")
    mi.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    mi.add_argument("--amp", choices=["none", "fp16", "bf16"], default="none", help="CUDA autocast dtype")
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
    {"vit-forward": vit_forward, "vqkd-train-step": vqkd_train_step, "mim-train-step": mim_train_step,
     "data-loader": data_loader}[args.bench](args)


if __name__ == "__main__":
    main()

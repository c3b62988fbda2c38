#!/usr/bin/env python3
"""Golden fixtures for beitv2's VQ-KD tokenizer, from tests/reference/vqkd_ref.py (reference env).

Writes into --out-dir:
  vqkd_tiny.safetensors
    kmeans.input / kmeans.samples / kmeans.init_indices / kmeans.means / kmeans.counts
        cosine k-means (10 iterations) from given initial picks, on a batch's normalised features
    param.<name>           the model state (official names) with the codebook set to those k-means means
    input / targets        a [0,1] image batch (B, 3, 32, 32) and teacher targets (B, 16, 16)
    out.features           encode_task_layer output (B, 16, 8)
    out.ids / out.quant_loss / out.rec_loss / out.rec     the training-mode forward
    out.codebook_after / out.usage_after                   quantize.embedding.weight / quantize.cluster_size
                                                           after that forward's EMA update
    grad.param.<name>      gradients of the total loss
    photos.pixels / photos.ids   centre 32x32 crops (no resize) of PNG photos from opencv-doc and their
                                 eval-mode token ids under the converted weights below
  vqkd_tiny_converted.safetensors
    the same initial weights saved as an official-style .pth ({'model': ..., 'optimizer', 'epoch', plus
    teacher_model.* and scaling_layer.* entries}) and converted by tools/convert_checkpoint.py

  ~/.cache/beitv2/ref-env/bin/python tests/reference/gen_vqkd_golden.py --out-dir tests/data/golden
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import timm
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vqkd_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PHOTO_DIR = "/usr/share/doc/opencv-doc/examples/data"
PHOTOS = ["basketball1.png", "box_in_scene.png", "chicky_512.png", "graf1.png", "pic1.png", "pic3.png",
          "smarties.png", "rubberwhale1.png"]  # 8-bit grey, RGBA and RGB PNGs (lossless: same pixels everywhere)


def centre_crop(path, size):
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = vqkd_ref.VQKD()
    with torch.no_grad():  # perturb everything so that zero-initialised parts are exercised too
        for name, p in model.named_parameters():
            if not name.startswith("quantize."):
                p.add_(torch.randn_like(p) * 0.05)
    x = torch.rand(4, 3, 32, 32)
    targets = torch.randn(4, 16, 16)
    out = {"input": x, "targets": targets}

    # k-means on another batch's normalised features (128 vectors for 64 codes), from fixed initial picks
    x_km = torch.rand(8, 3, 32, 32)
    out["kmeans.input"] = x_km
    with torch.no_grad():
        samples = vqkd_ref.l2norm(model.encode_features(model.pre_process(x_km))).reshape(-1, 8)
    init = torch.randperm(samples.shape[0])[:64] if samples.shape[0] >= 64 else torch.randint(0, samples.shape[0], (64,))
    means, counts = vqkd_ref.kmeans_cosine(samples, 64, 10, init)
    out.update({"kmeans.samples": samples, "kmeans.init_indices": init, "kmeans.means": means,
                "kmeans.counts": counts})
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(means)
        model.quantize.embedding.cluster_size.copy_(counts)
        model.quantize.embedding.initted.fill_(1.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in state.items():
        out[f"param.{k}"] = v

    # one training-mode forward + backward
    model.train()
    with torch.no_grad():
        out["out.features"] = model.encode_features(model.pre_process(x))
    loss, quant_loss, rec_loss, ids, rec = model(x, targets)
    loss.backward()
    out.update({"out.ids": ids, "out.quant_loss": quant_loss.detach(), "out.rec_loss": rec_loss.detach(),
                "out.rec": rec.detach(), "out.codebook_after": model.quantize.embedding.weight.detach().clone(),
                "out.usage_after": model.quantize.cluster_size.clone()})
    for n, p in model.named_parameters():
        if p.grad is not None:
            out[f"grad.param.{n}"] = p.grad

    # official-style checkpoint -> converter -> the committed safetensors; photos tokenised in eval mode
    os.makedirs(args.out_dir, exist_ok=True)
    converted = os.path.join(args.out_dir, "vqkd_tiny_converted.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, "vqkd_tiny_official.pth")
        ckpt = dict(state)
        ckpt["teacher_model.visual.proj"] = torch.randn(4, 4)
        ckpt["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
        torch.save({"model": ckpt, "optimizer": {"state": {}}, "epoch": 3}, pth)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_checkpoint.py"), pth, converted],
                       check=True)
    fresh = vqkd_ref.VQKD()
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    pixels = torch.from_numpy(np.stack([centre_crop(os.path.join(PHOTO_DIR, p), 32) for p in PHOTOS]))
    pixels = pixels.permute(0, 3, 1, 2).contiguous()  # B, 3, 32, 32 uint8
    with torch.no_grad():
        out["photos.ids"] = fresh.get_tokens(pixels)
    out["photos.pixels"] = pixels

    meta = {"generator": "tests/reference/gen_vqkd_golden.py", "timm": timm.__version__, "torch": torch.__version__,
            "photos": ",".join(PHOTOS), "preset": "vqkd_test_tiny"}
    path = os.path.join(args.out_dir, "vqkd_tiny.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

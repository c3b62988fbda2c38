#!/usr/bin/env python3
"""Export a VQ-KD teacher (docs/reference.md §1.2) to TorchScript for beitv2 (run in the reference env).

  clip_vit_b16: OpenAI CLIP ViT-B/16 (open_clip, QuickGELU); target = ln_post(all tokens)[:, 1:] @ visual.proj
                -> (B, 196, 512)
  dino_vit_b16: DINO ViT-B/16 (timm); target = final norm(tokens)[:, 1:] -> (B, 196, 768)

The exported module maps images in [0, 1], (B, 3, H, W), to targets (B, N, D). It carries its own
normalisation, including the official round trip: x*255/127.5-1 (the tokenizer's pre_process) ->
clamp((x+1)*127.5, 0, 255)/255 -> (x - mean)/std with CLIP or ImageNet constants. Metadata (name, input size,
patch grid, target dim, weights source and hash) goes into the extra file `beitv2_teacher.json`. Before saving,
the traced module is checked against the eager one; a mismatch refuses to save.

  # real weights (one command each; files from the official sources, offline):
  export_teacher.py --model clip_vit_b16 --weights ViT-B-16.pt --out clip_vit_b16.pt
  export_teacher.py --model dino_vit_b16 --weights dino_vitbase16_pretrain.pth --out dino_vit_b16.pt
  # random weights, same architecture (tests; loudly marked in the metadata):
  export_teacher.py --model clip_vit_b16 --random-init --out /tmp/clip_random.pt
  # tiny random architecture (fast tests): 32x32 input, patch 8, width 32, 2 layers
  export_teacher.py --model clip_vit_b16 --random-init --tiny --out /tmp/tiny.pt --golden /tmp/tiny_golden.safetensors
"""
import argparse
import hashlib
import json
import os
import sys

import warnings

import numpy as np
import torch
import torch.nn as nn

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PHOTO_DIR = "/usr/share/doc/opencv-doc/examples/data"
PHOTOS = ["graf1.png", "pic1.png", "smarties.png", "basketball1.png"]


class Scaling(nn.Module):
    """[0,1] -> the official [-1,1] pre_process -> ScalingLayerFor{Clip,IM}."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("shift", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        x = x * 255.0 / 127.5 - 1.0
        x = ((x + 1.0) * 127.5).clamp(0, 255.0) / 255.0
        return (x - self.shift) / self.scale


class ClipTeacher(nn.Module):
    def __init__(self, visual):
        super().__init__()
        self.scaling = Scaling(CLIP_MEAN, CLIP_STD)
        self.visual = visual

    def forward(self, x):
        v = self.visual
        tokens = v.transformer(v._embeds(self.scaling(x)))
        return v.ln_post(tokens)[:, 1:] @ v.proj


class DinoTeacher(nn.Module):
    def __init__(self, vit):
        super().__init__()
        self.scaling = Scaling(IMAGENET_MEAN, IMAGENET_STD)
        self.vit = vit

    def forward(self, x):
        return self.vit.forward_features(self.scaling(x))[:, 1:]


def is_torchscript_archive(path):
    try:
        torch.jit.load(path, map_location="cpu")
        return True
    except Exception:  # noqa: BLE001 - not a TorchScript archive: a state dict then
        return False


def build_clip(weights, tiny):
    import open_clip
    from open_clip.transformer import QuickGELU, VisionTransformer
    if tiny:
        return VisionTransformer(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=4.0,
                                 output_dim=16, act_layer=QuickGELU), 32, 8, 16
    if weights is None:
        model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    elif is_torchscript_archive(weights):  # the OpenAI release file
        model = open_clip.load_openai_model(weights, device="cpu")
    else:
        model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=weights)
    return model.visual, 224, 16, 512


def build_dino(weights, tiny):
    from timm.models.vision_transformer import VisionTransformer
    if tiny:
        return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0), 32, 8, 32
    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, num_classes=0)
    if weights is not None:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
        sd = sd.get("teacher", sd.get("model", sd)) if isinstance(sd, dict) else sd
        sd = {k.replace("module.", "").replace("backbone.", ""): v for k, v in sd.items() if not k.startswith("head")}
        missing, unexpected = vit.load_state_dict(sd, strict=False)
        if missing or unexpected:
            sys.exit(f"export_teacher: {weights}: missing {missing}, unexpected {unexpected}")
    return vit, 224, 16, 768


def photos(size):
    from PIL import Image
    crops = []
    for name in PHOTOS:
        img = np.asarray(Image.open(os.path.join(PHOTO_DIR, name)).convert("RGB"))
        h, w = img.shape[:2]
        crops.append(img[(h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0


def main():
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation notices
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # timm asserts the (fixed) input size
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=["clip_vit_b16", "dino_vit_b16"])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="local weights file")
    src.add_argument("--random-init", action="store_true", help="random weights (tests only)")
    ap.add_argument("--tiny", action="store_true", help="tiny architecture for fast tests (requires --random-init)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--golden", help="also write photos and eager targets here (safetensors)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.tiny and not a.random_init:
        sys.exit("export_teacher: --tiny builds a random architecture; pass --random-init")
    torch.manual_seed(a.seed)
    build = build_clip if a.model == "clip_vit_b16" else build_dino
    body, size, patch, dim = build(a.weights, a.tiny)
    teacher = (ClipTeacher if a.model == "clip_vit_b16" else DinoTeacher)(body).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    example = torch.rand(2, 3, size, size)
    with torch.no_grad():
        traced = torch.jit.trace(teacher, example)
        check = torch.cat([torch.rand(3, 3, size, size), photos(size)])
        eager_out, traced_out = teacher(check), traced(check)
    err = (eager_out - traced_out).abs().max().item()
    grid = size // patch
    if eager_out.shape != (check.shape[0], grid * grid, dim) or not err <= 1e-5:
        sys.exit(f"export_teacher: traced module disagrees with eager (shape {tuple(traced_out.shape)}, "
                 f"max |diff| {err}); not saving")
    digest = "none"
    if a.weights:
        with open(a.weights, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    meta = {"format": "beitv2-teacher", "version": 1, "name": a.model + ("_tiny" if a.tiny else ""),
            "input_size": size, "patch_size": patch, "grid": grid, "target_dim": dim,
            "normalisation": "clip" if a.model == "clip_vit_b16" else "imagenet",
            "weights": a.weights or "RANDOM", "weights_sha256": digest, "random_init": bool(a.random_init),
            "torch": torch.__version__}
    if a.random_init:
        meta["warning"] = "RANDOM WEIGHTS: this teacher is for tests only; its targets carry no knowledge"
    torch.jit.save(traced, a.out, _extra_files={"beitv2_teacher.json": json.dumps(meta)})
    print(f"wrote {a.out}: {meta['name']} {size}x{size} -> ({grid * grid}, {dim}), traced vs eager max |diff| {err:.2e}"
          + ("  [RANDOM WEIGHTS]" if a.random_init else ""))
    if a.golden:
        from safetensors.torch import save_file
        with torch.no_grad():
            save_file({"images": check.contiguous(), "targets": eager_out.contiguous()}, a.golden,
                      metadata={"teacher": meta["name"]})


if __name__ == "__main__":
    main()

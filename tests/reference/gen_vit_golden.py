#!/usr/bin/env python3
"""Golden fixtures for beitv2's VisionTransformer, from timm's `Beit` (the reference rendering of BEiT).

Builds timm 1.0.29's Beit with a config, perturbs every parameter (so zero-initialised tables, biases and
layer-scale gammas are exercised), runs a forward and a backward pass on a seeded input and saves, in one
safetensors file:
  param.<name>      every state-dict tensor, by official name (what the C++ model loads), plus the
                    relative_position_index buffers that official checkpoints carry
  input             the (B, 3, H, W) input
  out.block.<i>     each block's output (B, 1+N, D)
  out.features      forward_features (all tokens after the final norm)
  out.patch_tokens  fc_norm applied to every patch token (mean-pooling configs only)
  out.pooled        forward_head(pre_logits=True)
  out.logits        forward_head (configs with a head)
  loss.weight       fixed weights w of the scalar loss  sum(w * final_output)
  grad.input, grad.param.<name>   gradients of that loss (tiny cases)
and, as metadata, the config in beitv2's field names, the generator and the library versions.

Run in the reference environment (scripts/setup.sh makes it):
  ~/.cache/beitv2/ref-env/bin/python tests/reference/gen_vit_golden.py --out-dir tests/data/golden
  ~/.cache/beitv2/ref-env/bin/python tests/reference/gen_vit_golden.py --case beitv2_base_224 --out-dir /tmp/x
"""
import argparse
import json
import os

import torch
import timm
from timm.models.beit import Beit
from safetensors.torch import save_file

# Tiny CPU cases (the registry's vit_test_tiny geometry: 32x32 images, 8x8 patches, width 32, 2 blocks, 2 heads)
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0)
CASES = {
    # VQ-KD encoder style: absolute positions, mean pooling with fc_norm, no head, no layer scale.
    "vit_tiny_abs": dict(TINY, use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=False,
                         init_values=0.0, use_mean_pooling=True, num_classes=0),
    # Fine-tuning style: per-block relative position bias, layer scale, mean pooling, a head.
    "vit_tiny_relpos": dict(TINY, use_abs_pos_emb=False, use_rel_pos_bias=True, use_shared_rel_pos_bias=False,
                            init_values=0.1, use_mean_pooling=True, num_classes=5),
    # Pretraining style: one shared relative position bias, layer scale, final norm + cls token, a head.
    "vit_tiny_shared": dict(TINY, use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True,
                            init_values=0.1, use_mean_pooling=False, num_classes=5),
    # Full size (slow test, generated at test time): BEiT v2 base as fine-tuned, 224x224.
    "beitv2_base_224": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                            use_abs_pos_emb=False, use_rel_pos_bias=True, use_shared_rel_pos_bias=False,
                            init_values=0.1, use_mean_pooling=True, num_classes=1000),
}
TINY_CASES = [k for k in CASES if k.startswith("vit_tiny")]


def build(cfg):
    return Beit(img_size=cfg["img_size"], patch_size=cfg["patch_size"], in_chans=3, num_classes=cfg["num_classes"],
                global_pool="avg" if cfg["use_mean_pooling"] else "token", embed_dim=cfg["embed_dim"],
                depth=cfg["depth"], num_heads=cfg["num_heads"], qkv_bias=True, mlp_ratio=cfg["mlp_ratio"],
                init_values=cfg["init_values"] or None, use_abs_pos_emb=cfg["use_abs_pos_emb"],
                use_rel_pos_bias=cfg["use_rel_pos_bias"], use_shared_rel_pos_bias=cfg["use_shared_rel_pos_bias"])


def generate(name, batch, with_grads):
    cfg = CASES[name]
    torch.manual_seed(0)
    model = build(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(batch, 3, cfg["img_size"], cfg["img_size"], requires_grad=with_grads)

    blocks = {}
    for i, blk in enumerate(model.blocks):
        blk.register_forward_hook(lambda m, inp, out, i=i: blocks.__setitem__(i, out.detach().clone()))
    with torch.set_grad_enabled(with_grads):
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        final = model.forward_head(feats)
    out = {"input": x.detach().clone(), "out.features": feats.detach(), "out.pooled": pooled.detach()}
    for i, b in blocks.items():
        out[f"out.block.{i}"] = b
    if cfg["num_classes"] > 0:
        out["out.logits"] = final.detach()
    if cfg["use_mean_pooling"]:
        with torch.no_grad():
            out["out.patch_tokens"] = model.fc_norm(feats[:, 1:])
    if with_grads:
        w = torch.randn_like(final)
        (w * final).sum().backward()
        out["loss.weight"] = w
        out["grad.input"] = x.grad.detach()
        for n, p in model.named_parameters():
            out[f"grad.param.{n}"] = p.grad.detach()
    for n, t in model.state_dict().items():
        out[f"param.{n}"] = t
    # Official checkpoints carry the relative_position_index buffers, which timm 1.0.29 keeps non-persistent;
    # add them (timm's own k_bias buffer has no official counterpart).
    for n, b in model.named_buffers():
        if n.endswith("relative_position_index"):
            out[f"param.{n}"] = b
    meta = {
        "config": json.dumps(cfg),
        "generator": "tests/reference/gen_vit_golden.py",
        "case": name,
        "timm": timm.__version__,
        "torch": torch.__version__,
    }
    return {k: v.contiguous() for k, v in out.items()}, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="default: every tiny case")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    for name in args.case or TINY_CASES:
        tiny = name in TINY_CASES
        tensors, meta = generate(name, batch=2, with_grads=tiny)
        path = os.path.join(args.out_dir, f"{name}.safetensors")
        save_file(tensors, path, metadata=meta)
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

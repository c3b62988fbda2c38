#!/usr/bin/env python3
"""Golden fixtures for beitv2's BeitV2ForMIM, from tests/reference/beitv2_ref.py (timm Beit blocks + the MIM
and CLS heads written from docs/reference.md §3).

Builds the reference model for a case, perturbs every parameter (so zero-initialised tables, biases, tokens and
layer-scale gammas are exercised), runs forward and backward on a seeded input and mask and saves, in one
safetensors file:
  param.<name>        every state-dict tensor by official name (what the C++ model loads strictly), plus the
                      relative_position_index buffers that official checkpoints carry
  input, mask         the (B, 3, H, W) input and the (B, N) bool mask (images mask different counts, so the
                      batch-major order of the masked rows is exercised)
  labels              (M) int64 target ids at the masked positions
  out.block.<i>       each backbone block's output (B, 1+N, D)
  out.tokens          final-normed backbone tokens (B, 1+N, D)
  out.cls_tokens      normed CLS-head tokens (B, 1+N, D)
  out.logits, out.cls_logits     (M, vocab)
  out.loss_1, out.loss_2         mean cross entropy of each head against `labels`
  grad.param.<name>   gradients of loss_1 + loss_2 (tiny cases only)
and, as metadata, the config in beitv2's field names, the generator and the library versions.
With the default cases it also writes
  beitv2_tiny_converted.safetensors
    the beitv2_tiny_shared_bias_shared_head weights saved as an official pretraining checkpoint ({'model',
    'optimizer', 'epoch', 'args' (an argparse.Namespace), 'scaler'}) and converted by tools/convert_checkpoint.py

Run in the reference environment (scripts/setup.sh makes it):
  ~/.cache/beitv2/ref-env/bin/python tests/reference/gen_beitv2_golden.py --out-dir tests/data/golden
  ~/.cache/beitv2/ref-env/bin/python tests/reference/gen_beitv2_golden.py --case beitv2_base_224 --out-dir /tmp/x
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import timm
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import beitv2_ref  # noqa: E402

# Tiny CPU cases, sized to keep each file under 200 kB: 16x16 images, 4x4 patches (4x4 grid as beitv2_test_tiny),
# width 16, 2 blocks + a 2-block CLS head reading the patch tokens after block 1, 64 codes.
TINY = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, mlp_ratio=4.0, vocab_size=64,
            early_layers=1, head_layers=2, init_values=0.1)
SHARED_BIAS = dict(use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True)
# per-block tables (the CLS head blocks get their own too); absolute positions on to cover pos_embed
BLOCK_BIAS = dict(use_abs_pos_emb=True, use_rel_pos_bias=True, use_shared_rel_pos_bias=False)
CASES = {
    "beitv2_tiny_shared_bias_shared_head": dict(TINY, **SHARED_BIAS, shared_lm_head=True),
    "beitv2_tiny_shared_bias_sep_head": dict(TINY, **SHARED_BIAS, shared_lm_head=False),
    "beitv2_tiny_block_bias_shared_head": dict(TINY, **BLOCK_BIAS, shared_lm_head=True),
    "beitv2_tiny_block_bias_sep_head": dict(TINY, **BLOCK_BIAS, shared_lm_head=False),
    # Full size (slow test, generated at test time, forward only): the official pretraining base model.
    "beitv2_base_224": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                            vocab_size=8192, early_layers=9, head_layers=2, init_values=0.1, **SHARED_BIAS,
                            shared_lm_head=True),
}
TINY_CASES = [k for k in CASES if k.startswith("beitv2_tiny")]
CONVERTED_CASE = "beitv2_tiny_shared_bias_shared_head"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def make_mask(batch, n, first_count):
    """Image b masks first_count - b positions, chosen at random."""
    mask = torch.zeros(batch, n, dtype=torch.bool)
    for b in range(batch):
        mask[b, torch.randperm(n)[:first_count - b]] = True
    return mask


def generate(name, batch, with_grads):
    cfg = CASES[name]
    torch.manual_seed(0)
    model = beitv2_ref.BeitV2ForMIM(**cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    n = (cfg["img_size"] // cfg["patch_size"]) ** 2
    x = torch.randn(batch, 3, cfg["img_size"], cfg["img_size"])
    mask = make_mask(batch, n, 6 if n == 16 else 75)
    labels = torch.randint(0, cfg["vocab_size"], (int(mask.sum()),))

    with torch.set_grad_enabled(with_grads):
        tokens, head_tokens, hidden = model.forward_tokens(x, mask)
        logits, cls_logits = model(x, mask)
        loss_1, loss_2 = model.losses(logits, cls_logits, labels)
    out = {"input": x, "mask": mask, "labels": labels, "out.tokens": tokens.detach(),
           "out.cls_tokens": head_tokens.detach(), "out.logits": logits.detach(), "out.cls_logits": cls_logits.detach(),
           "out.loss_1": loss_1.detach(), "out.loss_2": loss_2.detach()}
    for i, h in enumerate(hidden):
        out[f"out.block.{i}"] = h.detach()
    if with_grads:
        (loss_1 + loss_2).backward()
        for k, p in model.named_parameters():
            out[f"grad.param.{k}"] = p.grad.detach()
    for k, t in beitv2_ref.official_state_dict(model).items():
        out[f"param.{k}"] = t
    meta = {
        "config": json.dumps(cfg),
        "generator": "tests/reference/gen_beitv2_golden.py",
        "case": name,
        "timm": timm.__version__,
        "torch": torch.__version__,
    }
    return {k: v.contiguous() for k, v in out.items()}, meta


def write_converted(tensors, out_dir):
    """An official-style training checkpoint of these weights, converted by tools/convert_checkpoint.py."""
    cfg = json.loads(tensors[1]["config"])
    state = {k[len("param."):]: v for k, v in tensors[0].items() if k.startswith("param.")}
    # the converted weights load strictly into the reference too (index buffers included)
    beitv2_ref.load_official(beitv2_ref.BeitV2ForMIM(**cfg), state)
    args = argparse.Namespace(model="beit_base_patch16_224_8k_vocab_cls_pt", early_layers=cfg["early_layers"],
                              head_layers=cfg["head_layers"], shared_lm_head=cfg["shared_lm_head"], lr=1.5e-3,
                              layer_scale_init_value=cfg["init_values"], input_size=cfg["img_size"])
    converted = os.path.join(out_dir, "beitv2_tiny_converted.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, "beitv2_tiny_official.pth")
        torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3, "args": args,
                    "scaler": {"scale": 65536.0, "growth_factor": 2.0}}, pth)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_checkpoint.py"), pth, converted],
                       check=True)


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
        print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)")
        if name == CONVERTED_CASE:
            write_converted((tensors, meta), args.out_dir)


if __name__ == "__main__":
    main()

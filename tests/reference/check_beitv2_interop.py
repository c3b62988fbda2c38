#!/usr/bin/env python3
"""Our MIM weights in the official layout: WEIGHTS.safetensors (written by beitv2) is converted with
tools/convert_checkpoint.py --to-pth, loaded the way the official code does (torch.load, take 'model',
load_state_dict strict, relative_position_index buffers included) into the PyTorch rendering
(tests/reference/beitv2_ref.py), and must reproduce EXPECT.safetensors' `logits` / `cls_logits` for its `input`
and `mask` within 1e-5 (fp32, the golden tolerance). The model config is EXPECT's `config` metadata
(gen_beitv2_golden.py's field names). Exit 0 on success. Used by the C++ test GoldenBeitV2Interop.

  check_beitv2_interop.py WEIGHTS.safetensors EXPECT.safetensors
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import beitv2_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main(weights, expect):
    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, "mim.pth")
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_checkpoint.py"), "--to-pth", weights, pth],
                       check=True, stdout=subprocess.DEVNULL)
        sd = torch.load(pth, map_location="cpu", weights_only=True)["model"]
    with safe_open(expect, "pt") as f:
        cfg = json.loads(f.metadata()["config"])
    model = beitv2_ref.load_official(beitv2_ref.BeitV2ForMIM(**cfg), sd).eval()
    e = load_file(expect)
    with torch.no_grad():
        logits, cls_logits = model(e["input"], e["mask"])
    worst = max((logits - e["logits"]).abs().max().item(), (cls_logits - e["cls_logits"]).abs().max().item())
    if worst > 1e-5:
        print(f"logits differ: max |diff| {worst}")
        return 1
    print(f"official-layout load OK; {len(sd)} tensors; logits max |diff| {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

#!/usr/bin/env python3
"""Our tokenizer weights in the official layout: WEIGHTS.safetensors (written by beitv2) is converted with
tools/convert_checkpoint.py --to-pth, loaded the way the official tokenizer loader does (take 'model', delete
loss*/teacher*/scaling* keys, load_state_dict strict) into the PyTorch rendering, and must tokenise
EXPECT.safetensors' `pixels` to its `ids`. Exit 0 on success. Used by the C++ test GoldenVqkdInterop.

  check_vqkd_interop.py WEIGHTS.safetensors EXPECT.safetensors [TARGET_DIM]

The tokenizer is the vqkd_test_tiny geometry (32x32, 8x8 patches, 64 codes of dim 8) with TARGET_DIM-d
targets (default 16).
"""
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vqkd_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main(weights, expect, target_dim="16"):
    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, "tokenizer.pth")
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_checkpoint.py"), "--to-pth", weights, pth],
                       check=True, stdout=subprocess.DEVNULL)
        sd = torch.load(pth, map_location="cpu", weights_only=True)["model"]
    for k in [k for k in sd if k.startswith(("loss", "teacher", "scaling"))]:
        del sd[k]
    model = vqkd_ref.VQKD(target_dim=int(target_dim))
    model.load_state_dict(sd, strict=True)
    model.eval()
    e = load_file(expect)
    with torch.no_grad():
        ids = model.get_tokens(e["pixels"])
    if not torch.equal(ids, e["ids"]):
        print(f"token ids differ in {(ids != e['ids']).sum().item()} of {ids.numel()} places")
        return 1
    print(f"official-layout load OK; {ids.numel()} token ids identical")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

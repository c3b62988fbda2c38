#!/usr/bin/env python3
"""Official BEiT v2 / VQ-KD checkpoints <-> beitv2 .safetensors (names unchanged: they are the official ones).

  convert_checkpoint.py IN.pth OUT.safetensors          # official -> ours
  convert_checkpoint.py --to-pth IN.safetensors OUT.pth # ours -> a .pth the official code loads strictly

.pth -> .safetensors takes the state dict from the top-level key 'model', else 'state_dict', else 'module',
else the file itself; drops `teacher_model.*`, `scaling_layer.*` and `loss*` (what the official tokenizer
loader deletes) plus any non-tensor entry, and never carries optimizer, scaler or `args`. Files are loaded with
torch.load(weights_only=True), argparse.Namespace allowed, so official training checkpoints ({'model',
'optimizer', 'epoch', 'args', 'scaler'}: VQ-KD or the BEiT v2 MIM model VisionTransformerForMaskedImageModelingCLS)
load as they are; other pickled classes need --unsafe-pickle (only for files you trust). --drop PREFIX adds
prefixes to drop.
--to-pth writes {'model': state_dict}, the layout the official loaders read.
Quantized and sparse tensors are refused (dequantize or densify them first). Every error is one line on stderr,
exit status 1.
"""
import argparse
import collections
import hashlib
import os
import pickle
import re
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file

DROP_PREFIXES = ("teacher_model.", "scaling_layer.", "loss")


def fail(message):
    sys.exit(f"convert_checkpoint: {message}")


def reason(e):
    """The exception as one short line: its type and the first line of its message."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()  # torch colours some messages
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def check_source(path):
    if not os.path.exists(path):
        fail(f"{path}: no such file")
    if os.path.isdir(path):
        fail(f"{path}: is a directory")
    if os.path.getsize(path) == 0:
        fail(f"{path}: empty file")


def load_pth(path, unsafe_pickle):
    check_source(path)
    # The official training scripts save their argparse.Namespace under 'args' (utils.save_model).
    torch.serialization.add_safe_globals([argparse.Namespace])
    # torch warns on loading a quantized tensor (deprecated storage classes); this script refuses those with its
    # own message.
    warnings.simplefilter("ignore", UserWarning)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refused a pickled class: the file is readable, full unpickling would load it.
        if "weights only" in str(e).lower() and not unsafe_pickle:
            fail(f"{path}: cannot load with weights_only=True ({reason(e)}); if you trust this file, "
                 f"pass --unsafe-pickle")
        if not unsafe_pickle:
            fail(f"{path}: not a readable PyTorch checkpoint ({reason(e)})")
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one line, no traceback
        fail(f"{path}: not a readable PyTorch checkpoint ({reason(e)})")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        fail(f"{path}: not a readable PyTorch checkpoint ({reason(e)})")


def check_tensors(sd, path):
    """safetensors holds dense, plain tensors: name every quantized or sparse one."""
    bad = []
    for name, value in sd.items():
        if value.is_quantized:
            bad.append(f"'{name}' is quantized ({value.dtype})")
        elif value.layout != torch.strided:
            bad.append(f"'{name}' is sparse ({value.layout})")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        fail(f"{path}: {len(bad)} tensor{'s' if len(bad) > 1 else ''} cannot be stored: {', '.join(bad[:5])}{more}; "
             f"dequantize (tensor.dequantize()) or densify (tensor.to_dense()) them first")


def save(tensors, dst, metadata=None):
    try:
        save_file(tensors, dst, metadata=metadata)
    except Exception as e:  # noqa: BLE001 - e.g. a missing folder or a full disk
        fail(f"{dst}: cannot write ({reason(e)})")


def pick_state_dict(obj, path):
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "module"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key], key
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, None
    sys.exit(f"convert_checkpoint: {path}: no state dict under 'model', 'state_dict' or 'module'")


def to_safetensors(src, dst, drop, unsafe_pickle):
    sd, key = pick_state_dict(load_pth(src, unsafe_pickle), src)
    kept, dropped = {}, collections.Counter()
    for name, value in sd.items():
        prefix = next((p for p in drop if name.startswith(p)), None)
        if prefix is not None or not isinstance(value, torch.Tensor):
            dropped[prefix or "non-tensor"] += 1
            continue
        kept[name] = value
    check_tensors(kept, src)
    kept = {name: value.detach().clone().contiguous() for name, value in kept.items()}  # no shared storage
    if not kept:
        sys.exit(f"convert_checkpoint: {src}: nothing left to write after dropping {dict(dropped)}")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    meta = {"converted_from": os.path.basename(src), "source_sha256_16": digest,
            "source_key": key or "<root>", "dropped": ", ".join(f"{k}*: {v}" for k, v in sorted(dropped.items())),
            "converter": "tools/convert_checkpoint.py"}
    save(kept, dst, meta)
    print(f"wrote {dst}: {len(kept)} tensors from '{key or '<root>'}', dropped {dict(dropped) or 'nothing'}")


def to_pth(src, dst):
    check_source(src)
    try:
        sd = collections.OrderedDict(load_file(src))
    except Exception as e:  # noqa: BLE001 - not a safetensors file
        fail(f"{src}: not a readable .safetensors file ({reason(e)})")
    try:
        torch.save({"model": sd}, dst)
    except Exception as e:  # noqa: BLE001
        fail(f"{dst}: cannot write ({reason(e)})")
    print(f"wrote {dst}: {len(sd)} tensors under 'model'")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--to-pth", action="store_true", help="safetensors -> official .pth")
    ap.add_argument("--drop", action="append", default=[], help="also drop keys with this prefix")
    ap.add_argument("--unsafe-pickle", action="store_true", help="allow full unpickling (trusted files only)")
    a = ap.parse_args(argv)
    if a.to_pth:
        to_pth(a.src, a.dst)
    else:
        to_safetensors(a.src, a.dst, DROP_PREFIXES + tuple(a.drop), a.unsafe_pickle)


if __name__ == "__main__":
    main()

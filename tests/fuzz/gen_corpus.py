#!/usr/bin/env python3
"""Seed corpus for the safetensors fuzz target: a handful of small valid files written by the reference
`safetensors` package (each < 2 KB). Run in the build environment (it has torch and safetensors):
  ~/.cache/beitv2/build-env/bin/python tests/fuzz/gen_corpus.py
"""
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

g = torch.Generator().manual_seed(0)
FILES = {
    "single_f32": ({"w": torch.randn(2, 3, generator=g)}, None),
    "metadata": ({"bias": torch.randn(4, generator=g)}, {"format": "pt", "generator": "gen_corpus.py"}),
    "every_dtype": ({
        "f64": torch.randn(2, dtype=torch.float64, generator=g),
        "f32": torch.randn(2, generator=g),
        "f16": torch.randn(2, generator=g).half(),
        "bf16": torch.randn(2, generator=g).bfloat16(),
        "i64": torch.arange(2, dtype=torch.int64),
        "i32": torch.arange(2, dtype=torch.int32),
        "i16": torch.arange(2, dtype=torch.int16),
        "i8": torch.arange(-1, 1, dtype=torch.int8),
        "u8": torch.arange(2, dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
    }, None),
    "scalar_and_empty": ({"scalar": torch.tensor(1.5), "empty": torch.zeros(0, 3)}, None),
    "no_tensors": ({}, {"note": "metadata only"}),
    "block": ({"blocks.0.attn.qkv.weight": torch.randn(6, 2, generator=g),
               "blocks.0.attn.q_bias": torch.zeros(2), "blocks.0.gamma_1": torch.ones(2)}, None),
}

os.makedirs(OUT, exist_ok=True)
for name, (tensors, metadata) in FILES.items():
    path = os.path.join(OUT, name + ".safetensors")
    save_file(tensors, path, metadata=metadata)
    assert os.path.getsize(path) < 2048, path
    print(path, os.path.getsize(path))

"""A plain-PyTorch rendering of the BEiT ViT (docs/reference.md §0), needing nothing but torch.

It exists so that the PyTorch side of a benchmark can run on the very same torch build that the C++ links
(the build environment has no torchvision, hence no timm). `python tests/reference/plain_vit.py --check`
proves it equal to timm's Beit on the committed golden fixtures (a ctest test, label golden).
Parameter names are the official ones, so a beitv2 / timm / official state dict loads strictly.
"""
import argparse
import glob
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


def relative_position_index(wh, ww):
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N, N, 2
    rows = (2 * wh - 1) * (2 * ww - 1) + 3
    index = torch.zeros(wh * ww + 1, wh * ww + 1, dtype=torch.long)
    index[1:, 1:] = (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)
    index[0, :] = rows - 3
    index[:, 0] = rows - 2
    index[0, 0] = rows - 1
    return index


class RelPosBias(nn.Module):
    def __init__(self, grid, heads):
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * grid - 1) ** 2 + 3, heads))
        self.register_buffer("relative_position_index", relative_position_index(grid, grid))

    def forward(self):
        n = self.relative_position_index.shape[0]
        return self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)


class Attention(nn.Module):
    def __init__(self, dim, heads, grid=None):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        if grid:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * grid - 1) ** 2 + 3, heads))
            self.register_buffer("relative_position_index", relative_position_index(grid, grid))
        else:
            self.relative_position_bias_table = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, shared_bias=None):
        b, n, d = x.shape
        bias_qkv = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        q, k, v = F.linear(x, self.qkv.weight, bias_qkv).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = shared_bias
        if self.relative_position_bias_table is not None:
            own = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
            bias = own if bias is None else own + bias
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, init_values, grid):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if init_values > 0:
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x, shared_bias=None):
        a = self.attn(self.norm1(x), shared_bias)
        x = x + (a if self.gamma_1 is None else self.gamma_1 * a)
        m = self.mlp(self.norm2(x))
        return x + (m if self.gamma_2 is None else self.gamma_2 * m)


class VisionTransformer(nn.Module):
    """Takes beitv2's ViTConfig field names (models/vit_config.h)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 init_values=0.0, use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=False,
                 use_mean_pooling=True, num_classes=0, **_):
        super().__init__()
        grid = img_size // patch_size
        self.use_mean_pooling = use_mean_pooling
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim)) if use_abs_pos_emb else None
        self.rel_pos_bias = RelPosBias(grid, num_heads) if use_shared_rel_pos_bias else None
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values, grid if use_rel_pos_bias else None)
            for _ in range(depth))
        if use_mean_pooling:
            self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else None

    def forward_features(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        bias = self.rel_pos_bias() if self.rel_pos_bias is not None else None
        for blk in self.blocks:
            x = blk(x, bias)
        return x if self.use_mean_pooling else self.norm(x)

    def forward_head(self, x, pre_logits=False):
        x = self.fc_norm(x[:, 1:].mean(1)) if self.use_mean_pooling else x[:, 0]
        return x if pre_logits or self.head is None else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def check(golden_dir):
    """Loads every tiny golden fixture into the plain model and compares with timm's outputs."""
    from safetensors import safe_open
    files = sorted(glob.glob(os.path.join(golden_dir, "vit_tiny_*.safetensors")))
    assert files, f"no fixtures in {golden_dir}"
    for path in files:
        with safe_open(path, "pt") as f:
            cfg = json.loads(f.metadata()["config"])
            t = {k: f.get_tensor(k) for k in f.keys()}
        model = VisionTransformer(**cfg).eval()
        model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("param.")}, strict=True)
        with torch.no_grad():
            feats = model.forward_features(t["input"])
            for name, got in [("out.features", feats), ("out.pooled", model.forward_head(feats, True))]:
                err = (got - t[name]).abs().max().item()
                assert err < 1e-5, f"{path}: {name} differs from timm by {err}"
        print(f"plain_vit matches timm on {os.path.basename(path)}")
    print(f"{len(files)} passed, 0 failed")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--golden-dir", default=os.path.join(os.path.dirname(__file__), "..", "data", "golden"))
    a = ap.parse_args()
    if a.check:
        check(a.golden_dir)

"""A PyTorch rendering of VQ-KD (docs/reference.md §1) for golden fixtures, converter tests (reference env) and
benchmarks.

Encoder and decoder are timm 1.0.29 `Beit` models (the reference ViT; patch tokens = fc_norm of every patch
token, as the official `return_patch_tokens=True`); the quantizer is written here from docs/reference.md §1.3 in
the official form (one-hot matmuls, argmin of ||z||²+||e||²−2z·e). State-dict names are the official ones.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # the reference env: timm's Beit is the reference ViT
    from timm.models.beit import Beit
except ImportError:  # the build env (benchmarks on the C++'s own torch build): the plain rendering, equal to it
    Beit = None
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import plain_vit


def l2norm(t):
    return F.normalize(t, p=2, dim=-1)


def kmeans_cosine(samples, k, iters, init_indices):
    means = samples[init_indices]
    bins = None
    for _ in range(iters):
        buckets = (samples @ means.t()).max(dim=-1).indices
        bins = torch.bincount(buckets, minlength=k)
        zero = bins == 0
        sums = torch.zeros(k, samples.shape[1], dtype=samples.dtype)
        sums.scatter_add_(0, buckets[:, None].expand(-1, samples.shape[1]), samples)
        new = l2norm(sums / bins.masked_fill(zero, 1)[:, None])
        means = torch.where(zero[:, None], means, new)
    return means, bins


class EmbeddingEMA(nn.Module):
    def __init__(self, n, d):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, d), requires_grad=False)
        self.cluster_size = nn.Parameter(torch.zeros(n), requires_grad=False)
        self.embed_avg = nn.Parameter(torch.zeros(n, d), requires_grad=False)
        self.register_buffer("initted", torch.Tensor([0.0]))


class Quantizer(nn.Module):
    def __init__(self, n, d, beta=1.0, decay=0.99):
        super().__init__()
        self.n, self.d, self.beta, self.decay = n, d, beta, decay
        self.embedding = EmbeddingEMA(n, d)
        self.register_buffer("cluster_size", torch.zeros(n))

    def forward(self, z):  # B, C, H, W
        z = l2norm(z.permute(0, 2, 3, 1))
        flat = z.reshape(-1, self.d)
        w = self.embedding.weight
        assert self.embedding.initted.item() == 1.0, "reference: initialise the codebook explicitly"
        dist = flat.pow(2).sum(1, keepdim=True) + w.pow(2).sum(1) - 2 * flat @ w.t()
        idx = dist.argmin(1)
        z_q = F.embedding(idx, w).view(z.shape)
        onehot = F.one_hot(idx, self.n).type(z.dtype)
        with torch.no_grad():
            if self.training:
                bins = onehot.sum(0)
                self.cluster_size.mul_(self.decay).add_(bins, alpha=1 - self.decay)
                zero = bins == 0
                bins = bins.masked_fill(zero, 1.0)
                embed_sum = flat.t() @ onehot  # d, n
                means = l2norm((embed_sum / bins[None]).t())
                means = torch.where(zero[:, None], w, means)
                w.mul_(self.decay).add_(means, alpha=1 - self.decay)
                w.copy_(l2norm(w))
            else:
                self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        loss = self.beta * F.mse_loss(z_q.detach(), z)
        z_q = z + (z_q - z).detach()
        return z_q.permute(0, 3, 1, 2), loss, idx


def beit(img, patch, in_chans, dim, depth, heads):
    if Beit is None:
        return plain_vit.VisionTransformer(img_size=img, patch_size=patch, in_chans=in_chans, embed_dim=dim,
                                           depth=depth, num_heads=heads)
    return Beit(img_size=img, patch_size=patch, in_chans=in_chans, num_classes=0, global_pool="avg",
                embed_dim=dim, depth=depth, num_heads=heads, qkv_bias=True, mlp_ratio=4.0, init_values=None,
                use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=False)


class VQKD(nn.Module):
    def __init__(self, img=32, patch=8, dim=32, enc_depth=2, dec_depth=1, heads=2, n_code=64, code_dim=8,
                 target_dim=16):
        super().__init__()
        self.grid = img // patch
        self.encoder = beit(img, patch, 3, dim, enc_depth, heads)
        self.decoder = beit(self.grid, 1, code_dim, dim, dec_depth, heads)
        self.quantize = Quantizer(n_code, code_dim)
        self.encode_task_layer = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, code_dim))
        self.decode_task_layer = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, target_dim))

    @staticmethod
    def patch_tokens(vit, x):
        return vit.fc_norm(vit.forward_features(x)[:, 1:])

    @staticmethod
    def pre_process(x):  # [0,1] or [0,255] -> [-1,1]
        x = x.float()
        if x.max() <= 1.0:
            x = x * 255.0
        return x / 127.5 - 1.0

    def encode_features(self, x):
        return self.encode_task_layer(self.patch_tokens(self.encoder, x))

    def encode(self, x):
        f = self.encode_features(x)
        b, n, c = f.shape
        return self.quantize(f.transpose(1, 2).reshape(b, c, self.grid, self.grid))

    def decode(self, z_q):
        return self.decode_task_layer(self.patch_tokens(self.decoder, z_q))

    def get_tokens(self, images):
        x = self.pre_process(images)
        return self.encode(x)[2].view(x.shape[0], -1)

    def forward(self, images, targets):
        x = self.pre_process(images)
        z_q, quant_loss, idx = self.encode(x)
        rec = self.decode(z_q)
        t = targets / targets.norm(dim=-1, keepdim=True)
        r = rec / rec.norm(dim=-1, keepdim=True)
        rec_loss = (1 - (t * r).sum(-1)).mean()
        return quant_loss + rec_loss, quant_loss, rec_loss, idx.view(x.shape[0], -1), rec

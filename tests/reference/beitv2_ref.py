"""A PyTorch rendering of the BEiT v2 masked-image-modelling model with the patch-aggregation (CLS) head, for
golden fixtures and converter tests (reference env). docs/reference.md §3.1-3.3; official counterpart:
microsoft/unilm beit2/modeling_pretrain.py `VisionTransformerForMaskedImageModelingCLS`.

The backbone is timm 1.0.29's `Beit` (patch embed, cls token, optional abs pos, shared or per-block relative
position bias, layer-scale blocks, final `norm`), extended here with what the pretraining model adds, written
from the reference semantics:
  - `mask_token`: masked patch embeddings x become x·(1−w) + mask_token·w (w = the bool mask as 0/1);
  - `lm_head` Linear(D, vocab) on the final-normed patch tokens at the masked positions (batch-major order);
  - `cls_pt_layers` (timm Blocks, the same shared bias): input = cat(last block's cls token (pre-norm), patch
    tokens after block `early_layers` (pre-norm)); output normed by `norm` and predicted by `lm_head` when
    shared_lm_head, else by `cls_pt_norm` / `cls_pt_lm_head`.
State-dict names are the official ones; `official_state_dict` adds the relative_position_index buffers that
official checkpoints carry (timm keeps them non-persistent) and `load_official` accepts them.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm
from timm.models.beit import Beit, Block


class BeitV2ForMIM(Beit):
    def __init__(self, img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 vocab_size=8192, early_layers=9, head_layers=2, shared_lm_head=True, init_values=0.1,
                 use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True, drop_path_rate=0.0):
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=3, num_classes=0, global_pool="token",
                         embed_dim=embed_dim, depth=depth, num_heads=num_heads, qkv_bias=True, mlp_ratio=mlp_ratio,
                         drop_path_rate=drop_path_rate, init_values=init_values or None,
                         use_abs_pos_emb=use_abs_pos_emb, use_rel_pos_bias=use_rel_pos_bias,
                         use_shared_rel_pos_bias=use_shared_rel_pos_bias)
        self.early_layers = early_layers
        self.shared_lm_head = shared_lm_head
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.lm_head = nn.Linear(embed_dim, vocab_size)
        # stochastic depth of the head continues the backbone's: linspace(0, rate, max(depth, l + h))[l + j]
        rates = torch.linspace(0, drop_path_rate, max(depth, early_layers + head_layers)).tolist()
        self.cls_pt_layers = nn.ModuleList(
            Block(embed_dim, num_heads, qkv_bias=True, mlp_ratio=mlp_ratio, drop_path=rates[early_layers + j],
                  init_values=init_values or None, norm_layer=LayerNorm,
                  window_size=self.patch_embed.grid_size if use_rel_pos_bias else None)
            for j in range(head_layers))
        if head_layers > 0 and not shared_lm_head:
            self.cls_pt_norm = LayerNorm(embed_dim)
            self.cls_pt_lm_head = nn.Linear(embed_dim, vocab_size)

    def embed(self, x, mask):
        t = self.patch_embed(x)  # B, N, D
        w = mask.unsqueeze(-1).to(t.dtype)
        t = t * (1 - w) + self.mask_token * w
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        if self.pos_embed is not None:
            t = t + self.pos_embed
        return t

    def forward_tokens(self, x, mask):
        """-> (normed backbone tokens, normed head tokens or None, [each block's output]), tokens (B, 1+N, D)."""
        t = self.embed(x, mask)
        bias = self.rel_pos_bias() if self.rel_pos_bias is not None else None
        hidden = []
        for blk in self.blocks:
            t = blk(t, shared_rel_pos_bias=bias)
            hidden.append(t)
        if len(self.cls_pt_layers) == 0:
            return self.norm(t), None, hidden
        h = torch.cat([t[:, :1], hidden[self.early_layers - 1][:, 1:]], dim=1)
        for blk in self.cls_pt_layers:
            h = blk(h, shared_rel_pos_bias=bias)
        return self.norm(t), (self.norm(h) if self.shared_lm_head else self.cls_pt_norm(h)), hidden

    def forward(self, x, mask):
        """x (B, 3, H, W), mask (B, N) bool -> (logits (M, V), cls logits (M, V) or None)."""
        tokens, head_tokens, _ = self.forward_tokens(x, mask)
        logits = self.lm_head(tokens[:, 1:][mask])
        if head_tokens is None:
            return logits, None
        lm = self.lm_head if self.shared_lm_head else self.cls_pt_lm_head
        return logits, lm(head_tokens[:, 1:][mask])

    @staticmethod
    def losses(logits, cls_logits, labels):
        loss_1 = F.cross_entropy(logits, labels)
        loss_2 = F.cross_entropy(cls_logits, labels) if cls_logits is not None else None
        return loss_1, loss_2


def official_state_dict(model):
    """state_dict plus the relative_position_index buffers (official checkpoints carry them)."""
    sd = dict(model.state_dict())
    for n, b in model.named_buffers():
        if n.endswith("relative_position_index"):
            sd[n] = b
    return sd


def load_official(model, sd):
    """Strict load of an official-layout state dict; index buffers must equal the model's own."""
    sd = dict(sd)
    buffers = dict(model.named_buffers())
    for n in [n for n in sd if n.endswith("relative_position_index")]:
        if n not in buffers or not torch.equal(buffers[n], sd[n]):
            raise ValueError(f"{n}: unexpected or different relative_position_index")
        del sd[n]
    model.load_state_dict(sd, strict=True)
    return model

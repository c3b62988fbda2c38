"""A plain-PyTorch rendering of the BEiT v2 semantic-segmentation model (UperNet on the BEiT pyramid), its loss,
its sliding-window inference, mmseg's mIoU/mAcc/aAcc and the official relative-position-table interpolation, for
golden fixtures (tests/reference/gen_seg_golden.py) and docs/segmentation.md. Reference env only (torch, numpy);
mmcv / mmseg are not needed (they no longer install).

Official code this mirrors (docs/reference.md §8; the official recipe pins mmcv-full 1.3.0 and mmsegmentation 0.11.0,
beit2/semantic_segmentation/README.md):
  - microsoft/unilm beit2/semantic_segmentation/backbone/beit.py        `BEiT.fpn1..fpn4`, `forward_features`
  - microsoft/unilm beit2/semantic_segmentation/mmcv_custom/checkpoint.py `load_checkpoint` (rel-pos tables)
  - microsoft/unilm beit2/semantic_segmentation/configs/_base_/models/upernet_beit.py and
    configs/beit/upernet/upernet_beit_{base_12,large_24}_512_slide_160k_{ade20k,21ktoade20k}.py
  - open-mmlab/mmcv v1.3.0 mmcv/cnn/bricks/conv_module.py                `ConvModule` (conv → norm → act)
  - open-mmlab/mmsegmentation v0.11.0:
      mmseg/models/decode_heads/decode_head.py   `BaseDecodeHead` (`conv_seg`, `dropout`, `cls_seg`, `losses`)
      mmseg/models/decode_heads/uper_head.py     `UPerHead`
      mmseg/models/decode_heads/psp_head.py      `PPM`
      mmseg/models/decode_heads/fcn_head.py      `FCNHead`
      mmseg/models/losses/cross_entropy_loss.py  `cross_entropy` (reduction 'none', then a plain mean)
      mmseg/models/segmentors/encoder_decoder.py `EncoderDecoder.slide_inference`, `encode_decode`
      mmseg/core/evaluation/metrics.py           `intersect_and_union`, `eval_metrics`
      mmseg/ops/wrappers.py                      `resize` (F.interpolate)
Written from reading those files, not copied. State-dict names are the official ones, so the `backbone.fpn*`,
`decode_head.*` and `auxiliary_head.*` keys of an official `..._ftade20k.pth` (mmseg layout) load into
`SegmentationHeads` strictly. SyncBN is rendered as BatchNorm2d (identical in one process; the C++ port adds
the cross-rank statistics).
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = 255


def resize(x, size, align_corners=False):
    """mmseg.ops.resize as every head here calls it: bilinear F.interpolate to `size` (align_corners False)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


# --------------------------------------------------------------------------------------------------------------
# Backbone side: token maps and the 4-level pyramid (beit2/semantic_segmentation/backbone/beit.py)
# --------------------------------------------------------------------------------------------------------------

def tokens_to_map(tokens, hp, wp):
    """A block output (B, 1+N, D) → (B, D, Hp, Wp): drop the cls token, patches row-major (BEiT.forward_features:
    x[:, 1:, :].permute(0, 2, 1).reshape(B, -1, Hp, Wp)). No final norm is applied to the features."""
    b = tokens.shape[0]
    return tokens[:, 1:, :].permute(0, 2, 1).reshape(b, -1, hp, wp).contiguous()


class FeaturePyramid(nn.Module):
    """BEiT.fpn1..fpn4 for patch size 16 (beit2/semantic_segmentation/backbone/beit.py, `BEiT.__init__`).

    fpn1: Sequential(ConvTranspose2d(D, D, 2, stride 2), SyncBatchNorm(D), GELU (exact), ConvTranspose2d(D, D, 2,
          stride 2)) → 4x; names fpn1.0.{weight,bias}, fpn1.1.{weight,bias,running_mean,running_var,
          num_batches_tracked}, fpn1.3.{weight,bias} (index 2 is the GELU, no parameters).
    fpn2: Sequential(ConvTranspose2d(D, D, 2, stride 2)) → 2x; names fpn2.0.{weight,bias}.
    fpn3: Identity.  fpn4: MaxPool2d(2, stride 2) → ½x (floor for odd sizes).
    ConvTranspose2d weights are (in, out, 2, 2) and keep PyTorch's default init (BEiT._init_weights touches only
    Linear and LayerNorm). The four inputs are the outputs of blocks out_indices ([3,5,7,11] base, [7,11,15,23]
    large) as (B, D, Hp, Wp) maps.
    """

    def __init__(self, embed_dim):
        super().__init__()
        d = embed_dim
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(d, d, kernel_size=2, stride=2), nn.BatchNorm2d(d), nn.GELU(),
                                  nn.ConvTranspose2d(d, d, kernel_size=2, stride=2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(d, d, kernel_size=2, stride=2))
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, features):
        assert len(features) == 4
        ops = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return [op(f) for op, f in zip(ops, features)]


# --------------------------------------------------------------------------------------------------------------
# mmcv / mmseg heads
# --------------------------------------------------------------------------------------------------------------

class ConvModule(nn.Module):
    """mmcv 1.3.0 ConvModule with norm_cfg SyncBN and the default act_cfg ReLU, order (conv, norm, act).

    bias='auto' gives the conv no bias because a norm follows. Names: `conv.weight`, `bn.weight`, `bn.bias`,
    `bn.running_mean`, `bn.running_var`, `bn.num_batches_tracked` (build_norm_layer names any _BatchNorm 'bn').
    Init (ConvModule.init_weights): kaiming normal, mode fan_out, nonlinearity relu, for the conv; norm weight 1,
    bias 0. BatchNorm eps 1e-5, momentum 0.1 (PyTorch defaults).
    """

    def __init__(self, in_channels, out_channels, kernel_size, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU()
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class DecodeHead(nn.Module):
    """The part of mmseg 0.11 BaseDecodeHead every head shares: `cls_seg` = Dropout2d(dropout_ratio) (absent when
    the ratio is 0) → `conv_seg` Conv2d(channels, num_classes, 1) with bias (init normal std 0.01, bias 0).

    `dropout_mask`, when set to a (B, channels, 1, 1) tensor of 0 or 1/(1-p), replaces Dropout2d's random draw in
    training mode (what Dropout2d computes, with a known mask), so fixtures are reproducible outside PyTorch's RNG.
    """

    def __init__(self, channels, num_classes, dropout_ratio):
        super().__init__()
        self.dropout_ratio = dropout_ratio
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.dropout_mask = None
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def cls_seg(self, feat):
        if self.dropout is not None:
            if self.training and self.dropout_mask is not None:
                feat = feat * self.dropout_mask
            else:
                feat = self.dropout(feat)
        return self.conv_seg(feat)


class PPM(nn.ModuleList):
    """mmseg 0.11 psp_head.PPM: for each pool scale s, Sequential(AdaptiveAvgPool2d(s), ConvModule(C_in, C, 1)),
    each output bilinearly resized back to the input size (align_corners False). Names
    `psp_modules.<i>.1.conv.weight`, `psp_modules.<i>.1.bn.*` (index 0 is the pool)."""

    def __init__(self, pool_scales, in_channels, channels, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        for s in pool_scales:
            self.append(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels, channels, 1)))

    def forward(self, x):
        return [resize(m(x), x.shape[2:], self.align_corners) for m in self]


class UPerHead(DecodeHead):
    """mmseg 0.11 UPerHead (input_transform 'multiple_select', in_index (0,1,2,3)), channels C:

      psp_forward: x = level 3; cat([x] + PPM(x)) → `bottleneck` ConvModule(C_in3 + len(scales)·C, C, 3, pad 1)
      laterals:    `lateral_convs.<i>` ConvModule(C_in_i, C, 1) on levels 0..2, plus the psp output as level 3
      top-down:    for i = 3, 2, 1: laterals[i-1] = laterals[i-1] + resize(laterals[i], size of level i-1)
      outputs:     `fpn_convs.<i>` ConvModule(C, C, 3, pad 1) on laterals 0..2; laterals[3] as is; levels 1..3
                   resized to level 0's size; cat (level order 0,1,2,3) → `fpn_bottleneck` ConvModule(4C, C, 3,
                   pad 1) → cls_seg (Dropout2d 0.1 → `conv_seg`).
    Logits come out at level 0's resolution (¼ of the input image for patch 16).
    """

    def __init__(self, in_channels, channels, num_classes, pool_scales=(1, 2, 3, 6), dropout_ratio=0.1,
                 align_corners=False, in_index=(0, 1, 2, 3)):
        super().__init__(channels, num_classes, dropout_ratio)
        self.in_index = tuple(in_index)
        self.align_corners = align_corners
        self.psp_modules = PPM(pool_scales, in_channels[-1], channels, align_corners)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, padding=1) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, padding=1)

    def psp_forward(self, inputs):
        x = inputs[-1]
        return self.bottleneck(torch.cat([x] + self.psp_modules(x), dim=1))

    def forward(self, inputs):
        inputs = [inputs[i] for i in self.in_index]
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(inputs))
        n = len(laterals)
        for i in range(n - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:], self.align_corners)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(n - 1)] + [laterals[-1]]
        for i in range(n - 1, 0, -1):
            outs[i] = resize(outs[i], outs[0].shape[2:], self.align_corners)
        return self.cls_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))


class FCNHead(DecodeHead):
    """mmseg 0.11 FCNHead (input_transform None: one level, `in_index`): `convs` = Sequential of num_convs
    ConvModule(k x k, pad k//2) (first C_in → C, then C → C), optional `conv_cat` on cat([x, convs(x)]) when
    concat_input, then cls_seg. The BEiT v2 auxiliary head: in_index 2, channels 256, num_convs 1,
    concat_input False, dropout 0.1, loss weight 0.4 (configs/_base_/models/upernet_beit.py). Names
    `convs.0.conv.weight`, `convs.0.bn.*`, `conv_seg.*`."""

    def __init__(self, in_channels, channels, num_classes, num_convs=1, kernel_size=3, concat_input=False,
                 dropout_ratio=0.1, in_index=2):
        assert num_convs > 0  # mmseg 0.11 asserts this too
        super().__init__(channels, num_classes, dropout_ratio)
        self.in_index = in_index
        pad = kernel_size // 2
        self.convs = nn.Sequential(*[ConvModule(in_channels if i == 0 else channels, channels, kernel_size, pad)
                                     for i in range(num_convs)])
        self.concat_input = concat_input
        if concat_input:
            self.conv_cat = ConvModule(in_channels + channels, channels, kernel_size, pad)

    def forward(self, inputs):
        x = inputs[self.in_index]
        out = self.convs(x)
        if self.concat_input:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.cls_seg(out)


def seg_cross_entropy(logits, label, ignore_index=IGNORE_INDEX, loss_weight=1.0, align_corners=False):
    """BaseDecodeHead.losses + CrossEntropyLoss of mmseg 0.11: logits resized (bilinear) to the label's size,
    per-pixel F.cross_entropy(reduction='none', ignore_index) and then a plain mean over ALL pixels — ignored
    pixels contribute 0 but still count in the denominator (mmseg 0.11 has no avg_non_ignore) — times
    loss_weight. `label` is (B, H, W) int64."""
    logits = resize(logits, label.shape[-2:], align_corners)
    loss = F.cross_entropy(logits, label, reduction="none", ignore_index=ignore_index)
    return loss_weight * loss.mean()


class SegmentationHeads(nn.Module):
    """The trainable non-ViT part of the official segmenter with mmseg's EncoderDecoder prefixes:
    `backbone.fpn*` (the pyramid lives in the backbone module officially), `decode_head.*` (UPerHead),
    `auxiliary_head.*` (FCNHead). Input: the four block-output maps (B, D, Hp, Wp)."""

    def __init__(self, embed_dim, channels, num_classes, aux_channels, pool_scales=(1, 2, 3, 6),
                 dropout_ratio=0.1, aux_in_index=2, aux_loss_weight=0.4):
        super().__init__()
        self.backbone = FeaturePyramid(embed_dim)
        self.decode_head = UPerHead([embed_dim] * 4, channels, num_classes, pool_scales, dropout_ratio)
        self.auxiliary_head = FCNHead(embed_dim, aux_channels, num_classes, num_convs=1, concat_input=False,
                                      dropout_ratio=dropout_ratio, in_index=aux_in_index)
        self.aux_loss_weight = aux_loss_weight

    def forward(self, features):
        levels = self.backbone(features)
        return levels, self.decode_head(levels), self.auxiliary_head(levels)

    def losses(self, decode_logits, aux_logits, label):
        """EncoderDecoder.forward_train: {'decode.loss_seg', 'aux.loss_seg'}, summed by the runner."""
        return {"decode.loss_seg": seg_cross_entropy(decode_logits, label),
                "aux.loss_seg": seg_cross_entropy(aux_logits, label, loss_weight=self.aux_loss_weight)}


# --------------------------------------------------------------------------------------------------------------
# Inference (mmseg 0.11 EncoderDecoder)
# --------------------------------------------------------------------------------------------------------------

def slide_windows(h_img, w_img, crop=(512, 512), stride=(341, 341)):
    """The crop boxes (y1, y2, x1, x2) of EncoderDecoder.slide_inference, row-major: grids = max(size - crop +
    stride - 1, 0) // stride + 1; window i starts at i·stride, is cut at the image end and then shifted back so
    it keeps the full crop size where the image allows (end-aligned last window)."""
    (hc, wc), (hs, ws) = crop, stride
    h_grids = max(h_img - hc + hs - 1, 0) // hs + 1
    w_grids = max(w_img - wc + ws - 1, 0) // ws + 1
    boxes = []
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * hs, wi * ws
            y2, x2 = min(y1 + hc, h_img), min(x1 + wc, w_img)
            y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
            boxes.append((y1, y2, x1, x2))
    return boxes


def slide_inference(encode_decode, img, num_classes, crop=(512, 512), stride=(341, 341)):
    """EncoderDecoder.slide_inference (without the final rescale): logits of every window (encode_decode returns
    them already resized to the crop, bilinear) summed into place and divided by the per-pixel window count.
    mmseg then applies softmax and argmax; softmax comes after the averaging."""
    b, _, h, w = img.shape
    preds = img.new_zeros((b, num_classes, h, w))
    count = img.new_zeros((b, 1, h, w))
    for y1, y2, x1, x2 in slide_windows(h, w, crop, stride):
        preds[:, :, y1:y2, x1:x2] += encode_decode(img[:, :, y1:y2, x1:x2])
        count[:, :, y1:y2, x1:x2] += 1
    assert bool((count > 0).all())
    return preds / count


# --------------------------------------------------------------------------------------------------------------
# Metrics (mmseg 0.11 mmseg/core/evaluation/metrics.py), numpy
# --------------------------------------------------------------------------------------------------------------

def photo_metric_distortion(bgr, draw):
    """mmseg 0.11 PhotoMetricDistortion.__call__ on a uint8 BGR image with its random draws given:
    draw = {"brightness": beta or None, "contrast_first": bool (mode == 1), "contrast": alpha or None,
    "saturation": alpha or None, "hue": int delta or None}. mmcv's bgr2hsv / hsv2bgr are cv2.cvtColor."""
    import cv2

    def convert(img, alpha=1, beta=0):
        img = img.astype(np.float32) * alpha + beta
        img = np.clip(img, 0, 255)
        return img.astype(np.uint8)

    img = bgr.copy()
    if draw["brightness"] is not None:
        img = convert(img, beta=draw["brightness"])

    def contrast(img):
        return convert(img, alpha=draw["contrast"]) if draw["contrast"] is not None else img

    if draw["contrast_first"]:
        img = contrast(img)
    if draw["saturation"] is not None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        img[:, :, 1] = convert(img[:, :, 1], alpha=draw["saturation"])
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
    if draw["hue"] is not None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        img[:, :, 0] = (img[:, :, 0].astype(int) + draw["hue"]) % 180
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
    if not draw["contrast_first"]:
        img = contrast(img)
    return img


def reduce_zero_label(label):
    """LoadAnnotations(reduce_zero_label=True) / intersect_and_union's uint8 trick: 0 → ignore (255), k → k-1 for
    1 ≤ k ≤ 254, 255 stays 255. Works for any integer dtype."""
    label = np.asarray(label).astype(np.int64)
    out = label - 1
    out[label == 0] = IGNORE_INDEX
    out[label == IGNORE_INDEX] = IGNORE_INDEX
    return out


def intersect_and_union(pred_label, label, num_classes, ignore_index=IGNORE_INDEX, label_map=None,
                        reduce_zero_label_=False):
    """Per-class pixel areas of one image: (intersect, union, pred, label), each (num_classes,) int64.

    label_map {old: new} is applied to the label first, then reduce_zero_label, then pixels whose label equals
    ignore_index are dropped from BOTH maps. Areas are np.histogram with bins arange(num_classes + 1): a value
    equal to num_classes lands in the last bin (numpy's closed last bin), other out-of-range values are dropped —
    only bad data reaches that."""
    pred_label = np.asarray(pred_label).astype(np.int64)
    label = np.asarray(label).astype(np.int64).copy()
    for old, new in (label_map or {}).items():
        label[label == old] = new
    if reduce_zero_label_:
        label = reduce_zero_label(label)
    keep = label != ignore_index
    pred_label, label = pred_label[keep], label[keep]
    bins = np.arange(num_classes + 1)
    area_intersect = np.histogram(pred_label[pred_label == label], bins=bins)[0]
    area_pred = np.histogram(pred_label, bins=bins)[0]
    area_label = np.histogram(label, bins=bins)[0]
    return area_intersect, area_pred + area_label - area_intersect, area_pred, area_label


def eval_metrics(preds, labels, num_classes, ignore_index=IGNORE_INDEX, label_map=None, reduce_zero_label_=False):
    """mmseg 0.11 total_intersect_and_union + eval_metrics(metrics=['mIoU']) + CustomDataset.evaluate's summary.

    Areas are summed over the whole set first (float64), then: aAcc = Σ intersect / Σ label; per class IoU =
    intersect / union and Acc = intersect / label (NaN where the denominator is 0: a class absent from both
    prediction and ground truth has IoU NaN; one absent from the ground truth has Acc NaN); mIoU and mAcc are
    np.nanmean over classes. mmseg prints these ×100 rounded to 2 decimals; the fractions are returned here."""
    tot = [np.zeros(num_classes, dtype=np.float64) for _ in range(4)]
    for p, l in zip(preds, labels):
        for acc, a in zip(tot, intersect_and_union(p, l, num_classes, ignore_index, label_map, reduce_zero_label_)):
            acc += a
    inter, union, pred, lab = tot
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc = inter / union, inter / lab
        a_acc = inter.sum() / lab.sum()
    return {"area_intersect": inter, "area_union": union, "area_pred_label": pred, "area_label": lab,
            "aAcc": a_acc, "IoU": iou, "Acc": acc, "mIoU": np.nanmean(iou), "mAcc": np.nanmean(acc)}


# --------------------------------------------------------------------------------------------------------------
# Relative position tables at another resolution (beit2/semantic_segmentation/mmcv_custom/checkpoint.py)
# --------------------------------------------------------------------------------------------------------------

def expand_shared_rel_pos_bias(state_dict, num_layers):
    """load_checkpoint: a pretraining checkpoint's shared `rel_pos_bias.relative_position_bias_table` becomes
    every block's `blocks.<i>.attn.relative_position_bias_table` (a copy each) and the shared key is dropped;
    every `relative_position_index` key is dropped too (the model builds its own)."""
    sd = dict(state_dict)
    key = "rel_pos_bias.relative_position_bias_table"
    if key in sd:
        table = sd.pop(key)
        for i in range(num_layers):
            sd[f"blocks.{i}.attn.relative_position_bias_table"] = table.clone()
    return {k: v for k, v in sd.items() if "relative_position_index" not in k}


def geometric_progression_coordinates(src_size, dst_size):
    """The source offsets of load_checkpoint: bisect q in [1.01, 1.5] until right - left ≤ 1e-6 with
    1·(1 - q^n)/(1 - q) compared to dst_size // 2 (n = src_size // 2; the last midpoint is q), then
    d = [1, 1+q, 1+q+q², …] (n values) and x = [-d reversed] + [0] + d (python floats, same operations)."""
    def gp(a, r, n):
        return a * (1.0 - r ** n) / (1.0 - r)
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if gp(1, q, src_size // 2) > dst_size // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1
    for i in range(src_size // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return [-d for d in reversed(dis)] + [0] + dis


def _bspline_basis_row(t, n_coef, k, x):
    """The k+1 nonzero B-spline values at x (FITPACK fpbspl) and the index of the first one. x must lie in
    [t[k], t[n_coef]]; the right end uses the last interval (as FITPACK's interval search does)."""
    lo = k
    hi = n_coef - 1
    l = lo
    while l < hi and x >= t[l + 1]:
        l += 1
    h = [1.0]
    for j in range(1, k + 1):
        hh, h = h, [0.0] * (j + 1)
        for i in range(1, j + 1):
            f = hh[i - 1] / (t[l + i] - t[l + i - j])
            h[i - 1] += f * (t[l + i] - x)
            h[i] = f * (x - t[l + i - j])
    return l - k, h


def cubic_interpolation_matrix(x, xi):
    """The (len(xi), len(x)) float64 matrix M with M @ z = the value at xi of the cubic spline interpolating
    (x, z) the way FITPACK does for s = 0: knots x[0] (×4), x[2..m-3], x[m-1] (×4) (fpregr's interpolation knots
    for k = 3, i.e. the not-a-knot cubic spline), evaluated with arguments clamped to [x[0], x[m-1]] (fpbisp)."""
    x = [float(v) for v in x]
    m, k = len(x), 3
    t = [x[0]] * (k + 1) + x[2:m - 2] + [x[-1]] * (k + 1)
    assert len(t) == m + k + 1

    def design(points):
        a = torch.zeros(len(points), m, dtype=torch.float64)
        for r, p in enumerate(points):
            p = min(max(float(p), x[0]), x[-1])
            j0, vals = _bspline_basis_row(t, m, k, p)
            a[r, j0:j0 + k + 1] = torch.tensor(vals, dtype=torch.float64)
        return a

    colloc = design(x)            # (m, m): B_j(x_i)
    evalm = design(list(xi))      # (len(xi), m)
    return torch.linalg.solve(colloc.T, evalm.T).T   # evalm @ colloc^-1


def resize_rel_pos_table(table, dst_patch_shape, num_extra_tokens=3):
    """load_checkpoint's per-table interpolation, rendered without SciPy.

    table: (src_num_pos, H) with src_num_pos = S² + 3 (S = 2·src_grid - 1; the last 3 rows are the cls rows and
    are kept as they are). The destination has D = 2·dst_grid - 1 (square grids only; the official code raises
    NotImplementedError otherwise). For each head the S x S block z (float32 → float64) is interpolated with
    SciPy's interp2d(x, y, z, kind='cubic') at dx = dy = arange(-(D//2), D//2 + 0.1, 1), x = y = the
    geometric-progression offsets; interp2d on a full grid is FITPACK regrid_smth (s = 0, kx = ky = 3) evaluated
    by bispev, i.e. the tensor-product not-a-knot interpolating spline, which is separable:
    out = M z Mᵀ with M = cubic_interpolation_matrix(x, dx). The result is cast to float32 (torch.Tensor of the
    float64 array) and the 3 extra rows appended. Returns the table unchanged when the sizes agree."""
    hp, wp = (dst_patch_shape, dst_patch_shape) if isinstance(dst_patch_shape, int) else dst_patch_shape
    if hp != wp:
        raise NotImplementedError("the official interpolation handles square grids only")
    src_num_pos, num_heads = table.shape
    dst_num_pos = (2 * hp - 1) * (2 * wp - 1) + num_extra_tokens
    src_size = int((src_num_pos - num_extra_tokens) ** 0.5)
    dst_size = int((dst_num_pos - num_extra_tokens) ** 0.5)
    if src_size == dst_size:
        return table
    extra = table[-num_extra_tokens:, :]
    body = table[:-num_extra_tokens, :]
    x = geometric_progression_coordinates(src_size, dst_size)
    t = dst_size // 2.0
    dx = np.arange(-t, t + 0.1, 1.0)
    m = cubic_interpolation_matrix(x, dx)
    heads = []
    for h in range(num_heads):
        z = body[:, h].reshape(src_size, src_size).float().double()
        heads.append((m @ z @ m.T).float().reshape(-1, 1))
    return torch.cat([torch.cat(heads, dim=-1), extra.float()], dim=0)


def count_params(module):
    return sum(p.numel() for p in module.parameters())


if __name__ == "__main__":
    # Smoke check of the shapes on a small model (a 10x8 patch grid).
    torch.manual_seed(0)
    model = SegmentationHeads(embed_dim=32, channels=16, num_classes=7, aux_channels=8).eval()
    feats = [torch.randn(2, 32, 10, 8) for _ in range(4)]
    with torch.no_grad():
        levels, dec, aux = model(feats)
    print([tuple(v.shape) for v in levels], tuple(dec.shape), tuple(aux.shape), count_params(model))
    assert math.isfinite(float(dec.sum()))

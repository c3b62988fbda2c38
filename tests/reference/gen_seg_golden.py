#!/usr/bin/env python3
"""Golden fixtures for beitv2's semantic segmentation (UperNet on the BEiT v2 pyramid), from
tests/reference/seg_ref.py (plain-PyTorch renderings of the official beit2/semantic_segmentation backbone pyramid,
mmseg 0.11's UPerHead / FCNHead / loss / slide inference / metrics, and the official rel-pos table
interpolation). docs/segmentation.md describes the modules and every key below.

Writes into --out-dir (default tests/data/golden):

seg_tiny_heads.safetensors — SegmentationHeads (pyramid `backbone.fpn*` + `decode_head` UPerHead +
  `auxiliary_head` FCNHead) at D 8, channels 6, aux channels 4, 5 classes, batch 2, a 5x4 patch grid
  (pyramid 20x16, 10x8, 5x4, 2x2: odd max-pool floor and adaptive pools larger than their input included):
    param.<name>                 every state-dict entry by official name; weights perturbed and BN running
                                 statistics randomised (num_batches_tracked = 3)
    input.feature.<i>            (2, 8, 5, 4) the four block-output maps (i = 0..3)
    label                        (2, 80, 64) uint8 ground truth at image size (16 x the grid), 255 = ignore,
                                 class 4 absent
    eval.level.<i>, eval.decode_logits (2, 5, 20, 16), eval.aux_logits (2, 5, 5, 4)   model.eval()
    train.dropout_mask.decode (2, 6, 1, 1), train.dropout_mask.aux (2, 4, 1, 1)
                                 the Dropout2d(0.1) draws used in train mode (0 or 1/0.9; multiply the feature
                                 before conv_seg)
    train.level.<i>, train.decode_logits, train.aux_logits           model.train() (batch statistics)
    train.loss.decode, train.loss.aux, train.loss.total
                                 mmseg 0.11 losses: logits resized bilinearly to the label size, CE with ignore
                                 255 averaged over ALL pixels; aux × 0.4; total = decode + aux
    train.grad.input.feature.<i>, train.grad.param.<name>   d(total)/d(·) (parameters only)
    train.buffer.<name>          BN running_mean / running_var / num_batches_tracked after that train forward
seg_metrics.safetensors — mmseg 0.11 intersect_and_union / eval_metrics, 5 classes, ignore 255, cases
  `plain` and `reduce_zero_label`, 3 images each of different sizes:
    <case>.pred.<j>, <case>.label.<j>          uint8 maps
    <case>.image.<j>.area_{intersect,union,pred_label,label}   int64 (5,)
    <case>.area_{intersect,union,pred_label,label}             float64 (5,) totals over the set
    <case>.IoU, <case>.Acc                     float64 (5,) with NaN; <case>.aAcc, .mIoU, .mAcc float64 scalars
  In both cases one class is absent from ground truth and prediction (IoU and Acc NaN), one is predicted but
  absent from ground truth (IoU 0, Acc NaN), one is in the ground truth but never predicted (IoU 0, Acc 0), and
  predictions at ignored pixels include a class predicted nowhere else.
seg_rel_pos_resize.safetensors — beit2/semantic_segmentation/mmcv_custom/checkpoint.py's interpolation:
    table14 (732, 2) random; table32 (3972, 2) and table16 (964, 2) its resize to 32x32 and 16x16 grids
    coords14_32, coords14_16 float64 (27,): the geometric-progression source offsets
seg_slide_windows.safetensors — mmseg 0.11 slide_inference windows (crop 512, stride 341):
    windows.<H>x<W> int64 (n, 4) rows (y1, y2, x1, x2), row-major over the grid
seg_photometric.safetensors — mmseg 0.11 PhotoMetricDistortion with explicit draws (cv2's uint8 HSV, as mmcv):
    input (13, 11, 3) uint8 RGB (random, with pure black, white and grey pixels); for case j:
    case.<j>.draw float64 (5,) = [brightness, contrast_first, contrast, saturation, hue], NaN = step skipped
    case.<j>.output (13, 11, 3) uint8 RGB (the reference runs on BGR, as mmseg does, and is converted back)

The rel-pos result is bit-identical to the official SciPy interp2d(kind='cubic') (checked with SciPy 1.13.1, the
last release that has interp2d); see seg_ref.resize_rel_pos_table for why no SciPy is needed.

Run in the reference environment:
  ~/.cache/beitv2/ref-env/bin/python tests/reference/gen_seg_golden.py --out-dir tests/data/golden
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seg_ref  # noqa: E402

HEADS_CFG = dict(embed_dim=8, channels=6, num_classes=5, aux_channels=4, pool_scales=[1, 2, 3, 6],
                 dropout_ratio=0.1, aux_in_index=2, aux_loss_weight=0.4, batch=2, grid=[5, 4], patch_size=16,
                 ignore_index=255, align_corners=False)
METRIC_CLASSES = 5
# (brightness, contrast_first, contrast, saturation, hue); None = that step skipped.
PHOTO_DRAWS = [(None, False, None, None, None), (25.7, False, None, None, None), (-31.2, True, None, None, None),
               (None, True, 1.37, None, None), (None, False, 0.61, None, None), (None, False, None, 1.45, None),
               (None, False, None, 0.52, None), (None, False, None, None, 17), (None, False, None, None, -18),
               (12.3, True, 1.21, 0.77, -5), (-8.9, False, 0.83, 1.33, 9)]
SLIDE_SIZES = [(512, 512), (512, 683), (683, 512), (512, 2048), (300, 700), (853, 1280)]


def metadata(**extra):
    meta = {"generator": "tests/reference/gen_seg_golden.py", "torch": torch.__version__,
            "numpy": np.__version__}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return meta


def save(out_dir, name, tensors, meta):
    path = os.path.join(out_dir, name)
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, path, metadata=meta)
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


def randomise(model, gen):
    """Perturb every parameter and BN buffer so that nothing sits at its init value (and the ReLUs see both
    signs)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bn.weight") or name.endswith("fpn1.1.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("conv_seg.weight"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
                m.num_batches_tracked.fill_(3)


def dropout_mask(shape, p, gen):
    keep = (torch.rand(shape, generator=gen) >= p).float()
    keep.view(-1)[0] = 0.0   # at least one dropped channel
    return keep / (1.0 - p)


def make_heads_fixture(out_dir):
    c = HEADS_CFG
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    model = seg_ref.SegmentationHeads(c["embed_dim"], c["channels"], c["num_classes"], c["aux_channels"],
                                      tuple(c["pool_scales"]), c["dropout_ratio"], c["aux_in_index"],
                                      c["aux_loss_weight"])
    randomise(model, gen)
    b, (hp, wp), d = c["batch"], c["grid"], c["embed_dim"]
    feats = [torch.randn(b, d, hp, wp, generator=gen) for _ in range(4)]
    h_img, w_img = hp * c["patch_size"], wp * c["patch_size"]
    label = torch.randint(0, c["num_classes"] - 1, (b, h_img, w_img), generator=gen)   # class K-1 absent
    label[torch.rand(label.shape, generator=gen) < 0.1] = c["ignore_index"]
    label[:, :8, :8] = c["ignore_index"]   # an ignored block too (as padding leaves)

    out = {f"param.{k}": v.clone() for k, v in model.state_dict().items()}
    out.update({f"input.feature.{i}": f for i, f in enumerate(feats)})
    out["label"] = label.to(torch.uint8)

    model.eval()
    with torch.no_grad():
        levels, dec, aux = model(feats)
    out.update({f"eval.level.{i}": v for i, v in enumerate(levels)})
    out["eval.decode_logits"], out["eval.aux_logits"] = dec, aux

    model.train()
    model.decode_head.dropout_mask = dropout_mask((b, c["channels"], 1, 1), c["dropout_ratio"], gen)
    model.auxiliary_head.dropout_mask = dropout_mask((b, c["aux_channels"], 1, 1), c["dropout_ratio"], gen)
    out["train.dropout_mask.decode"] = model.decode_head.dropout_mask
    out["train.dropout_mask.aux"] = model.auxiliary_head.dropout_mask
    inputs = [f.clone().requires_grad_(True) for f in feats]
    levels, dec, aux = model(inputs)
    losses = model.losses(dec, aux, label)
    total = losses["decode.loss_seg"] + losses["aux.loss_seg"]
    total.backward()
    out.update({f"train.level.{i}": v.detach() for i, v in enumerate(levels)})
    out["train.decode_logits"], out["train.aux_logits"] = dec.detach(), aux.detach()
    out["train.loss.decode"] = losses["decode.loss_seg"].detach()
    out["train.loss.aux"] = losses["aux.loss_seg"].detach()
    out["train.loss.total"] = total.detach()
    out.update({f"train.grad.input.feature.{i}": x.grad for i, x in enumerate(inputs)})
    out.update({f"train.grad.param.{k}": p.grad for k, p in model.named_parameters()})
    out.update({f"train.buffer.{k}": v.clone() for k, v in model.named_buffers()})
    save(out_dir, "seg_tiny_heads.safetensors", out, metadata(config=c))


def metric_case(rng, reduce_zero):
    """Three (pred, label) pairs. Ground truth uses classes 0..2 (after reduce_zero_label), predictions 0, 1, 3
    outside ignore and 4 only at ignored pixels: class 2 missed (IoU 0, Acc 0), 3 spurious (IoU 0, Acc NaN),
    4 absent (NaN, NaN)."""
    preds, labels = [], []
    for h, w in [(7, 9), (6, 5), (4, 11)]:
        gt = rng.integers(0, 3, size=(h, w))
        pred = np.where(rng.random((h, w)) < 0.7, gt, rng.integers(0, 4, size=(h, w)))
        pred[pred == 2] = rng.choice([0, 1, 3], size=int((pred == 2).sum()))
        ignore = rng.random((h, w)) < 0.15
        pred[ignore] = 4
        if reduce_zero:
            stored = gt + 1
            stored[ignore] = 0                       # ADE20K's "other" label → ignored
            stored[rng.random((h, w)) < 0.05] = 255  # and padding-style 255 stays ignored
            pred[stored == 255] = 4
        else:
            stored = gt.copy()
            stored[ignore] = 255
        preds.append(pred.astype(np.uint8))
        labels.append(stored.astype(np.uint8))
    return preds, labels


def make_metrics_fixture(out_dir):
    rng = np.random.default_rng(7)
    out = {}
    for case, reduce_zero in [("plain", False), ("reduce_zero_label", True)]:
        preds, labels = metric_case(rng, reduce_zero)
        for j, (p, l) in enumerate(zip(preds, labels)):
            out[f"{case}.pred.{j}"] = torch.from_numpy(p)
            out[f"{case}.label.{j}"] = torch.from_numpy(l)
            areas = seg_ref.intersect_and_union(p, l, METRIC_CLASSES, 255, None, reduce_zero)
            for name, a in zip(("intersect", "union", "pred_label", "label"), areas):
                out[f"{case}.image.{j}.area_{name}"] = torch.from_numpy(np.asarray(a, dtype=np.int64))
        res = seg_ref.eval_metrics(preds, labels, METRIC_CLASSES, 255, None, reduce_zero)
        for k, v in res.items():
            out[f"{case}.{k}"] = torch.tensor(np.asarray(v, dtype=np.float64))
        iou, acc = res["IoU"], res["Acc"]
        assert np.isnan(iou[4]) and np.isnan(acc[4]) and iou[3] == 0 and np.isnan(acc[3]) and acc[2] == 0, res
        print(case, {k: (np.round(v, 4).tolist() if np.ndim(v) else round(float(v), 4)) for k, v in res.items()
                     if k in ("aAcc", "IoU", "Acc", "mIoU", "mAcc")})
    save(out_dir, "seg_metrics.safetensors", out,
         metadata(num_classes=METRIC_CLASSES, ignore_index=255, cases=["plain", "reduce_zero_label"]))


def make_rel_pos_fixture(out_dir):
    gen = torch.Generator().manual_seed(14)
    table14 = torch.randn(27 * 27 + 3, 2, generator=gen)
    out = {"table14": table14,
           "table32": seg_ref.resize_rel_pos_table(table14, 32),
           "table16": seg_ref.resize_rel_pos_table(table14, 16),
           "coords14_32": torch.tensor(seg_ref.geometric_progression_coordinates(27, 63), dtype=torch.float64),
           "coords14_16": torch.tensor(seg_ref.geometric_progression_coordinates(27, 31), dtype=torch.float64)}
    save(out_dir, "seg_rel_pos_resize.safetensors", out,
         metadata(src_grid=14, dst_grids=[32, 16], num_extra_tokens=3,
                  method="FITPACK s=0 bicubic (== SciPy interp2d kind=cubic), rendered in torch float64"))


def make_slide_fixture(out_dir):
    out = {f"windows.{h}x{w}": torch.tensor(seg_ref.slide_windows(h, w), dtype=torch.int64)
           for h, w in SLIDE_SIZES}
    save(out_dir, "seg_slide_windows.safetensors", out, metadata(crop=[512, 512], stride=[341, 341]))


def make_photometric_fixture(out_dir):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(13, 11, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1], rgb[0, 2], rgb[1, 0] = 0, 255, 128, (255, 0, 0)
    out = {"input": torch.from_numpy(rgb.copy())}
    for j, (b, first, c, s, h) in enumerate(PHOTO_DRAWS):
        draw = {"brightness": b, "contrast_first": first, "contrast": c, "saturation": s, "hue": h}
        bgr = seg_ref.photo_metric_distortion(np.ascontiguousarray(rgb[:, :, ::-1]), draw)
        out[f"case.{j}.output"] = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1]))
        nan = float("nan")
        out[f"case.{j}.draw"] = torch.tensor([nan if b is None else b, float(first), nan if c is None else c,
                                              nan if s is None else s, nan if h is None else float(h)],
                                             dtype=torch.float64)
    import cv2
    save(out_dir, "seg_photometric.safetensors", out, metadata(cv2=cv2.__version__, cases=len(PHOTO_DRAWS)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                                                      "golden"))
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    torch.set_num_threads(1)
    make_heads_fixture(a.out_dir)
    make_metrics_fixture(a.out_dir)
    make_rel_pos_fixture(a.out_dir)
    make_slide_fixture(a.out_dir)
    make_photometric_fixture(a.out_dir)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Builds a small semantic-segmentation dataset from Debian's Fashion-MNIST, written in the ADE20K layout.

  python3 tools/prepare_fmnist_scenes.py OUT_DIR [--size 64] [--train 2000] [--val 500] [--seed 0]
      [--style textured|plain] [--items 2 4] [--scale 0.35 0.65] [--ignore-edges] [--overwrite]
      [--source /usr/share/datasets/fashion-mnist]

Each scene is a --size x --size RGB image. --style textured (the default): a textured background (smooth colour noise + a sinusoidal stripe
pattern at a random angle, frequency and phase + a little pixel noise) with 2..4 (--items) Fashion-MNIST items
pasted on it. An item is a 28x28 grey image scaled bilinearly to a random side of --scale x size pixels, tinted
with a random colour (rgb = colour x (0.35 + 0.65 x grey)) and placed at a random position inside the canvas;
its silhouette is the hole-filled set of pixels with grey > 0.08. Items are painted in order, so a later item
covers an earlier one, in the image and in the mask alike. --style plain keeps Fashion-MNIST's own look, the
domain the main job pretrains on: grey items (rgb = grey, no tint) on a black background. Training scenes use
items of Fashion-MNIST's training split, validation scenes items of its test split.

Files (the ADE20K layout that mmseg's ADE20KDataset and beitv2's ADE20K reader expect):
  OUT_DIR/images/training/fmnist_scene_<NNNNNN>.png        8-bit RGB
  OUT_DIR/annotations/training/fmnist_scene_<NNNNNN>.png   8-bit grey, same stem
  OUT_DIR/images/validation/..., OUT_DIR/annotations/validation/...
  OUT_DIR/scenes.json   the options used, the class list and the label scheme
Images are PNG (not JPEG as in ADE20K) so that only numpy and the standard library are needed; a reader should
pair an image with the annotation of the same stem whatever the image extension.

Label scheme — the ADE20K convention, so the same reader with reduce_zero_label serves both:
  mask value 0      ignore ("other" in ADE20K). Used only with --ignore-edges: the one-pixel inner outline of
                    every visible item region (where the class changes), to exercise the ignore path.
  mask value 1      background
  mask value k + 2  Fashion-MNIST label k (0 T-shirt/top ... 9 Ankle boot)
After reduce_zero_label (0 → 255 ignore, v → v - 1): 11 classes, 0 = background, 1..10 = Fashion-MNIST
labels 0..9. Train with num_classes 11, ignore index 255, reduce_zero_label on.

Deterministic: scene i of a split depends only on (--seed, split, i) and the options, not on --train / --val,
so a larger run extends a smaller one. Files are written under temporary names and renamed. An OUT_DIR made
with other options is refused unless --overwrite (which removes its images/ and annotations/ first).
numpy + the standard library only (PNG written with zlib; Fashion-MNIST read as tools/prepare_fashion_mnist.py
reads it).
"""
import argparse
import json
import os
import shutil
import struct
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_fashion_mnist import CLASSES, read_split  # noqa: E402

SCENE_SPLITS = {"training": ("train", 1), "validation": ("val", 2)}   # ADE20K folder → (FMNIST split, rng id)
CLASS_NAMES = ["background"] + CLASSES
IGNORE_VALUE, BACKGROUND_VALUE, FIRST_ITEM_VALUE = 0, 1, 2
SILHOUETTE_THRESHOLD = 0.08


def png(width, height, pixels, channels):
    """A minimal 8-bit PNG, grey (channels 1) or RGB (channels 3), filter type 0 on every row."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    stride = width * channels
    raw = b"".join(b"\x00" + pixels[r * stride:(r + 1) * stride] for r in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_atomic(path, data):
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def resize_matrix(src, dst):
    """(dst, src) bilinear interpolation weights, pixel centres aligned (align_corners=False), edges clamped."""
    pos = (np.arange(dst) + 0.5) * src / dst - 0.5
    pos = np.clip(pos, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    w = pos - lo
    m = np.zeros((dst, src))
    m[np.arange(dst), lo] += 1 - w
    m[np.arange(dst), hi] += w
    return m


def fill_holes(mask):
    """Pixels not reachable from the border through non-mask pixels (4-connectivity) join the mask."""
    outside = np.zeros_like(mask)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = ~mask[0, :], ~mask[-1, :], ~mask[:, 0], ~mask[:, -1]
    while True:
        grown = outside.copy()
        grown[1:, :] |= outside[:-1, :]
        grown[:-1, :] |= outside[1:, :]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= ~mask
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


def background(rng, size):
    """Smooth colour noise (a random 5x5 RGB grid upsampled) + stripes + a little pixel noise, in [0, 1]."""
    grid = rng.uniform(0.15, 0.85, size=(5, 5, 3))
    m = resize_matrix(5, size)
    smooth = np.einsum("ya,abc,xb->yxc", m, grid, m)
    yy, xx = np.mgrid[0:size, 0:size]
    theta = rng.uniform(0, np.pi)
    freq = rng.uniform(2.0, 6.0) / size        # cycles per pixel: 2..6 stripes across the canvas
    stripes = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
    tint = rng.uniform(-1, 1, size=3)
    img = smooth + 0.12 * stripes[..., None] * tint + rng.normal(0, 0.02, size=(size, size, 3))
    return np.clip(img, 0, 1)


def outline(mask_values):
    """Pixels whose 4-neighbourhood holds another value (both sides of every class change)."""
    v = mask_values
    edge = np.zeros(v.shape, dtype=bool)
    edge[1:, :] |= v[1:, :] != v[:-1, :]
    edge[:-1, :] |= v[:-1, :] != v[1:, :]
    edge[:, 1:] |= v[:, 1:] != v[:, :-1]
    edge[:, :-1] |= v[:, :-1] != v[:, 1:]
    return edge


def make_scene(rng, items, labels, a):
    """One (image uint8 (S, S, 3), mask uint8 (S, S)) pair."""
    s = a.size
    img = background(rng, s) if a.style == "textured" else np.zeros((s, s, 3))
    mask = np.full((s, s), BACKGROUND_VALUE, dtype=np.uint8)
    n_items = int(rng.integers(a.items[0], a.items[1] + 1))
    for idx in rng.integers(0, len(items), size=n_items):
        side = int(round(rng.uniform(a.scale[0], a.scale[1]) * s))
        side = max(4, min(side, s))
        m = resize_matrix(28, side)
        grey = np.clip(m @ (items[idx].astype(np.float64) / 255.0) @ m.T, 0, 1)
        if rng.random() < 0.5:
            grey = grey[:, ::-1]
        sil = fill_holes(grey > SILHOUETTE_THRESHOLD)
        if a.style == "textured":
            colour = rng.uniform(0.1, 1.0, size=3)
            rgb = colour * (0.35 + 0.65 * grey[..., None])
        else:
            rgb = np.repeat(grey[..., None], 3, axis=2)
        y0, x0 = int(rng.integers(0, s - side + 1)), int(rng.integers(0, s - side + 1))
        region = img[y0:y0 + side, x0:x0 + side]
        region[sil] = rgb[sil]
        mask[y0:y0 + side, x0:x0 + side][sil] = FIRST_ITEM_VALUE + int(labels[idx])
    if a.ignore_edges:
        mask[outline(mask) & (mask != BACKGROUND_VALUE)] = IGNORE_VALUE
    return (img * 255.0 + 0.5).astype(np.uint8), mask


def load_split(source, split):
    (n, h, w), pixels, labels = read_split(source, split)
    items = np.frombuffer(pixels, dtype=np.uint8).reshape(n, h, w)
    return items, np.frombuffer(labels, dtype=np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--size", type=int, default=64, help="scene side in pixels")
    ap.add_argument("--train", type=int, default=2000, help="training scenes")
    ap.add_argument("--val", type=int, default=500, help="validation scenes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--style", choices=["textured", "plain"], default="textured",
                    help="textured: tinted items on coloured textures; plain: grey items on black (FMNIST's look)")
    ap.add_argument("--items", type=int, nargs=2, default=[2, 4], metavar=("MIN", "MAX"),
                    help="items per scene (inclusive range)")
    ap.add_argument("--scale", type=float, nargs=2, default=[0.35, 0.65], metavar=("MIN", "MAX"),
                    help="item side as a fraction of the scene side")
    ap.add_argument("--ignore-edges", action="store_true",
                    help="mark the one-pixel outline of item regions 0 (ignore)")
    ap.add_argument("--overwrite", action="store_true", help="replace an OUT_DIR made with other options")
    ap.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    if a.size < 8 or not (1 <= a.items[0] <= a.items[1]) or not (0 < a.scale[0] <= a.scale[1] <= 1):
        sys.exit("bad --size / --items / --scale")

    options = {"size": a.size, "style": a.style, "seed": a.seed, "items": a.items, "scale": a.scale, "ignore_edges": a.ignore_edges}
    info = {"generator": "tools/prepare_fmnist_scenes.py", "options": options,
            "counts": {"training": a.train, "validation": a.val},
            "classes_after_reduce_zero_label": CLASS_NAMES, "num_classes": len(CLASS_NAMES),
            "mask_values": {"0": "ignore", "1": "background", "k+2": "Fashion-MNIST label k"},
            "reduce_zero_label": True, "ignore_index": 255}
    meta_path = os.path.join(a.out_dir, "scenes.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            old = json.load(f)
        old_options = dict(old.get("options", {}))
        old_options.setdefault("style", "textured")   # scenes.json written before --style existed
        if old_options != options:
            if not a.overwrite:
                sys.exit(f"{a.out_dir} holds scenes made with {old.get('options')}; use another folder or "
                         f"--overwrite")
            for sub in ("images", "annotations"):
                shutil.rmtree(os.path.join(a.out_dir, sub), ignore_errors=True)
    os.makedirs(a.out_dir, exist_ok=True)

    for folder, (split, split_id) in SCENE_SPLITS.items():
        count = a.train if folder == "training" else a.val
        items, labels = load_split(a.source, split)
        img_dir = os.path.join(a.out_dir, "images", folder)
        ann_dir = os.path.join(a.out_dir, "annotations", folder)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        hist = np.zeros(256, dtype=np.int64)
        for i in range(count):
            rng = np.random.default_rng([a.seed, split_id, i])
            img, mask = make_scene(rng, items, labels, a)
            stem = f"fmnist_scene_{i:06d}.png"
            write_atomic(os.path.join(img_dir, stem), png(a.size, a.size, img.tobytes(), 3))
            write_atomic(os.path.join(ann_dir, stem), png(a.size, a.size, mask.tobytes(), 1))
            hist += np.bincount(mask.ravel(), minlength=256)
        # remove scenes beyond the count left by an earlier, larger run
        stale = [f for f in os.listdir(img_dir) if f.startswith("fmnist_scene_") and f.endswith(".png")
                 and int(f[13:19]) >= count]
        for f in stale:
            os.remove(os.path.join(img_dir, f))
            if os.path.exists(os.path.join(ann_dir, f)):
                os.remove(os.path.join(ann_dir, f))
        share = {str(int(v)): round(float(hist[v]) / max(1.0, float(hist.sum())), 4) for v in np.nonzero(hist)[0]}
        info.setdefault("mask_value_share", {})[folder] = share
        print(f"{folder}: {count} scenes of {a.size}x{a.size} under {img_dir} and {ann_dir}; "
              f"mask value shares {share}")
    write_atomic(meta_path, (json.dumps(info, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Turns Debian's Fashion-MNIST (package dataset-fashion-mnist) into train/ and val/ ImageFolders of PNGs.

  python3 tools/prepare_fashion_mnist.py OUT_DIR [--limit N] [--source /usr/share/datasets/fashion-mnist]

Writes OUT_DIR/train/<k>_<class>/<index>.png (60,000 images) and OUT_DIR/val/<k>_<class>/<index>.png (the
10,000 test images), 28x28 8-bit grey. Class folders are prefixed with the Fashion-MNIST label k
("0_T-shirt_top", ..., "9_Ankle_boot"), so ImageFolder's sorted folder names give back the original labels.
--limit N keeps the first N images of each class per split (small subsets for tests and demos).

Idempotent: an existing PNG is left alone (files are written to a temporary name and renamed, so an interrupted
run never leaves a partial PNG), and a run prints how many files it wrote and skipped. Standard library only
(gzip, zlib, struct), so any python3 runs it.
"""
import argparse
import gzip
import os
import struct
import sys
import zlib

CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle_boot"]
SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path, expect_magic):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expect_magic:
        sys.exit(f"{path}: bad IDX magic {magic:#x} (expected {expect_magic:#x})")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def read_split(source, split):
    """One split of the Debian files: ((n, height, width), pixel bytes, label bytes); exits naming a missing or
    inconsistent file."""
    img_file, lbl_file = SPLITS[split]
    img_path, lbl_path = os.path.join(source, img_file), os.path.join(source, lbl_file)
    for p in (img_path, lbl_path):
        if not os.path.isfile(p):
            sys.exit(f"{p}: not found (install the Debian package dataset-fashion-mnist)")
    (n, h, w), pixels = read_idx(img_path, 0x00000803)
    (n_labels,), labels = read_idx(lbl_path, 0x00000801)
    if n != n_labels:
        sys.exit(f"{img_path}: {n} images but {lbl_path} has {n_labels} labels")
    return (n, h, w), pixels, labels


def png_grey(width, height, pixels):
    """A minimal 8-bit greyscale PNG (filter type 0 on every row)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + pixels[r * width:(r + 1) * width] for r in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--limit", type=int, default=0, help="images per class and split (0 = all)")
    ap.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    for split in SPLITS:
        (n, h, w), pixels, labels = read_split(a.source, split)
        written = skipped = 0
        per_class = [0] * len(CLASSES)
        for i in range(n):
            k = labels[i]
            if a.limit and per_class[k] >= a.limit:
                continue
            per_class[k] += 1
            folder = os.path.join(a.out_dir, split, f"{k}_{CLASSES[k]}")
            path = os.path.join(folder, f"{i:05d}.png")
            if os.path.exists(path):
                skipped += 1
                continue
            os.makedirs(folder, exist_ok=True)
            tmp = path + f".tmp{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(png_grey(w, h, pixels[i * h * w:(i + 1) * h * w]))
            os.replace(tmp, path)
            written += 1
        print(f"{split}: {sum(per_class)} images in {len(CLASSES)} classes under "
              f"{os.path.join(a.out_dir, split)} ({written} written, {skipped} already there)")


if __name__ == "__main__":
    main()

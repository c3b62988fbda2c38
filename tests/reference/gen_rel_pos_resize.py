#!/usr/bin/env python3
"""Golden fixture for the relative position table resize of fine-tuning (beitv2 resize_rel_pos_table).

The official code (microsoft/unilm beit2/run_class_finetuning.py, the `--finetune` block) places the source
offsets at geometric-progression coordinates and calls SciPy's interp2d(x, y, z, kind='cubic') per head. SciPy
>= 1.14 removed interp2d; on a full grid it was FITPACK's regrid_smth (s = 0, kx = ky = 3) evaluated by bispev,
which is exactly what RectBivariateSpline(s=0) does, so that renders the official numbers here.

  python3 tests/reference/gen_rel_pos_resize.py   # needs numpy + scipy (Debian python3-scipy)

Writes tests/data/golden/rel_pos_resize.safetensors: `table14` (732, 2) float32 (a 14x14 window's table,
random), `table16` (963, 2) and `table32` (3972, 2): the official resize to 16x16 and 32x32 windows.
The safetensors file is written by hand (no safetensors package needed).
"""
import json
import os
import struct

import numpy as np
import scipy
from scipy import interpolate

OUT = os.path.join(os.path.dirname(__file__), "..", "data", "golden", "rel_pos_resize.safetensors")


def official_coordinates(src_size, dst_size):
    """The source offsets: bisection for the ratio q, then cumulative q^i spacings (run_class_finetuning.py)."""
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


def resize(table, dst_grid):
    extra = 3
    src_size = int((table.shape[0] - extra) ** 0.5)
    dst_size = 2 * dst_grid - 1
    x = np.array(official_coordinates(src_size, dst_size), dtype=np.float64)
    t = dst_size // 2.0
    dx = np.arange(-t, t + 0.1, 1.0)
    heads = []
    for h in range(table.shape[1]):
        z = table[:-extra, h].reshape(src_size, src_size).astype(np.float32)
        # interp2d(x, y, z)(dx, dy) with z[y, x] == RectBivariateSpline(y, x, z)(dy, dx) (x == y here).
        f = interpolate.RectBivariateSpline(x, x, z, kx=3, ky=3, s=0)
        heads.append(f(dx, dx).astype(np.float32).reshape(-1, 1))
    return np.concatenate([np.concatenate(heads, axis=1), table[-extra:]], axis=0)


def write_safetensors(path, tensors, metadata):
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    rng = np.random.default_rng(0)
    table14 = rng.standard_normal((27 * 27 + 3, 2)).astype(np.float32)
    out = {"table14": table14, "table16": resize(table14, 16), "table32": resize(table14, 32)}
    write_safetensors(OUT, out, {"generator": "tests/reference/gen_rel_pos_resize.py",
                                 "scipy": scipy.__version__, "numpy": np.__version__})
    print({k: v.shape for k, v in out.items()}, "->", os.path.normpath(OUT))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference block-wise masking (docs/reference.md §3.4): a plain-Python rendering of the official BEiT v2 generator
(microsoft/unilm beit2/masking_generator.py, MaskingGenerator), used by tests/unit/test_data.cpp to compare
statistics with the C++ generator (data/masking.h).

Algorithm (as the official class): while fewer than `num` cells are masked, try (up to 10 times) a rectangle of
area ~ U(min_patches, budget) (Python's random.uniform, so a budget below the minimum samples [budget, min]) and
aspect exp(U(log min_aspect, log max_aspect)); h = round(sqrt(area*aspect)), w = round(sqrt(area/aspect)); it must
satisfy w < W and h < H; it is placed at top ~ randint(0, H-h), left ~ randint(0, W-w) and accepted when the
number of newly masked cells is in (0, budget]. An outer step that adds nothing ends the loop. Finally exactly
`num` cells are kept: a uniform subset of surplus masked cells is unmasked, or of unmasked cells masked (the
official numpy.random.choice(n, k, replace=False); random.sample has the same distribution). Only the standard
library is used, so any python3 runs it.

  python3 masking_ref.py --height 14 --width 14 --num 75 --min-patches 16 --draws 10000 --seed 0 --out stats.json

Writes JSON: draws, position_counts (H*W, row-major: how often each cell was masked), blocks (per draw: number of
rectangles that added cells), masked_by_blocks (per draw: cells masked before the final adjustment),
exact (number of draws with exactly `num` masked).
"""
import argparse
import json
import math
import random


def generate(rng, height, width, num, min_patches, max_patches, log_aspect):
    mask = [[0] * width for _ in range(height)]

    def add_block(budget):
        added = 0
        for _ in range(10):
            area = rng.uniform(min_patches, budget)
            aspect = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < width and h < height:
                top = rng.randint(0, height - h)
                left = rng.randint(0, width - w)
                covered = sum(mask[i][j] for i in range(top, top + h) for j in range(left, left + w))
                if 0 < h * w - covered <= budget:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if not mask[i][j]:
                                mask[i][j] = 1
                                added += 1
                if added > 0:
                    break
        return added

    count = 0
    blocks = 0
    while count < num:
        budget = min(num - count, max_patches)
        added = add_block(budget)
        if added == 0:
            break
        count += added
        blocks += 1
    by_blocks = count
    if count != num:
        want = 1 if count > num else 0  # cells to flip: surplus masked ones, or unmasked ones
        cells = [(i, j) for i in range(height) for j in range(width) if mask[i][j] == want]
        for i, j in rng.sample(cells, abs(count - num)):
            mask[i][j] = 1 - want
    return mask, blocks, by_blocks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--height", type=int, default=14)
    ap.add_argument("--width", type=int, default=14)
    ap.add_argument("--num", type=int, default=75)
    ap.add_argument("--min-patches", type=int, default=16)
    ap.add_argument("--max-patches", type=int, default=None)
    ap.add_argument("--min-aspect", type=float, default=0.3)
    ap.add_argument("--max-aspect", type=float, default=None)
    ap.add_argument("--draws", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    max_patches = a.num if a.max_patches is None else a.max_patches
    max_aspect = a.max_aspect or 1 / a.min_aspect
    log_aspect = (math.log(a.min_aspect), math.log(max_aspect))
    rng = random.Random(a.seed)
    counts = [0] * (a.height * a.width)
    blocks, by_blocks, exact = [], [], 0
    for _ in range(a.draws):
        mask, b, c = generate(rng, a.height, a.width, a.num, a.min_patches, max_patches, log_aspect)
        flat = [v for row in mask for v in row]
        exact += sum(flat) == a.num
        for k, v in enumerate(flat):
            counts[k] += v
        blocks.append(b)
        by_blocks.append(c)
    with open(a.out, "w") as f:
        json.dump({"generator": "tests/reference/masking_ref.py", "draws": a.draws, "position_counts": counts,
                   "blocks": blocks, "masked_by_blocks": by_blocks, "exact": exact}, f)


if __name__ == "__main__":
    main()

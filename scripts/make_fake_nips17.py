#!/usr/bin/env python
"""Write a tiny fake NIPS 2017 dev set (random PNGs + label CSV) for tests and demos.

Usage::

    python scripts/make_fake_nips17.py DIR [--n 4] [--size 299] [--seed 0]

Creates ``DIR/images/<ImageId>.png`` (random RGB noise, ``size x size``) and
``DIR/images.csv`` with the columns of the competition's ``dev_dataset.csv``:
ImageId, URL, x1, y1, x2, y2, TrueLabel, TargetClass, OriginalLandingURL, License, Author,
AuthorProfileURL. TrueLabel and TargetClass are 1-indexed over 1001 classes (0 = background,
never used), as in the real set; TargetClass differs from TrueLabel. The images carry no
class information: this is for checking loaders and shapes, not accuracy.

Needs numpy and Pillow only (not advlab). Deterministic for a given seed. Exit status 0 on
success, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

COLUMNS = ["ImageId", "URL", "x1", "y1", "x2", "y2", "TrueLabel", "TargetClass",
           "OriginalLandingURL", "License", "Author", "AuthorProfileURL"]


def make_fake_nips17(out_dir: str | Path, n: int = 4, size: int = 299,
                     seed: int = 0) -> list[dict[str, object]]:
    """Write the fake set into ``out_dir`` and return its CSV rows (1-indexed labels)."""
    from PIL import Image

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for i in range(n):
        image_id = f"{rng.integers(0, 2**63):016x}"[:16]
        true = int(rng.integers(1, 1001))  # 1..1000
        target = int(rng.integers(1, 1000))  # 1..999, shifted past true below
        if target >= true:
            target += 1
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{image_id}.png")
        rows.append({
            "ImageId": image_id, "URL": f"https://example.invalid/{i}.jpg",
            "x1": 0.0, "y1": 0.0, "x2": 1.0, "y2": 1.0,
            "TrueLabel": true, "TargetClass": target,
            "OriginalLandingURL": "", "License": "CC0 (random noise)",
            "Author": "make_fake_nips17", "AuthorProfileURL": "",
        })
    with open(out / "images.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="output folder (created if missing)")
    parser.add_argument("--n", type=int, default=4, help="number of images (default 4)")
    parser.add_argument("--size", type=int, default=299, help="image side (default 299)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 1:
        parser.error(f"--n and --size must be >= 1, got --n {args.n} --size {args.size}")
    make_fake_nips17(args.dir, n=args.n, size=args.size, seed=args.seed)
    print(f"wrote {args.n} images of {args.size}x{args.size} and images.csv to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

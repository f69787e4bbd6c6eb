"""Benchmark of the near-duplicate fingerprints and groups of an ISIC 2020-sized uint8 cache.

Writes a synthetic cache of ``--n`` photograph-like ``--size`` px images (smooth random scenes with
sensor noise) in the layout of :mod:`medattn.data.cache`, plants a copy of every 100th image onto
the next one (cropped 1.5 % per side, resized back), then times, on this machine:

* ``fingerprints_s``: :func:`medattn.data.duplicates.compute_fingerprints` read from the cache;
* ``search_s``: :func:`~medattn.data.duplicates.near_duplicate_pairs` + the groups;
* ``stored_s``: the fingerprints again, now from their store.

and checks that the planted pairs, and only they, are found. Usage::

    .venv/bin/python benchmarks/duplicates.py                  # 33,126 images at 224 px (~5 GB in a temp folder)
    .venv/bin/python benchmarks/duplicates.py --n 3000 --root /tmp/dups
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medattn.data.cache import cache_dir
from medattn.data.duplicates import compute_fingerprints, group_labels, near_duplicate_pairs

PLANT_EVERY = 100
CROP_PX = 3  # 1.5 % of 224 px per side


def write_cache(root: Path, n: int, size: int, seed: int = 0) -> tuple[pd.DataFrame, set[tuple[int, int]]]:
    """The synthetic ``isic2020`` cache under ``root``; its manifest and the planted row pairs."""
    folder = cache_dir(root, "isic2020", size)
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n, 512):
        b = min(512, n - start)
        img = F.interpolate(torch.randn(b, 3, 8, 8, generator=g), size=(size, size), mode="bicubic")
        img = 128 + 45 * img + 4 * torch.randn(b, 3, size, size, generator=g)
        arr[start : start + b] = img.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    planted = {(k, k + 1) for k in range(0, n - 1, PLANT_EVERY)}
    for k, copy in planted:
        src = torch.from_numpy(np.array(arr[k])).permute(2, 0, 1)[None].float()
        crop = src[..., CROP_PX : size - CROP_PX, CROP_PX : size - CROP_PX]
        out = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0]
        arr[copy] = out.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    arr.flush()
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    manifest = pd.DataFrame({"image_id": ids, "path": [str(root / "jpeg" / "train" / f"{i}.jpg") for i in ids]})
    manifest.to_csv(folder / "manifest.csv", index=False)
    return manifest, planted


def measure(root: Path, n: int, size: int) -> dict:
    """Write the cache, then time fingerprints, search and the stored fingerprints."""
    manifest, planted = write_cache(root, n, size)
    t0 = time.perf_counter()
    fps = compute_fingerprints(manifest, root, "isic2020")
    t1 = time.perf_counter()
    pairs = near_duplicate_pairs(fps)
    groups = group_labels(len(fps), pairs)
    t2 = time.perf_counter()
    compute_fingerprints(manifest, root, "isic2020")
    t3 = time.perf_counter()
    found = set(map(tuple, pairs.tolist()))
    return {
        "images": n,
        "img_size": size,
        "cpus": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
        "fingerprints_s": round(t1 - t0, 2),
        "search_s": round(t2 - t1, 2),
        "total_s": round(t2 - t0, 2),
        "stored_s": round(t3 - t2, 2),
        "groups": int(groups.max()),
        "planted_found": f"{len(planted & found)}/{len(planted)}",
        "false_pairs": len(found - planted),
    }


def main(argv: list[str] | None = None) -> None:
    """``python benchmarks/duplicates.py [--n N] [--size S] [--root DIR]``: prints one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=33126)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--root", default=None, help="keep the synthetic cache here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medattn-dups-") as tmp:
        print(json.dumps(measure(Path(args.root or tmp), args.n, args.size)))


if __name__ == "__main__":
    main()

"""The benchmark's inputs and clock: the synthetic data set in the ISIC 2020 on-disk format that
the pipeline measurements train on, batch feeders, and timed regions with CUDA synchronised
around them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], int]) -> float:
    """Seconds of ``fn()`` (which returns the number of images it processed) → images/s."""
    _sync(device)
    start = time.perf_counter()
    n = fn()
    _sync(device)
    return n / (time.perf_counter() - start)


def _repeat(batch: tuple[torch.Tensor, torch.Tensor], n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for _ in range(n):
        yield batch


def _cycle(loader: Iterable, n: int) -> Iterator:
    """``n`` batches from ``loader``, starting new epochs as needed."""
    return itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), n)


def write_synthetic_isic(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """A synthetic data set in the ISIC 2020 layout (``train.csv`` + ``jpeg/train/<id>.jpg``).

    Images are smooth colour fields with texture, JPEG-encoded at ``size`` (height, width), so
    decoding costs what real dermoscopy photos of that size cost.

    Args:
        root: folder to write.
        n: number of images (4 per patient, every third one melanoma).
        size: ``(height, width)`` of the JPEG files.
        seed: seed of the image content.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    folder = root / "jpeg" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    texture = rng.normal(0, 12, size=(h, w, 1))
    names = [f"ISIC_{k:07d}" for k in range(n)]
    for k, name in enumerate(names):
        small = rng.uniform(40, 220, size=(6, 8, 3)).astype(np.uint8)
        base = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), dtype=np.float64)
        img = np.clip(base + np.roll(texture, k * 7, axis=1), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{name}.jpg", quality=90)
    target = [int(k % 3 == 0) for k in range(n)]
    pd.DataFrame(
        {
            "image_name": names,
            "patient_id": [f"IP_{k // 4:05d}" for k in range(n)],
            "sex": "female",
            "age_approx": 50,
            "anatom_site_general_challenge": "torso",
            "diagnosis": ["melanoma" if t else "nevus" for t in target],
            "benign_malignant": ["malignant" if t else "benign" for t in target],
            "target": target,
        }
    ).to_csv(root / "train.csv", index=False)
    return root

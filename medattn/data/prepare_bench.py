"""How fast ``medattn data prepare`` is, measured as ratios in one run (``docs/performance.md``).

:func:`measure_prepare` writes synthetic high-resolution images in the real on-disk layouts
(ISIC 2020: 6000×4000 RGB JPEGs; MIMIC-CXR-JPG: 2500×3000 greyscale JPEGs; APTOS 2019: 3000×2000
RGB PNGs; sizes are width × height and configurable, so tests use small ones) and measures, for
each layout:

* ``serial_full_decode_img_s``: the previous prepare: full-resolution decoding and the resize, one
  image at a time on one core;
* ``prepare_img_s``: :func:`medattn.data.cache.prepare_cache` on every worker (reduced decoding);
* ``scaling``: ``prepare_cache`` with 1, 2, … workers, and each rate over ``N ×`` the 1-worker rate;
* ``cpu_ms_per_img``: CPU time per image of the serial baseline and of each prepare (workers
  included), which a busy machine disturbs much less than the wall-clock rates;
* ``files_img_s`` / ``files_full_img_s``: one image through the file path of a loader (decode +
  ``direct_resize`` transform, no cache) with reduced and with full decoding;
* ``mean_abs_diff`` / ``max_abs_diff``: reduced against full decoding after the resize (grey levels).

The images are smooth low-frequency structure with a dark lesion-like blob, thin lines and sensor
noise, so JPEG file sizes and the decoder differences are of the order of real photographs
(random-noise images would overstate both). Run it as ``python -m medattn.data.prepare_bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageChops, ImageDraw

from medattn import lazy
from medattn.data.base import load_index
from medattn.data.cache import available_cpus, cache_dir, compare_to_full, decode_chunk, prepare_cache
from medattn.data.io import FULL_DECODE
from medattn.data.loader import ImageDataset
from medattn.data.testing import write_fake_aptos, write_fake_isic, write_fake_mimic_jpg
from medattn.data.transforms import build_transform
from medattn.errors import ConfigError

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help

_NOISE_TILE = 256


@dataclass(frozen=True)
class Layout:
    """One synthetic data set of the benchmark.

    Attributes:
        dataset: registered data set name whose on-disk layout is written.
        size: image width × height in pixels.
        mode: ``RGB`` or ``L``.
        fmt: ``JPEG`` or ``PNG``.
        scale: how many images: ISIC patients (2 images each), MIMIC subjects (usable AP images
            vary per subject) or APTOS images.
    """

    dataset: str
    size: tuple[int, int]
    mode: str
    fmt: str
    scale: int


# Enough images that a prepare's fixed costs (reading the index, forking the pool, the last
# chunk's wait) weigh as little as in a real one of thousands: each layout takes about 1-2 s per
# worker count; with 16 ISIC-like images the 2-worker efficiency measured 0.80, with 32 it was 0.87-0.90.
DEFAULT_LAYOUTS: dict[str, Layout] = {
    "isic_jpeg": Layout("isic2020", (6000, 4000), "RGB", "JPEG", 16),
    "mimic_jpeg": Layout("mimic-cxr", (2500, 3000), "L", "JPEG", 48),
    "aptos_png": Layout("aptos2019", (3000, 2000), "RGB", "PNG", 24),
}


def synthetic_photo(rng: np.random.Generator, size: tuple[int, int], mode: str) -> Image.Image:
    """A photograph-like image: smooth colour field, a dark blob, thin lines, per-pixel noise (σ 3)."""
    w, h = size
    channels = 3 if mode == "RGB" else 1
    field = rng.integers(40, 230, size=(6, 9, channels), dtype=np.uint8)
    image = Image.fromarray(field if channels == 3 else field[..., 0]).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.1, 0.25) * min(w, h)
    draw.ellipse((cx - r, cy - 0.8 * r, cx + r, cy + 0.8 * r), fill=(70, 40, 30) if channels == 3 else 60)
    for _ in range(30):
        line = tuple(rng.uniform(0, 1, 4) * (w, h, w, h))
        draw.line(line, fill=(30, 20, 15) if channels == 3 else 200, width=max(1, w // 1000))
    # Noise drawn once per tile and repeated: per-pixel texture at a fraction of the drawing time.
    tile = Image.effect_noise((_NOISE_TILE, _NOISE_TILE), 3)
    noise = Image.new("L", (w, h))
    for x in range(0, w, _NOISE_TILE):
        for y in range(0, h, _NOISE_TILE):
            noise.paste(tile, (x, y))
    return ImageChops.add(image, Image.merge("RGB", [noise] * 3) if channels == 3 else noise, offset=-128)


def write_layout(root: Path, layout: Layout, seed: int = 0) -> list[str]:
    """Write ``layout``'s data set folder under ``root`` with high-resolution images; returns its image paths."""
    writers: dict[str, Callable[[Path], Path]] = {
        "isic2020": lambda d: write_fake_isic(d, patients=layout.scale, per_patient=2, seed=seed),
        "mimic-cxr": lambda d: write_fake_mimic_jpg(d, subjects=layout.scale, seed=seed),
        "aptos2019": lambda d: write_fake_aptos(d, n=layout.scale, seed=seed),
    }
    if layout.dataset not in writers:
        raise ConfigError(f"no benchmark layout for data set {layout.dataset!r}; choose one of {', '.join(writers)}.")
    writers[layout.dataset](root)
    rng = np.random.default_rng(seed)
    paths = load_index(layout.dataset, root, duplicates="ignore").frame["path"].tolist()
    for path in paths:
        image = synthetic_photo(rng, layout.size, layout.mode)
        image.save(path, format=layout.fmt, **({"quality": 90} if layout.fmt == "JPEG" else {"compress_level": 6}))
    return paths


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the pool workers, once joined)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _rate(n: int, fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Images/s of ``fn`` over ``n`` images and its CPU ms per image, from the fastest of ``repeats`` runs.

    On a shared machine the wall-clock rate depends on what else runs; the CPU time per image
    does much less, so both are reported.
    """
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu_s()
        fn()
        best = min(best, (time.perf_counter() - t0, _cpu_s() - c0))
    return n / best[0], 1000.0 * best[1] / n


def _file_path_rate(paths: list[str], img_size: int, decode_size: int | None, repeats: int) -> tuple[float, float]:
    """Images/s and CPU ms per image of the loader's file path (decode + eval ``direct_resize`` transform)."""
    frame = pd.DataFrame({"path": paths, "label": [0] * len(paths)})
    dataset = ImageDataset(frame, build_transform(img_size), decode_size=decode_size)
    dataset[0]  # torchvision's first call initialises lazily; not part of the per-image cost
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker (idle intra-op threads would spin on CPU time)
    try:
        return _rate(len(paths), lambda: [dataset[i] for i in range(len(dataset))], repeats)
    finally:
        torch.set_num_threads(threads)


def measure_layout(root: Path, layout: Layout, *, img_size: int, workers: int, repeats: int, seed: int = 0) -> dict:
    """Every rate and ratio of one layout (see the module docstring)."""
    paths = write_layout(root, layout, seed)
    n = len(paths)
    serial, serial_cpu = _rate(n, lambda: decode_chunk(paths, img_size, FULL_DECODE), repeats)

    def prepare(w: int) -> None:
        shutil.rmtree(cache_dir(root, layout.dataset, img_size), ignore_errors=True)
        prepare_cache(layout.dataset, root, img_size=img_size, workers=w, progress=False)

    scaling = {w: _rate(n, lambda w=w: prepare(w), repeats) for w in range(1, workers + 1)}
    rates = {w: r for w, (r, _) in scaling.items()}
    diffs = np.array([compare_to_full(p, img_size) for p in paths])
    files, files_cpu = _file_path_rate(paths, img_size, img_size, repeats)
    files_full, files_full_cpu = _file_path_rate(paths, img_size, None, repeats)
    return {
        "source": f"{layout.size[0]}x{layout.size[1]} {layout.mode} {layout.fmt}",
        "images": n,
        "serial_full_decode_img_s": round(serial, 2),
        "prepare_img_s": round(rates[workers], 2),
        "prepare_speedup": round(rates[workers] / serial, 2),
        "scaling_img_s": {str(w): round(r, 2) for w, r in rates.items()},
        "scaling_efficiency": {str(w): round(r / (w * rates[1]), 3) for w, r in rates.items()},
        "cpu_ms_per_img": {
            "serial_full_decode": round(serial_cpu, 1),
            **{f"prepare_{w}_workers": round(c, 1) for w, (_, c) in scaling.items()},
            "files": round(files_cpu, 1),
            "files_full_decode": round(files_full_cpu, 1),
        },
        "files_img_s": round(files, 2),
        "files_full_img_s": round(files_full, 2),
        "files_speedup": round(files / files_full, 2),
        "mean_abs_diff": round(float(diffs[:, 0].mean()), 3),
        "max_abs_diff": round(float(diffs[:, 1].max()), 1),
    }


def measure_prepare(
    root: Path | str | None = None,
    *,
    img_size: int = 224,
    workers: int | None = None,
    layouts: dict[str, Layout] | None = None,
    repeats: int = 1,
    seed: int = 0,
) -> dict:
    """Measure the prepare and file-path rates on synthetic high-resolution data sets.

    Args:
        root: folder for the synthetic data sets (kept); ``None`` uses a temporary folder.
        img_size: cached image side.
        workers: most workers of the scaling series (1, 2, …, workers); ``None``: every CPU.
        layouts: name → :class:`Layout`; ``None`` uses :data:`DEFAULT_LAYOUTS`.
        repeats: runs per measurement, the fastest kept (the CPUs may be shared).
        seed: seed of the images.

    Returns:
        ``{"img_size", "workers", "cpus", "layouts": {name: rates (see the module docstring)}}``
        plus ``prepare_img_s`` and ``serial_full_decode_img_s`` of the first layout (the ISIC-like
        JPEGs by default) at the top level, for the bench JSON.

    Raises:
        ConfigError: ``workers``, ``img_size`` or ``repeats`` below 1, or an unknown layout.
    """
    workers = available_cpus() if workers is None else workers
    if min(workers, img_size, repeats) < 1:
        raise ConfigError(f"workers, img_size and repeats must be 1 or more (got {workers}, {img_size}, {repeats}).")
    layouts = DEFAULT_LAYOUTS if layouts is None else layouts
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="medattn-prepare-bench-") as tmp:
        base = Path(root) if root is not None else Path(tmp)
        results = {
            name: measure_layout(base / name, layout, img_size=img_size, workers=workers, repeats=repeats, seed=seed)
            for name, layout in layouts.items()
        }
    first = next(iter(results.values()))
    return {
        "img_size": img_size,
        "workers": workers,
        "cpus": available_cpus(),
        # 1-minute load average before and after: above ``cpus``, others competed for the CPUs.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "prepare_img_s": first["prepare_img_s"],
        "serial_full_decode_img_s": first["serial_full_decode_img_s"],
        "layouts": results,
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m medattn.data.prepare_bench [--workers N] [--img-size S] [--repeats R] [--out FILE]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--root", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result = measure_prepare(args.root, img_size=args.img_size, workers=args.workers, repeats=args.repeats)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

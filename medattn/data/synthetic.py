"""The synthetic ``demo`` data set: fundus-like images with exudate-like lesions and their masks.

Each image is a textured orange-red disc on a dark background with an illumination gradient,
dark vessel curves and sensor noise. Class 1 images carry 1–3 small bright yellow-white blobs
(radius 4–8 % of the image side, so they survive downsizing to 64 px); class 0 images carry none.
Small dark-red dots (haemorrhage-like) appear in both classes with the same probability, so they
cannot decide the label. ``masks/<id>.png`` (uint8, 0/255) marks exactly the blob pixels: it is
non-empty if and only if the label is 1, which lets explanations be scored against ground truth.

Layout written (and read back as ``demo``): ``labels.csv`` (``image_id,label,patient_id``),
``images/<id>.png``, ``masks/<id>.png``; 2–3 images per patient; split patient-level 60/20/20.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from medattn.data.base import (
    DATASETS,
    DatasetSpec,
    ReadOptions,
    Table,
    label_problems,
    match_images,
    missing_problems,
    parse_int_labels,
    read_csv,
    require_dir,
)
from medattn.data.splits import patient_split
from medattn.errors import ConfigError, DataError

LESION_RGB = np.array([1.0, 0.93, 0.62])
DOT_RGB = np.array([0.35, 0.05, 0.04])
_MIN_SIZE = 32


def _upsampled_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise, shape ``(size, size)``, roughly in [-1, 1] (bilinear upsampling of a coarse grid)."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.float32)


def _ellipse_mask(size: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    layer = Image.new("L", (size, size), 0)
    ImageDraw.Draw(layer).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    return np.asarray(layer) > 0


def render_fundus(rng: np.random.Generator, size: int, lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic fundus image.

    Args:
        rng: the random generator (all randomness comes from it).
        size: image side in pixels.
        lesion: whether to draw the label-deciding blobs.

    Returns:
        ``(image, mask)``: uint8 RGB image ``(size, size, 3)`` and bool lesion mask ``(size, size)``.
    """
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = s / 2 + rng.uniform(-0.03, 0.03) * s, s / 2 + rng.uniform(-0.03, 0.03) * s
    radius = rng.uniform(0.42, 0.47) * s
    r = np.hypot(xx - cx, yy - cy) / radius
    disc = r <= 1.0

    # Fundus colour with a directional illumination gradient, vignetting and low-frequency texture.
    base = np.array([0.78, 0.33, 0.13]) * rng.uniform(0.9, 1.05, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 0.8 + 0.15 * ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / radius
    shade = gradient * (1.0 - 0.3 * r**2) * (1.0 + 0.08 * _upsampled_noise(rng, size, 6))
    img = np.where(disc[..., None], base[None, None, :] * shade[..., None], 0.02)

    # Vessels: dark-red curves radiating from an off-centre "optic disc" point.
    vessels = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(vessels)
    ox = cx + rng.choice([-1, 1]) * 0.45 * radius
    oy = cy + rng.uniform(-0.1, 0.1) * radius
    width = max(1, round(s / 80))
    for _ in range(int(rng.integers(4, 7))):
        theta = rng.uniform(0, 2 * np.pi)
        bend = rng.uniform(-0.6, 0.6)
        t = np.linspace(0.0, 1.0, 24)
        length = rng.uniform(0.9, 1.5) * radius
        ang = theta + bend * t
        px, py = ox + length * t * np.cos(ang), oy + length * t * np.sin(ang)
        draw.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill=255, width=width)
    v = np.asarray(vessels.filter(ImageFilter.GaussianBlur(radius=0.6)), dtype=np.float32)[..., None] / 255.0
    img = np.where(disc[..., None], img * (1.0 - 0.45 * v), img)

    # Distractors, equally likely in both classes: small dark-red dots.
    for _ in range(int(rng.integers(0, 4))):
        rr = rng.uniform(0.0, 0.7) * radius
        a = rng.uniform(0, 2 * np.pi)
        dot = _ellipse_mask(size, cx + rr * np.cos(a), cy + rr * np.sin(a), *(rng.uniform(0.015, 0.03, size=2) * s))
        img[dot] = DOT_RGB * rng.uniform(0.8, 1.2)

    # Lesions (class 1 only): bright yellow-white blobs; the mask is exactly their pixels.
    mask = np.zeros((size, size), dtype=bool)
    if lesion:
        for _ in range(int(rng.integers(1, 4))):
            rr = rng.uniform(0.0, 0.65) * radius
            a = rng.uniform(0, 2 * np.pi)
            rx, ry = rng.uniform(0.04, 0.08) * s, rng.uniform(0.04, 0.08) * s
            mask |= _ellipse_mask(size, cx + rr * np.cos(a), cy + rr * np.sin(a), rx, ry)
        tint = LESION_RGB * rng.uniform(0.92, 1.0)
        img[mask] = tint * (1.0 + 0.05 * rng.standard_normal((int(mask.sum()), 1)))

    img = img + rng.normal(0.0, 0.02, size=img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8), mask


def _save_png(array: np.ndarray, path: Path) -> None:
    # No metadata and a fixed compression level keep the bytes identical for identical pixels.
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def write_synthetic(out: Path | str, n: int = 600, img_size: int = 128, seed: int = 0) -> Path:
    """Write the synthetic ``demo`` data set (see the module docstring).

    Args:
        out: output folder (created; existing files with the same names are overwritten).
        n: number of images (half with lesions, shuffled).
        img_size: image side in pixels (≥ 32).
        seed: seed of :func:`numpy.random.default_rng`; the same seed gives byte-identical files.

    Returns:
        The output folder.
    """
    if n < 10:
        raise ConfigError(f"--n {n} is too small for a train/val/test split; pass --n 10 or more.")
    if img_size < _MIN_SIZE:
        raise ConfigError(f"--img-size {img_size} is too small to draw lesions; pass --img-size {_MIN_SIZE} or more.")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    # 2-3 images per patient, consecutive ids (the patient's images are shuffled labels anyway).
    group_sizes = rng.integers(2, 4, size=n)
    patients = np.repeat(np.arange(n), group_sizes)[:n]
    rows = []
    for i in tqdm(range(n), desc="synth", unit="img"):
        image_id = f"synth_{i:05d}"
        image, mask = render_fundus(np.random.default_rng([seed, i]), img_size, bool(labels[i]))
        _save_png(image, out / "images" / f"{image_id}.png")
        _save_png(mask.astype(np.uint8) * 255, out / "masks" / f"{image_id}.png")
        rows.append((image_id, int(labels[i]), f"patient_{patients[i]:04d}"))
    pd.DataFrame(rows, columns=["image_id", "label", "patient_id"]).to_csv(out / "labels.csv", index=False, lineterminator="\n")
    return out


def load_mask(path: Path | str, size: int) -> np.ndarray:
    """Load a demo ground-truth mask resized (nearest) to ``size × size``.

    Returns:
        bool array ``(size, size)``, True on lesion pixels.
    """
    try:
        with Image.open(path) as im:
            m = im.convert("L").resize((size, size), Image.NEAREST)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read mask {path} ({exc}); re-create the demo set with `medattn data synth`.") from None
    return np.asarray(m) > 127


def read_demo(data_dir: Path, opts: ReadOptions) -> Table:
    """Read a folder written by :func:`write_synthetic`."""
    require_dir(data_dir, "demo set written by `medattn data synth`")
    csv = data_dir / "labels.csv"
    raw = read_csv(csv, ["image_id", "label", "patient_id"], dtype={"image_id": str, "patient_id": str})
    labels, ok = parse_int_labels(raw["label"], (0, 1))
    problems = label_problems(csv, "label", raw["image_id"], raw["label"], ok, "0 or 1")
    ids = list(raw["image_id"].astype(str))
    paths = match_images(data_dir / "images", ids, (".png",))
    masks = match_images(data_dir / "masks", ids, (".png",))
    problems += missing_problems(csv, ids, paths, [data_dir / "images" / f"{i}.png" for i in ids])
    problems += [
        f"mask file {data_dir / 'masks' / f'{i}.png'} listed in {csv} does not exist; re-create the demo set."
        for i, m in zip(ids, masks, strict=True)
        if m is None
    ]
    present = np.array([p is not None and m is not None for p, m in zip(paths, masks, strict=True)], dtype=bool)
    frame = pd.DataFrame(
        {"image_id": ids, "path": paths, "label": labels, "patient_id": raw["patient_id"].astype(str), "mask_path": masks}
    )[ok & present]
    return Table(frame=frame, num_classes=2, class_names=("no lesion", "lesion"), problems=problems)


DATASETS.add(
    "demo",
    DatasetSpec(
        name="demo",
        read=read_demo,
        split=patient_split,
        description="synthetic fundus-like images with lesion masks (`medattn data synth`)",
    ),
)

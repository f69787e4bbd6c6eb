"""The synthetic ``demo`` data set: fundus-like images with lesions, distractors and lesion masks.

Every image is a textured orange-red disc on a dark background with an illumination gradient,
dark vessel curves, sensor noise and 0–3 small dark-red dots (haemorrhage-like) in both classes.

**Version 3 (the default): the label drawn from a latent.** Version 2's images (below) plus a pale
optic disc, the brightest structure of the image, where the vessels start; the first blob is a ring
of continuous strength ``s`` (or absent), and the label is drawn with ``P(label = 1 | s) =
sigmoid((s − 0.35) / tau)`` (:func:`draw_v3`), so even a classifier that sees ``s`` exactly cannot
reach AUC 1. ``labels.csv`` adds ``oracle_prob`` (that probability), ``site`` and ``reserved_split``
(the images only the test split receives); docs/demo.md has the details and the measurements.

**Version 2: "hollow" lesions among solid look-alikes.** Both classes carry 2–4
bright yellow-white blobs drawn from one distribution: the same colour, the same count, the same
*bright area* (equivalent radius 7–11 % of the image side) and the same placement (every blob
reserves the room a ring would need, so crowding cannot differ between the classes). The label is
decided by a local property, a blob's internal structure: in a class-1 image one of the blobs
(two with probability 0.15) is drawn as a **ring** — a bright annulus whose core shows the fundus
underneath, the core's radius a fraction ``q`` of the outer one and the outer radius enlarged to
``ρ / sqrt(1 − q²)`` so that its bright area equals the one drawn for a solid blob — and every
other blob is solid; a class-0 image has only solid blobs. Global colour statistics therefore
carry no label information (a logistic regression on colour histograms is at chance), the
brightest pixel lies in a ring for only about 40 % of the lesion images, and a model has to look
inside the blobs to decide. ``masks/<id>.png`` (uint8, 0/255) marks exactly the rings' outer
discs (core included): non-empty if and only if the label is 1. A class-0 and a class-1 image
drawn from the same seed share their layout; only the rings differ.

**Difficulty** (``difficulty`` = ``d`` in [0, 1], default :data:`DEFAULT_DIFFICULTY`) grades how
visible the deciding structure is: the core fraction ``q`` is drawn from ``U(0.6 − 0.45·d, 0.6)``
(a small core is a subtle ring: at 64 px a core of ``q ≈ 0.2`` is one or two pixels wide), and
every blob of both classes is blended with the fundus at opacity ``U(1 − 0.5·d, 1)`` (faint
blobs, hence faint rings). Small positives come from the shared size distribution. Difficulty 0
gives crisp rings with large cores; 1 makes many positives nearly invisible.

Version 1 (the demo set of earlier medattn versions) drew bright blobs in class 1 only; its label
is decidable from the presence of one yellow pixel. It is kept for comparison only
(``version=1``; ``difficulty`` has no effect on it).

Layout written (and read back as ``demo``): ``labels.csv`` (``image_id,label,patient_id``),
``images/<id>.png``, ``masks/<id>.png``; 2–3 images per patient; split patient-level 60/20/20.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from medattn import lazy
from medattn.data.base import (
    DATASETS,
    DatasetSpec,
    ReadOptions,
    Table,
    checked,
    label_problems,
    match_images,
    metadata_of,
    missing_problems,
    parse_int_labels,
    read_csv,
    require_dir,
)
from medattn.data.ids import id_problems
from medattn.data.io import ImageReadError, open_image
from medattn.data.splits import GROUP_COLUMN, patient_split
from medattn.errors import ConfigError, DataError

pd = lazy.module("pandas")  # loads on first use: listing the data sets (--help) needs no pandas

LESION_RGB = np.array([1.0, 0.93, 0.62])
DOT_RGB = np.array([0.35, 0.05, 0.04])
_MIN_SIZE = 32
#: The default difficulty of version 2 (meant to make the demo's ResNet-50 good, not perfect).
#: Measured at demo settings (400 images, 96→64 px, lr 1e-3): difficulty 0.3 with 4 epochs gave test
#: AUC 0.747 [0.629, 0.854], 0.5 with 6 epochs 0.710 [0.584, 0.823], 0.3 with 6 epochs 0.729
#: [0.599, 0.835] (training length, not this knob, capped them), 0.3 with 8 epochs (the demo's
#: default) 0.867 [0.774, 0.942]. At 8 epochs, 0.6 and 0.9 gave ResNet-50 0.689 and 0.461 while
#: the three DenseNet-121 variants stayed at 1.000: the knob grades visibility, not ambiguity.
DEFAULT_DIFFICULTY = 0.3
#: The default version of the demo set.
DEFAULT_VERSION = 3
#: Versions whose label is a rule of the drawn image (:func:`render_fundus`); version 3 draws its
#: label from a latent (:func:`draw_v3`).
VERSIONS = (1, 2, 3)
#: Columns of version 3's ``labels.csv`` beyond ``image_id,label,patient_id``: the generator's
#: ``P(label = 1 | latent)``, a synthetic acquisition site, and ``test`` on the images reserved for
#: the test split (empty otherwise). Training and every model input ignore the first two.
ORACLE_COLUMN, SITE_COLUMN, RESERVED_COLUMN = "oracle_prob", "site", "reserved_split"
RESERVED_TEST = "test"
#: Sites written to version 3's ``site`` column (one per patient, drawn uniformly; no effect on the images).
SITES = ("site_a", "site_b", "site_c")
# Version 2 recipe: blobs per image, equivalent radius of a blob's bright area (fraction of the
# image side), the largest ring core fraction, how far difficulty 1 shrinks it, and opacity.
_BLOBS = (2, 4)
_BLOB_RADIUS = (0.07, 0.11)
_CORE_MAX, _CORE_SPAN = 0.6, 0.45
_FAINT_SPAN = 0.5
_TWO_RINGS_P = 0.15
_PLACE_TRIES = 200


def _upsampled_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise, shape ``(size, size)``, roughly in [-1, 1] (bilinear upsampling of a coarse grid)."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.float32)


def _ellipse_mask(size: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    layer = Image.new("L", (size, size), 0)
    ImageDraw.Draw(layer).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    return np.asarray(layer) > 0


def _fundus(
    rng: np.random.Generator, size: int, *, optic_disc: bool = False
) -> tuple[np.ndarray, float, float, float, tuple[float, float, float] | None]:
    """The lesion-free fundus: disc, illumination, texture, vessels, dark-red dots and (version 3)
    the optic disc.

    Args:
        rng: the random generator.
        size: image side in pixels.
        optic_disc: draw the optic disc where the vessels start (:func:`_draw_optic_disc`; its
            random draws come after every other, so versions 1 and 2 are drawn as before).

    Returns:
        ``(image, cx, cy, radius, optic)``: float RGB image ``(size, size, 3)`` in [0, 1] (before
        noise), the fundus centre and radius in pixels, and the optic disc's ``(x, y, extent)``
        (``None`` without one).
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
    optic = _draw_optic_disc(rng, img, ox, oy, s) if optic_disc else None
    return img, cx, cy, radius, optic


#: Version 3's optic disc: colour (paler and brighter than a lesion's :data:`LESION_RGB`) and radius
#: (fraction of the image side; about 2 % of the image's area, as on a 45° fundus photograph).
OPTIC_RGB = np.array([1.0, 0.96, 0.84])
_OPTIC_RADIUS = (0.075, 0.09)


def _draw_optic_disc(rng: np.random.Generator, img: np.ndarray, ox: float, oy: float, s: float) -> tuple:
    """Draw the optic disc at ``(ox, oy)``: a soft pale disc, the brightest structure of the image.

    On a fundus photograph the optic disc, not a lesion, is the brightest region. Without it the
    input's grey level ranks the bright lesions first and scores almost as well as the ground-truth
    mask on removal curves (measured on the demo's ResNet-50, ROAD MoRF over 48 lesion images: grey
    level −0.62 [−0.66, −0.57] against the mask's −0.68 [−0.71, −0.63]), so the curves could not
    tell a map that finds the evidence from a map of brightness. Both classes carry it.

    Returns:
        ``(ox, oy, extent)``: the disc with its soft edge, for the lesion placement to keep clear of.
    """
    size = img.shape[0]
    r = rng.uniform(*_OPTIC_RADIUS) * s
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.hypot(xx - ox, yy - oy) / r
    alpha = (0.95 * np.clip((1.3 - d) / 0.5, 0.0, 1.0))[..., None]
    img[:] = alpha * OPTIC_RGB * rng.uniform(0.96, 1.0) + (1.0 - alpha) * img
    return ox, oy, 1.3 * r


def _lesions_v1(
    rng: np.random.Generator, img: np.ndarray, geometry: tuple[float, float, float], lesion: bool, difficulty: float
) -> np.ndarray:
    """Version 1: 1–3 solid bright blobs in class 1 only (``difficulty`` is not used)."""
    size = img.shape[0]
    cx, cy, radius = geometry
    mask = np.zeros((size, size), dtype=bool)
    if lesion:
        for _ in range(int(rng.integers(1, 4))):
            rr = rng.uniform(0.0, 0.65) * radius
            a = rng.uniform(0, 2 * np.pi)
            rx, ry = rng.uniform(0.04, 0.08) * size, rng.uniform(0.04, 0.08) * size
            mask |= _ellipse_mask(size, cx + rr * np.cos(a), cy + rr * np.sin(a), rx, ry)
        tint = LESION_RGB * rng.uniform(0.92, 1.0)
        img[mask] = tint * (1.0 + 0.05 * rng.standard_normal((int(mask.sum()), 1)))
    return mask


def _place(
    rng: np.random.Generator,
    placed: list[tuple[float, float, float]],
    extent: float,
    geometry: tuple[float, float, float],
    margin: float,
) -> tuple[float, float] | None:
    """A centre inside the disc whose blob of radius ``extent`` keeps ``margin`` from the others."""
    cx, cy, radius = geometry
    for _ in range(_PLACE_TRIES):
        rr = np.sqrt(rng.uniform(0.0, 1.0)) * max(0.9 * radius - extent, 0.0)  # uniform over the area
        a = rng.uniform(0, 2 * np.pi)
        x, y = cx + rr * np.cos(a), cy + rr * np.sin(a)
        if all(np.hypot(x - px, y - py) > extent + pe + margin for px, py, pe in placed):
            return x, y
    return None


def _stamp(
    rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    placed: list[tuple[float, float, float]],
    geometry: tuple[float, float, float],
    blob: tuple[float, float, float, float | None],
    opacity: float,
    colour: np.ndarray,
) -> None:
    """Place (:func:`_place`; skipped where there is no room) and draw one bright blob ``(room, rx, ry,
    core)`` over ``img``: a ring with a dark ``core`` fraction whose outer disc joins ``mask``, or solid."""
    size = img.shape[0]
    room, rx, ry, core = blob
    centre = _place(rng, placed, room, geometry, margin=0.02 * size)
    if centre is None:
        return
    placed.append((*centre, room))
    drawn = _ellipse_mask(size, *centre, rx, ry)
    if core is not None:
        mask |= drawn
        drawn &= ~_ellipse_mask(size, *centre, core * rx, core * ry)
    img[drawn] = opacity * colour[drawn] + (1.0 - opacity) * img[drawn]


def _lesions_v2(
    rng: np.random.Generator, img: np.ndarray, geometry: tuple[float, float, float], lesion: bool, difficulty: float
) -> np.ndarray:
    """Version 2: 2–4 bright blobs in both classes, rings (the lesions) in class 1 (module docstring)."""
    size = img.shape[0]
    count = int(rng.integers(_BLOBS[0], _BLOBS[1] + 1))
    two_rings = rng.random() < _TWO_RINGS_P  # drawn in both classes: same random stream, same layout
    rings = (1 + int(two_rings)) if lesion else 0
    grain = rng.standard_normal((size, size, 1))  # the blobs' colour texture, drawn whole: same stream in both classes
    mask = np.zeros((size, size), dtype=bool)
    placed: list[tuple[float, float, float]] = []
    for k in range(count):
        ring = k < rings  # rings first, so a crowded disc never drops a lesion
        rho = rng.uniform(*_BLOB_RADIUS) * size  # equivalent radius of the bright area
        stretch = rng.uniform(0.85, 1.15)
        core = rng.uniform(_CORE_MAX - _CORE_SPAN * difficulty, _CORE_MAX)
        opacity = rng.uniform(1.0 - _FAINT_SPAN * difficulty, 1.0)
        tint = LESION_RGB * rng.uniform(0.92, 1.0)
        # pi * R^2 * (1 - q^2) = pi * rho^2: a ring has exactly the bright area of its solid twin.
        outer = rho / np.sqrt(1.0 - core**2) if ring else rho
        # Every blob reserves the room of a ring, so that crowding (a dropped blob) cannot tell the classes apart.
        room = 1.15 * rho / np.sqrt(1.0 - core**2)
        blob = (room, outer * stretch, outer / stretch, core if ring else None)
        _stamp(rng, img, mask, placed, geometry, blob, opacity, tint * (1.0 + 0.05 * grain))
    return mask


# Version 3 recipe: probability of a candidate ring, its core fraction at strength 0 and 1, and the
# label model P(label = 1) = sigmoid((strength - RING_S0) / tau) (strength 0 where no ring is drawn).
_RING_P = 0.75
_CORE_V3 = (0.2, 0.65)
RING_S0 = 0.35
#: The default ``tau`` of version 3's label model (module docstring; smaller: a sharper, more
#: predictable label, the oracle's AUC closer to 1).
DEFAULT_TAU = 0.12


@dataclass(frozen=True)
class DrawnImage:
    """One version-3 image with its latent: the ring strength, ``P(label = 1 | strength)`` and the label."""

    image: np.ndarray  # uint8 (size, size, 3)
    mask: np.ndarray  # bool (size, size): the ring's outer disc, empty without a ring
    strength: float  # 0 without a ring, else in [0, 1]
    oracle_prob: float
    label: int


def oracle_probability(strength: float | np.ndarray, tau: float = DEFAULT_TAU) -> float | np.ndarray:
    """Version 3's label model: ``P(label = 1 | strength) = sigmoid((strength - RING_S0) / tau)``."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(strength, dtype=np.float64) - RING_S0) / tau))


def _lesions_v3(
    rng: np.random.Generator,
    img: np.ndarray,
    geometry: tuple[float, float, float],
    strength: float,
    difficulty: float,
    keep_clear: tuple[float, float, float],
) -> np.ndarray:
    """Version 3: 2–4 bright blobs, placed clear of the optic disc ``keep_clear`` (``(x, y, extent)``);
    with ``strength > 0`` the first is a ring whose core fraction grows with it."""
    size = img.shape[0]
    count = int(rng.integers(_BLOBS[0], _BLOBS[1] + 1))
    grain = rng.standard_normal((size, size, 1))
    mask = np.zeros((size, size), dtype=bool)
    placed: list[tuple[float, float, float]] = [keep_clear]
    widest = np.sqrt(1.0 - _CORE_V3[1] ** 2)
    for k in range(count):
        ring = k == 0 and strength > 0.0
        rho = rng.uniform(*_BLOB_RADIUS) * size
        stretch = rng.uniform(0.85, 1.15)
        opacity = rng.uniform(1.0 - _FAINT_SPAN * difficulty, 1.0)
        tint = LESION_RGB * rng.uniform(0.92, 1.0)
        core = _CORE_V3[0] + (_CORE_V3[1] - _CORE_V3[0]) * strength if ring else 0.0
        outer = rho / np.sqrt(1.0 - core**2)  # the same bright area as a solid blob of radius rho
        room = 1.15 * rho / widest  # every blob reserves the room of the strongest ring
        blob = (room, outer * stretch, outer / stretch, core if ring else None)
        _stamp(rng, img, mask, placed, geometry, blob, opacity, tint * (1.0 + 0.05 * grain))
    return mask


def draw_v3(
    rng: np.random.Generator, size: int, *, difficulty: float = DEFAULT_DIFFICULTY, tau: float = DEFAULT_TAU
) -> DrawnImage:
    """Draw one version-3 image: the latent ring strength, the image, then the label from the latent.

    Args:
        rng: the random generator (all randomness comes from it).
        size: image side in pixels.
        difficulty: how faint the blobs can be (opacity ``U(1 − 0.5·d, 1)``).
        tau: the label model's temperature (:func:`oracle_probability`).

    Returns:
        A :class:`DrawnImage`.
    """
    img, cx, cy, radius, optic = _fundus(rng, size, optic_disc=True)
    strength = float(rng.uniform(0.0, 1.0)) if rng.random() < _RING_P else 0.0
    mask = _lesions_v3(rng, img, (cx, cy, radius), strength, difficulty, optic)
    if not mask.any():  # a ring that found no room: no evidence drawn, so none in the label model
        strength = 0.0
    img = img + rng.normal(0.0, 0.02, size=img.shape)
    prob = float(oracle_probability(strength, tau))
    label = int(rng.random() < prob)
    image = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return DrawnImage(image, mask, strength, prob, label)


Renderer = Callable[[np.random.Generator, np.ndarray, tuple[float, float, float], bool, float], np.ndarray]
#: Lesion renderers by demo-set version: ``(rng, image, (cx, cy, radius), lesion, difficulty) -> mask``.
RENDERERS: dict[int, Renderer] = {1: _lesions_v1, 2: _lesions_v2}


def render_fundus(
    rng: np.random.Generator,
    size: int,
    lesion: bool,
    *,
    version: int = 2,
    difficulty: float = DEFAULT_DIFFICULTY,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic fundus image of version 1 or 2 (version 3: :func:`draw_v3`).

    Args:
        rng: the random generator (all randomness comes from it).
        size: image side in pixels.
        lesion: whether to draw the label-deciding lesions.
        version: the demo-set version (a key of :data:`RENDERERS`: 1 or 2).
        difficulty: version 2's difficulty in [0, 1] (module docstring).

    Returns:
        ``(image, mask)``: uint8 RGB image ``(size, size, 3)`` and bool lesion mask ``(size, size)``.
    """
    img, cx, cy, radius, _ = _fundus(rng, size)
    mask = RENDERERS[version](rng, img, (cx, cy, radius), lesion, difficulty)
    img = img + rng.normal(0.0, 0.02, size=img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8), mask


def _save_png(array: np.ndarray, path: Path) -> None:
    # No metadata and a fixed compression level keep the bytes identical for identical pixels.
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def _check_options(n: int, img_size: int, difficulty: float, version: int, tau: float, test_extra: int) -> None:
    if n < 10:
        raise ConfigError(f"--n {n} is too small for a train/val/test split; pass --n 10 or more.")
    if img_size < _MIN_SIZE:
        raise ConfigError(f"--img-size {img_size} is too small to draw lesions; pass --img-size {_MIN_SIZE} or more.")
    if not 0.0 <= difficulty <= 1.0:
        raise ConfigError(f"--difficulty must be between 0 and 1, got {difficulty}.")
    if version not in VERSIONS:
        raise ConfigError(f"unknown demo-set version {version}; choose {', '.join(map(str, VERSIONS))}.")
    if not (np.isfinite(tau) and tau > 0):
        raise ConfigError(f"--tau must be a positive number, got {tau}.")
    if test_extra < 0:
        raise ConfigError(f"--test-extra must be 0 or more, got {test_extra}.")
    if version != 3 and test_extra:
        raise ConfigError("--test-extra needs demo-set version 3; drop it or pass --version 3.")


def _patients(rng: np.random.Generator, n: int) -> np.ndarray:
    """2–3 images per patient, consecutive ids: the patient index of each of ``n`` images."""
    return np.repeat(np.arange(n), rng.integers(2, 4, size=n))[:n]


def _write_v3(out: Path, n: int, test_extra: int, img_size: int, seed: int, difficulty: float, tau: float) -> None:
    """Version 3's files: ``n`` images split as usual plus ``test_extra`` reserved for the test split."""
    rng = np.random.default_rng([seed, 3])
    patients = np.concatenate([_patients(rng, n), n + _patients(rng, test_extra)])
    sites = rng.choice(len(SITES), size=int(patients.max()) + 1)  # one site per patient
    rows = []
    for i in tqdm(range(n + test_extra), desc="synth", unit="img"):
        image_id = f"synth_{i:05d}"
        drawn = draw_v3(np.random.default_rng([seed, i]), img_size, difficulty=difficulty, tau=tau)
        _save_png(drawn.image, out / "images" / f"{image_id}.png")
        _save_png(drawn.mask.astype(np.uint8) * 255, out / "masks" / f"{image_id}.png")
        patient = int(patients[i])
        rows.append(
            (
                image_id,
                drawn.label,
                f"patient_{patient:05d}",
                round(drawn.oracle_prob, 6),
                SITES[int(sites[patient])],
                RESERVED_TEST if i >= n else "",
            )
        )
    columns = ["image_id", "label", "patient_id", ORACLE_COLUMN, SITE_COLUMN, RESERVED_COLUMN]
    pd.DataFrame(rows, columns=columns).to_csv(out / "labels.csv", index=False, lineterminator="\n")


def write_synthetic(
    out: Path | str,
    n: int = 600,
    img_size: int = 128,
    seed: int = 0,
    *,
    difficulty: float = DEFAULT_DIFFICULTY,
    version: int = DEFAULT_VERSION,
    tau: float = DEFAULT_TAU,
    test_extra: int = 0,
) -> Path:
    """Write the synthetic ``demo`` data set (see the module docstring).

    Args:
        out: output folder (created; existing files with the same names are overwritten).
        n: number of images split train/val/test (versions 1–2: half with lesions, shuffled;
            version 3: labels drawn from the latent).
        img_size: image side in pixels (≥ 32).
        seed: seed of :func:`numpy.random.default_rng`; the same seed gives byte-identical files.
        difficulty: how faint the blobs can be (versions 2–3) and how small version 2's ring cores.
        version: 3 (default: the label drawn from a latent ring strength, ``oracle_prob`` and
            ``site`` written), 2 (rings among look-alike blobs, the label a rule) or 1 (lesions
            only in class 1).
        tau: version 3's label-model temperature (:func:`oracle_probability`).
        test_extra: version 3 only: further images that only the test split receives (the demo
            split, module docstring); their patients are new.

    Returns:
        The output folder.

    Raises:
        ConfigError: ``n`` below 10, ``img_size`` below 32, ``difficulty`` outside [0, 1], an
            unknown ``version``, a non-positive ``tau`` or ``test_extra`` with a version before 3.
    """
    _check_options(n, img_size, difficulty, version, tau, test_extra)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    if version == 3:
        _write_v3(out, n, test_extra, img_size, seed, difficulty, tau)
        return out
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    patients = _patients(rng, n)
    rows = []
    for i in tqdm(range(n), desc="synth", unit="img"):
        image_id = f"synth_{i:05d}"
        image, mask = render_fundus(
            np.random.default_rng([seed, i]), img_size, bool(labels[i]), version=version, difficulty=difficulty
        )
        _save_png(image, out / "images" / f"{image_id}.png")
        _save_png(mask.astype(np.uint8) * 255, out / "masks" / f"{image_id}.png")
        rows.append((image_id, int(labels[i]), f"patient_{patients[i]:04d}"))
    pd.DataFrame(rows, columns=["image_id", "label", "patient_id"]).to_csv(
        out / "labels.csv", index=False, lineterminator="\n"
    )
    return out


def load_mask(path: Path | str, size: int) -> np.ndarray:
    """Load a demo ground-truth mask resized (nearest) to ``size × size``.

    Returns:
        bool array ``(size, size)``, True on lesion pixels.
    """
    try:
        with open_image(path) as im:
            m = im.convert("L").resize((size, size), Image.NEAREST)
    except (OSError, SyntaxError, ValueError, ImageReadError) as exc:
        raise DataError(f"cannot read mask {path} ({exc}); re-create the demo set with `medattn data synth`.") from None
    return np.asarray(m) > 127


def read_demo(data_dir: Path, opts: ReadOptions) -> Table:
    """Read a folder written by :func:`write_synthetic` (version 3's extra columns kept when present)."""
    require_dir(data_dir, "demo set written by `medattn data synth`")
    csv = data_dir / "labels.csv"
    raw = read_csv(csv, ["image_id", "label", "patient_id"], dtype={"image_id": str, "patient_id": str})
    labels, ok = parse_int_labels(raw["label"], (0, 1))
    problems = label_problems(csv, "label", raw["image_id"], raw["label"], ok, "0 or 1")
    ids = list(raw["image_id"].astype(str))
    bad_ids, safe = id_problems(csv, "image_id", ids)
    problems += bad_ids
    paths = [p if ok else None for p, ok in zip(match_images(data_dir / "images", ids, (".png",)), safe, strict=True)]
    masks = [m if ok else None for m, ok in zip(match_images(data_dir / "masks", ids, (".png",)), safe, strict=True)]
    problems += missing_problems(csv, *checked(ids, paths, [data_dir / "images" / f"{i}.png" for i in ids], safe))
    problems += [
        f"mask file {data_dir / 'masks' / f'{i}.png'} listed in {csv} does not exist; re-create the demo set."
        for i, m, ok in zip(ids, masks, safe, strict=True)
        if m is None and ok
    ]
    present = np.array([p is not None and m is not None for p, m in zip(paths, masks, strict=True)], dtype=bool)
    columns = {
        "image_id": ids,
        "path": paths,
        "label": labels,
        "patient_id": raw["patient_id"].astype(str),
        "mask_path": masks,
        **metadata_of(raw),  # sex / age / site columns of labels.csv, when it has them
    }
    if ORACLE_COLUMN in raw.columns:
        oracle = pd.to_numeric(raw[ORACLE_COLUMN], errors="coerce")
        bad = ~oracle.between(0.0, 1.0)
        problems += [
            f"{csv}: {ORACLE_COLUMN} of {i} is {v!r}, not a probability in [0, 1]; re-create the demo set."
            for i, v in zip(raw["image_id"][bad], raw[ORACLE_COLUMN][bad], strict=True)
        ]
        ok = ok & ~bad.to_numpy()
        columns[ORACLE_COLUMN] = oracle.to_numpy(dtype=np.float64)
    if RESERVED_COLUMN in raw.columns:
        columns[RESERVED_COLUMN] = raw[RESERVED_COLUMN].astype(object).fillna("").astype(str).to_numpy()
    frame = pd.DataFrame(columns)[ok & present]
    return Table(frame=frame, num_classes=2, class_names=("no lesion", "lesion"), problems=problems)


def demo_split(frame: pd.DataFrame, seed: int = 42) -> np.ndarray:
    """The demo split: rows reserved for the test split (``reserved_split == "test"``, version 3's
    ``test_extra`` images) go to test; the others are split patient-level 60/20/20 as always.

    A split unit (a patient, or patients joined by near-duplicates) that holds a reserved row goes
    to test whole, so no patient or near-duplicate group spans two splits.
    """
    if RESERVED_COLUMN not in frame.columns:
        return patient_split(frame, seed)
    reserved = frame[RESERVED_COLUMN].astype(str).eq(RESERVED_TEST).to_numpy().copy()
    units = frame[GROUP_COLUMN] if GROUP_COLUMN in frame.columns else frame["patient_id"]
    units = units.astype(str).to_numpy()
    reserved |= np.isin(units, units[reserved])
    out = np.full(len(frame), RESERVED_TEST, dtype=object)
    if (~reserved).any():
        out[~reserved] = patient_split(frame[~reserved], seed)
    return out


DATASETS.add(
    "demo",
    DatasetSpec(
        name="demo",
        read=read_demo,
        split=demo_split,
        description="synthetic fundus-like images with lesion masks (`medattn data synth`)",
    ),
)

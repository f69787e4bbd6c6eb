"""Demo set version 2 carries no label information in global colour statistics
or in model-free maps; the label is decided by the rings that the masks mark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medattn.data import write_synthetic
from medattn.data.synthetic import DEFAULT_DIFFICULTY, DEFAULT_VERSION, render_fundus
from medattn.errors import ConfigError

BRIGHT = 180  # grey level above which a pixel belongs to a blob (the fundus stays below ~150)


def _load(root: Path) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray]]:
    frame = pd.read_csv(root / "labels.csv")
    images = [np.asarray(Image.open(root / "images" / f"{i}.png")) for i in frame["image_id"]]
    masks = [np.asarray(Image.open(root / "masks" / f"{i}.png")) > 127 for i in frame["image_id"]]
    return frame, images, masks


def _colour_histogram(image: np.ndarray) -> np.ndarray:
    """32-bin histograms per channel and a 4×4×4 joint RGB histogram, as pixel fractions."""
    px = image.reshape(-1, 3)
    marginal = [np.histogram(px[:, c], bins=32, range=(0, 256))[0] for c in range(3)]
    q = px.astype(int) // 64
    joint = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64)
    return np.concatenate([*marginal, joint]) / len(px)


def _histogram_auc(frame: pd.DataFrame, images: list[np.ndarray]) -> float:
    x = np.stack([_colour_histogram(im) for im in images])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_predict(clf, x, frame["label"].to_numpy(), cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(frame["label"], scores))


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    """What `medattn data synth --out DIR --version 2` writes (600 images, 128 px, seed 0)."""
    return _load(write_synthetic(tmp_path_factory.mktemp("v2") / "demo", version=2))


def test_colour_histograms_carry_no_label_information(default_set, tmp_path):
    frame, images, _ = default_set
    assert _histogram_auc(frame, images) <= 0.65
    # the same check has teeth: on version 1 (blobs in class 1 only) it separates the classes
    v1 = _load(write_synthetic(tmp_path / "v1", n=200, img_size=64, version=1))
    assert _histogram_auc(v1[0], v1[1]) >= 0.95


def test_grey_level_map_does_not_point_at_the_lesions(default_set):
    frame, images, masks = default_set
    hits = [m.flat[im.mean(axis=2).argmax()] for im, m, y in zip(images, masks, frame["label"], strict=True) if y]
    assert len(hits) == 300 and np.mean(hits) <= 0.5


def _blob_count(image: np.ndarray) -> int:
    """Bright blobs, rings filled: specks removed, blobs of at least 30 pixels counted."""
    bright = ndimage.binary_opening(image.mean(axis=2) > BRIGHT)
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(bright, iterations=2))
    labels, n = ndimage.label(filled)
    return int((ndimage.sum(filled, labels, range(1, n + 1)) >= 30).sum())


def test_same_blob_count_and_area_in_both_classes_masks_mark_the_rings(default_set):
    frame, images, masks = default_set
    stats = pd.DataFrame(
        {
            "label": frame["label"],
            "blobs": [_blob_count(im) for im in images],
            "area": [(im.mean(axis=2) > BRIGHT).sum() for im in images],
            "lesion_px": [m.sum() for m in masks],
            "bright_outside": [((im.mean(axis=2) > BRIGHT) & ~m).sum() for im, m in zip(images, masks, strict=True)],
            "core_px": [(m & (im.mean(axis=2) <= BRIGHT)).sum() for im, m in zip(images, masks, strict=True)],
        }
    )
    neg, pos = stats[stats["label"] == 0], stats[stats["label"] == 1]
    assert abs(pos["blobs"].mean() - neg["blobs"].mean()) < 0.25 and neg["blobs"].min() >= 1
    assert abs(pos["area"].mean() / neg["area"].mean() - 1) < 0.1
    assert (neg["lesion_px"] == 0).all() and (pos["lesion_px"] > 0).all()
    assert (pos["bright_outside"] > 0).mean() > 0.9  # distractors next to the lesions
    # every lesion image's mask holds a ring: a non-bright core inside the bright annulus
    assert (pos["core_px"] > 0).all()


def test_a_ring_replaces_a_solid_blob_of_the_same_bright_area():
    """Drawn from the same seed, a class-0 and a class-1 image differ only inside the mask, where a
    ring has (up to rasterisation) the bright area of the solid blob it replaces."""
    solid, ring = [], []
    for i in range(30):
        neg, empty = render_fundus(np.random.default_rng([0, i]), 128, False)
        pos, mask = render_fundus(np.random.default_rng([0, i]), 128, True)
        assert not empty.any() and mask.any() and np.array_equal(neg[~mask], pos[~mask])
        solid.append((neg.mean(axis=2)[mask] > BRIGHT).sum())
        ring.append((pos.mean(axis=2)[mask] > BRIGHT).sum())
    assert abs(sum(ring) / sum(solid) - 1) < 0.08


def _core_share(image: np.ndarray, mask: np.ndarray) -> float:
    """Share of the mask darker than halfway between the ring's brightness and the fundus around it."""
    grey = image.mean(axis=2)
    ring = np.percentile(grey[mask], 90)
    fundus = np.median(grey[ndimage.binary_dilation(mask, iterations=3) & ~mask])
    return float((grey[mask] < (ring + fundus) / 2).mean())


def test_difficulty_shrinks_the_cores_and_validates():
    def mean_core_share(difficulty: float) -> float:
        pairs = [render_fundus(np.random.default_rng([1, i]), 96, True, difficulty=difficulty) for i in range(40)]
        return float(np.mean([_core_share(image, mask) for image, mask in pairs]))

    # core fraction q ~ U(0.6, 0.6) at difficulty 0 (area share ≈ 0.36), U(0.15, 0.6) at 1 (≈ 0.16)
    assert mean_core_share(0.0) > mean_core_share(1.0) + 0.1
    assert 0.0 <= DEFAULT_DIFFICULTY <= 1.0 and DEFAULT_VERSION == 3
    with pytest.raises(ConfigError, match="difficulty"):
        write_synthetic("unused", n=10, difficulty=1.5)
    with pytest.raises(ConfigError, match="version"):
        write_synthetic("unused", n=10, version=4)


def test_deterministic_per_seed_and_difficulty(tmp_path):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a = files(write_synthetic(tmp_path / "a", n=12, img_size=48, seed=5, difficulty=0.7, version=2))
    b = files(write_synthetic(tmp_path / "b", n=12, img_size=48, seed=5, difficulty=0.7, version=2))
    c = files(write_synthetic(tmp_path / "c", n=12, img_size=48, seed=5, difficulty=0.2, version=2))
    assert a == b and any(a[k] != c[k] for k in a if k.startswith("images/"))

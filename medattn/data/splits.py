"""Train/val/test splits, all seeded and reproducible.

- image-level, stratified by label (APTOS 2019): 85 % train+val / 15 % test, then 75 / 25
  train / val, as in the original project;
- patient-level (ISIC 2020, demo): 60 / 20 / 20 of the *patients*, so no patient's images end up
  in two splits.

Both keep near-duplicate groups whole: when the frame carries a :data:`GROUP_COLUMN`
column, rows sharing a value land in one split. The patient-level split then splits those units
instead of patients; the image-level split splits one representative row per unit (its first) and
the other rows follow it. Without shared values both give exactly the splits made before.
"""

from __future__ import annotations

import numpy as np

from medattn import lazy
from medattn.errors import DataError

pd = lazy.module("pandas")  # loads on first use: listing the data sets (--help) needs no pandas

# Fewer units than this cannot fill three non-empty splits.
_MIN_UNITS = 3
# Column of unit labels (patients joined with near-duplicate groups) added by medattn.data.base.
GROUP_COLUMN = "split_group"


def _stratify(labels: np.ndarray, n_test: float) -> np.ndarray | None:
    """``labels`` if every class can be stratified (≥ 2 images per class), else ``None``."""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    n = len(labels)
    n_small = int(np.ceil(n_test * n))
    if counts.min() < 2 or n_small < len(counts) or n - n_small < len(counts):
        return None
    return labels


def stratified_image_split(
    frame: pd.DataFrame, seed: int = 42, test_size: float = 0.15, val_size: float = 0.25
) -> np.ndarray:
    """Image-level stratified split.

    Args:
        frame: rows with an int ``label`` column.
        seed: ``random_state`` of both :func:`sklearn.model_selection.train_test_split` calls.
        test_size: fraction of all images in test.
        val_size: fraction of the remaining (train+val) images in val.

    Returns:
        One of ``train``/``val``/``test`` per row, shape ``(len(frame),)``.
    """
    if GROUP_COLUMN in frame.columns:
        units = frame[GROUP_COLUMN].astype(str)
        first = ~units.duplicated().to_numpy()
        if not first.all():
            reps = frame[first].drop(columns=GROUP_COLUMN)
            chosen = pd.Series(stratified_image_split(reps, seed, test_size, val_size), index=units[first].to_numpy())
            return units.map(chosen).to_numpy(dtype=object)
    if len(frame) < _MIN_UNITS * 2:
        raise DataError(f"only {len(frame)} usable images, too few for a train/val/test split; add images.")
    labels = frame["label"].to_numpy(dtype=np.int64)
    # scikit-learn loads on first use: the command line reads the data set names without it (~1 s)
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(frame))
    trainval, test = train_test_split(
        idx, test_size=test_size, stratify=_stratify(labels, test_size), random_state=seed
    )
    train, val = train_test_split(
        trainval, test_size=val_size, stratify=_stratify(labels[trainval], val_size), random_state=seed
    )
    out = np.empty(len(frame), dtype=object)
    out[train], out[val], out[test] = "train", "val", "test"
    return out


def patient_split(frame: pd.DataFrame, seed: int = 42, test_size: float = 0.2, val_size: float = 0.25) -> np.ndarray:
    """Patient-level split: 60 / 20 / 20 of the patients by default.

    Args:
        frame: rows with a ``patient_id`` column (and optionally :data:`GROUP_COLUMN`, which is
            split instead: patients joined with near-duplicate groups).
        seed: ``random_state`` of both :class:`sklearn.model_selection.GroupShuffleSplit` calls.
        test_size: fraction of patients in test.
        val_size: fraction of the remaining patients in val (0.25 × 0.8 = 20 % of all).

    Returns:
        One of ``train``/``val``/``test`` per row, shape ``(len(frame),)``.
    """
    groups = frame[GROUP_COLUMN if GROUP_COLUMN in frame.columns else "patient_id"].astype(str).to_numpy()
    if len(np.unique(groups)) < _MIN_UNITS:
        raise DataError(
            f"only {len(np.unique(groups))} patients, too few for a patient-level train/val/test split; add patients."
        )
    # scikit-learn loads on first use: the command line reads the data set names without it (~1 s)
    from sklearn.model_selection import GroupShuffleSplit

    idx = np.arange(len(frame))
    outer = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    trainval, test = next(outer.split(idx, groups=groups))
    inner = GroupShuffleSplit(n_splits=1, test_size=val_size, random_state=seed)
    tr, va = next(inner.split(trainval, groups=groups[trainval]))
    out = np.empty(len(frame), dtype=object)
    out[trainval[tr]], out[trainval[va]], out[test] = "train", "val", "test"
    return out


def patient_leak_problems(frame: pd.DataFrame) -> list[str]:
    """One sentence per patient whose images lie in more than one split.

    Args:
        frame: rows with ``patient_id`` and ``split``.
    """
    order = {"train": 0, "val": 1, "test": 2}
    per_patient = frame.groupby("patient_id", sort=True)["split"].agg(
        lambda s: sorted(set(s), key=lambda x: order.get(x, 3))
    )
    return [
        f"patient {p} has images in {' and '.join(s)}; the split must keep each patient in one split."
        for p, s in per_patient.items()
        if len(s) > 1
    ]

"""APTOS 2019 Blindness Detection (Kaggle): referable diabetic retinopathy.

Layout: ``train.csv`` (``id_code,diagnosis``) and ``train_images/<id_code>.png``; a pre-resized
copy in ``train_resized/`` is preferred when present. Task: ``diagnosis > 0`` (binary) or the five
grades 0–4 (``multiclass=True``). Split: image-level, stratified (no patient ids in this set), with
each near-duplicate group (two photographs of one eye, re-exports) kept in one split
(:mod:`medattn.data.duplicates`).
"""

from __future__ import annotations

from pathlib import Path

from medattn import lazy
from medattn.data.base import (
    DATASETS,
    DatasetSpec,
    ReadOptions,
    Table,
    first_existing,
    image_rows,
    metadata_of,
    read_csv,
    require_dir,
)
from medattn.data.splits import stratified_image_split

pd = lazy.module("pandas")  # loads on first use: listing the data sets (--help) needs no pandas

IMAGE_DIRS = ("train_resized", "train_images")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
GRADES = ("no DR", "mild", "moderate", "severe", "proliferative DR")


def read_aptos(data_dir: Path, opts: ReadOptions) -> Table:
    """Read ``train.csv`` and locate the images; see the module docstring for the layout."""
    require_dir(data_dir, "APTOS 2019 data (train.csv, train_images/)")
    csv = data_dir / "train.csv"
    raw = read_csv(csv, ["id_code", "diagnosis"], dtype={"id_code": str})
    folder = first_existing(data_dir, IMAGE_DIRS) or data_dir / "train_images"
    rows = image_rows(
        csv, raw, "id_code", "diagnosis", folder, IMAGE_EXTS, allowed=range(5), expected="an integer grade 0-4"
    )
    grades, ids = rows.labels, rows.ids
    labels = grades if opts.multiclass else (grades > 0).astype(int)
    # sex / age / site columns a user added to train.csv (the release has none) become subgroups
    frame = pd.DataFrame({"image_id": ids, "path": rows.paths, "label": labels, "patient_id": ids, **metadata_of(raw)})
    problems = rows.label_problems + rows.image_problems
    names = GRADES if opts.multiclass else ("no referable DR", "referable DR")
    return Table(frame=frame[rows.keep], num_classes=len(names), class_names=names, problems=problems)


DATASETS.add(
    "aptos2019",
    DatasetSpec(
        name="aptos2019",
        read=read_aptos,
        split=stratified_image_split,
        description="APTOS 2019 fundus photographs, referable diabetic retinopathy",
        has_patients=False,
        supports_multiclass=True,
    ),
    "APTOS",
    "APTOS2019",
)

"""SIIM-ISIC Melanoma Classification 2020: melanoma vs. benign.

Layout: ``train.csv`` or ``ISIC_2020_Training_GroundTruth*.csv`` with the columns
``image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target``
and images ``jpeg/train/<image_name>.jpg`` (or ``train/``, or a pre-resized ``train_resized/``, which
is preferred when present). Task: ``target``. Split: patient-level 60/20/20, each near-duplicate
group joined with its patients (:mod:`medattn.data.duplicates`); the release's own list of
duplicates, ``ISIC_2020_Training_Duplicates.csv`` (``image_name_1,image_name_2``), is read when it
lies in the folder. Per-image metadata for subgroups: ``sex``, ``age`` (``age_approx``) and
``site`` (``anatom_site_general_challenge``).
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
from medattn.data.splits import patient_split
from medattn.errors import DataError

pd = lazy.module("pandas")  # loads on first use: listing the data sets (--help) needs no pandas

COLUMNS = (
    "image_name",
    "patient_id",
    "sex",
    "age_approx",
    "anatom_site_general_challenge",
    "diagnosis",
    "benign_malignant",
    "target",
)
IMAGE_DIRS = ("train_resized", "jpeg/train", "train")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def _label_file(data_dir: Path) -> Path:
    if (data_dir / "train.csv").is_file():
        return data_dir / "train.csv"
    found = sorted(data_dir.glob("ISIC_2020_Training_GroundTruth*.csv"))
    if not found:
        raise DataError(
            f"no train.csv or ISIC_2020_Training_GroundTruth*.csv in {data_dir}; "
            "put the ISIC 2020 ground-truth CSV there."
        )
    return found[-1]


def read_isic(data_dir: Path, opts: ReadOptions) -> Table:
    """Read the ground-truth CSV and locate the images; see the module docstring for the layout."""
    require_dir(data_dir, "ISIC 2020 data (train.csv, jpeg/train/)")
    csv = _label_file(data_dir)
    raw = read_csv(csv, COLUMNS, dtype={"image_name": str, "patient_id": str})
    folder = first_existing(data_dir, IMAGE_DIRS) or data_dir / "jpeg" / "train"
    rows = image_rows(csv, raw, "image_name", "target", folder, IMAGE_EXTS, allowed=(0, 1), expected="0 or 1")
    no_patient = raw["patient_id"].isna().to_numpy()
    patient_problems = [
        f"{csv}: image {i} has no patient_id, so it cannot be split by patient; fill in the patient id."
        for i in raw["image_name"][no_patient]
    ]
    problems = rows.label_problems + patient_problems + rows.image_problems
    meta = metadata_of(raw, {"age": "age_approx", "site": "anatom_site_general_challenge"})
    frame = pd.DataFrame(
        {"image_id": rows.ids, "path": rows.paths, "label": rows.labels, "patient_id": raw["patient_id"], **meta}
    )
    frame = frame[rows.keep & ~no_patient]
    return Table(frame=frame, num_classes=2, class_names=("benign", "melanoma"), problems=problems)


DATASETS.add(
    "isic2020",
    DatasetSpec(
        name="isic2020",
        read=read_isic,
        split=patient_split,
        description="SIIM-ISIC 2020 dermoscopy, melanoma",
    ),
    "ISIC2020",
)

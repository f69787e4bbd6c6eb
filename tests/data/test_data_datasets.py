"""Readers of the four data sets: layouts, label mapping, split sizes, no patient leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medattn.data import DATASETS, get_dataset, load_index
from medattn.data.testing import write_fake_aptos, write_fake_isic, write_fake_mimic_jpg
from medattn.errors import ConfigError


def _no_patient_leak(frame: pd.DataFrame) -> None:
    per_patient = frame.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all(), per_patient[per_patient > 1]


def _check_frame(index) -> None:
    f = index.frame
    assert list(f.columns[:5]) == ["image_id", "path", "label", "patient_id", "split"]
    assert f["image_id"].is_unique
    assert set(f["split"]) == {"train", "val", "test"}
    assert all(p.startswith("/") for p in f["path"])
    assert f["label"].dtype == np.int64


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("APTOS", "aptos2019"),
        ("aptos_2019", "aptos2019"),
        ("ISIC2020", "isic2020"),
        ("MIMICCXR", "mimic-cxr"),
        ("Demo", "demo"),
    ],
)
def test_aliases(alias: str, canonical: str) -> None:
    assert DATASETS.canonical(alias) == canonical
    assert get_dataset(alias).name == canonical


def test_unknown_dataset_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'isic2020'"):
        load_index("isic202", "/nonexistent")


def test_aptos_binary_stratified_split(aptos_dir) -> None:
    index = load_index("APTOS", aptos_dir)
    _check_frame(index)
    raw = pd.read_csv(aptos_dir / "train.csv", dtype={"id_code": str}).set_index("id_code")
    f = index.frame.set_index("image_id")
    assert (f["label"] == (raw.loc[f.index, "diagnosis"] > 0).astype(int)).all()
    assert index.num_classes == 2
    sizes = f["split"].value_counts()
    assert sizes["test"] == 6  # ceil(0.15 * 40)
    assert sizes["val"] == 9  # ceil(0.25 * 34)
    assert sizes["train"] == 25
    # stratified: every split holds (almost) the overall positive rate.
    overall = f["label"].mean()
    for name in ("train", "val", "test"):
        assert abs(index.split(name)["label"].mean() - overall) < 0.1
    assert (f["patient_id"] == f.index).all()
    # the split is a pure function of the seed
    assert load_index("aptos2019", aptos_dir).frame.equals(index.frame)


def test_aptos_multiclass_and_resized_preferred(tmp_path) -> None:
    root = write_fake_aptos(tmp_path / "a", n=40)
    write_fake_aptos(root, n=40, resized=True)  # same ids and labels, pre-resized copy
    index = load_index("aptos2019", root, multiclass=True)
    assert index.num_classes == 5
    assert set(index.frame["label"]) == {0, 1, 2, 3, 4}
    assert all("/train_resized/" in p for p in index.frame["path"])


def test_isic_patient_level_split(isic_dir) -> None:
    index = load_index("isic2020", isic_dir)
    _check_frame(index)
    _no_patient_leak(index.frame)
    patients = index.frame.groupby("split")["patient_id"].nunique()
    assert (patients["train"], patients["val"], patients["test"]) == (6, 3, 3)  # of 12 patients
    raw = pd.read_csv(isic_dir / "train.csv").set_index("image_name")
    f = index.frame.set_index("image_id")
    assert (f["label"] == raw.loc[f.index, "target"]).all()
    assert len(f) == 36


def test_isic_ground_truth_csv_name(tmp_path) -> None:
    root = write_fake_isic(tmp_path / "i", csv_name="ISIC_2020_Training_GroundTruth_v2.csv")
    assert len(load_index("ISIC2020", root).frame) == 36


@pytest.mark.parametrize("gz", [False, True])
def test_mimic_jpg_layout(tmp_path, gz: bool) -> None:
    root = write_fake_mimic_jpg(tmp_path / "m", subjects=12, gz=gz)
    index = load_index("mimic-cxr", root)
    _check_frame(index)
    _no_patient_leak(index.frame)
    meta = pd.read_csv(next(root.glob("mimic-cxr-2.0.0-metadata.csv*")), dtype=str).set_index("dicom_id")
    chex = pd.read_csv(next(root.glob("mimic-cxr-2.0.0-chexpert.csv*")), dtype={"study_id": str}).set_index("study_id")
    f = index.frame.set_index("image_id")
    assert (meta.loc[f.index, "ViewPosition"] == "AP").all()
    effusion = chex.loc[meta.loc[f.index, "study_id"], "Pleural Effusion"].to_numpy()
    assert set(effusion) <= {0.0, 1.0}  # uncertain and blank left out
    assert (f["label"].to_numpy() == effusion.astype(int)).all()
    # 24 studies x 2 AP images; 16 studies have a certain label
    assert len(f) == 32
    assert (f["patient_id"] == meta.loc[f.index, "subject_id"]).all()
    # official split: subjects 0-7 (studies 0-15: 10 certain) train, 8-9 (16-19: 4) validate,
    # 10-11 (20-23: 2) test; 2 AP images per study
    assert f["split"].value_counts().to_dict() == {"train": 20, "val": 8, "test": 4}
    assert index.notes and "8 with a blank and 8 with an uncertain" in index.notes[0] and "24 not AP" in index.notes[0]


@pytest.mark.parametrize(("policy", "n", "uncertain_label"), [("zeros", 40, 0), ("ones", 40, 1)])
def test_mimic_uncertain_policy(mimic_jpg_dir, policy: str, n: int, uncertain_label: int) -> None:
    index = load_index("MIMICCXR", mimic_jpg_dir, uncertain=policy)
    assert len(index.frame) == n
    chex = pd.read_csv(mimic_jpg_dir / "mimic-cxr-2.0.0-chexpert.csv", dtype={"study_id": str}).set_index("study_id")
    meta = pd.read_csv(mimic_jpg_dir / "mimic-cxr-2.0.0-metadata.csv", dtype=str).set_index("dicom_id")
    f = index.frame.set_index("image_id")
    effusion = chex.loc[meta.loc[f.index, "study_id"], "Pleural Effusion"].to_numpy()
    assert (f["label"].to_numpy()[effusion == -1] == uncertain_label).all()


def test_mimic_folder_layout(mimic_folders_dir) -> None:
    index = load_index("mimic-cxr", mimic_folders_dir)
    _check_frame(index)
    _no_patient_leak(index.frame)
    assert index.frame["split"].value_counts().to_dict() == {"train": 20, "val": 8, "test": 8}
    assert index.frame["label"].tolist() == [j % 2 for n in (20, 8, 8) for j in range(n)]
    assert index.frame["patient_id"].str.fullmatch(r"\d{8}").all()


def test_demo_split(demo_dir) -> None:
    index = load_index("demo", demo_dir)
    _check_frame(index)
    _no_patient_leak(index.frame)
    assert "mask_path" in index.frame.columns
    n_pat = index.frame.groupby("split")["patient_id"].nunique()
    total = n_pat.sum()
    assert abs(n_pat["train"] / total - 0.6) < 0.1 and abs(n_pat["test"] / total - 0.2) < 0.1


def test_split_accessor_aliases(demo_dir) -> None:
    index = load_index("demo", demo_dir)
    val = index.split("validation")
    assert val.equals(index.split("Val")) and val.index.equals(pd.RangeIndex(len(val)))
    with pytest.raises(ConfigError, match="unknown split"):
        index.split("holdout")


def test_low_data_regimen(aptos_dir, isic_dir) -> None:
    for name, root in (("aptos2019", aptos_dir), ("isic2020", isic_dir)):
        full = load_index(name, root)
        low = load_index(name, root, low_data_regimen=True, perc_train=0.5)
        for split in ("val", "test"):
            assert low.split(split).equals(full.split(split))
        tr_full, tr_low = full.split("train"), low.split("train")
        assert len(tr_low) == len(tr_full) // 2
        assert set(tr_low["image_id"]) <= set(tr_full["image_id"])
        assert abs(tr_low["label"].mean() - tr_full["label"].mean()) < 0.05
        # original order kept
        order = {i: k for k, i in enumerate(tr_full["image_id"])}
        assert list(tr_low["image_id"].map(order)) == sorted(tr_low["image_id"].map(order))


def test_perc_train_out_of_range(aptos_dir) -> None:
    with pytest.raises(ConfigError, match="outside"):
        load_index("aptos2019", aptos_dir, low_data_regimen=True, perc_train=1.5)


def test_options_only_where_meaningful(isic_dir) -> None:
    with pytest.raises(ConfigError, match="multiclass"):
        load_index("isic2020", isic_dir, multiclass=True)
    with pytest.raises(ConfigError, match="uncertain"):
        load_index("isic2020", isic_dir, uncertain="ones")

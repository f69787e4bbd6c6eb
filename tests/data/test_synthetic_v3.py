"""Demo set version 3: a label drawn from a visible latent through a probability (a known ceiling
below 1), ``oracle_prob`` that no model input can see, a ``site`` column and the demo split's
test-only images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medattn.data import build_loader, check_data, load_index, write_synthetic
from medattn.data.synthetic import (
    DEFAULT_TAU,
    ORACLE_COLUMN,
    RING_S0,
    SITES,
    draw_v3,
    oracle_probability,
)
from medattn.errors import ConfigError
from medattn.stages.demo import DemoConfig


def _load(root: Path) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray]]:
    frame = pd.read_csv(root / "labels.csv")
    images = [np.asarray(Image.open(root / "images" / f"{i}.png")) for i in frame["image_id"]]
    masks = [np.asarray(Image.open(root / "masks" / f"{i}.png")) > 127 for i in frame["image_id"]]
    return frame, images, masks


def _histogram_auc(frame: pd.DataFrame, images: list[np.ndarray]) -> float:
    """Cross-validated AUC of a logistic regression on colour histograms (per-channel and joint)."""
    feats = []
    for image in images:
        px = image.reshape(-1, 3)
        marginal = [np.histogram(px[:, c], bins=32, range=(0, 256))[0] for c in range(3)]
        q = px.astype(int) // 64
        joint = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64)
        feats.append(np.concatenate([*marginal, joint]) / len(px))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_predict(clf, np.stack(feats), frame["label"].to_numpy(), cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(frame["label"], scores))


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    """What `medattn data synth --out DIR` writes with its defaults (600 images, 128 px, seed 0, version 3)."""
    return write_synthetic(tmp_path_factory.mktemp("v3") / "demo")


def test_oracle_prob_is_written_and_its_test_auc_is_a_ceiling_below_one(default_set):
    frame = pd.read_csv(default_set / "labels.csv")
    assert list(frame.columns) == ["image_id", "label", "patient_id", "oracle_prob", "site", "reserved_split"]
    assert frame["oracle_prob"].between(0, 1).all() and 0.4 < frame["label"].mean() < 0.6
    test = load_index("demo", default_set).split("test")
    auc = roc_auc_score(test["label"], test[ORACLE_COLUMN])
    assert 0.85 <= auc <= 0.97, auc
    # the label is drawn, not decided: both classes occur at every oracle probability band
    mid = frame[frame["oracle_prob"].between(0.2, 0.8)]
    assert 0 < mid["label"].mean() < 1


def test_colour_histograms_carry_no_label_information(default_set):
    frame, images, _ = _load(default_set)
    assert _histogram_auc(frame, images) <= 0.65


def test_grey_level_map_does_not_point_at_the_evidence(default_set):
    frame, images, masks = _load(default_set)
    hits = [
        m.flat[im.mean(axis=2).argmax()]
        for im, m, y in zip(images, masks, frame["label"], strict=True)
        if y and m.any()
    ]
    assert len(hits) > 200 and np.mean(hits) <= 0.5


def test_the_brightest_pixels_are_the_optic_disc_not_the_evidence(default_set):
    # A removal curve ranked by brightness must not remove the ring first (it did before the optic
    # disc was drawn: the grey-level map then scored almost as well as the ground-truth mask).
    frame, images, masks = _load(default_set)
    share = []
    for im, m in zip(images, masks, strict=True):
        if m.any():
            grey = im.mean(axis=2)
            top = grey >= np.quantile(grey, 0.985)  # the brightest 1.5 % of the pixels
            share.append((top & m).sum() / top.sum())
    assert len(share) > 200 and np.mean(share) < 0.1


def test_masks_mark_the_ring_whose_strength_drives_the_label():
    draws = [draw_v3(np.random.default_rng([7, i]), 64) for i in range(200)]
    strength = np.array([d.strength for d in draws])
    assert all(d.mask.any() == (d.strength > 0) for d in draws)
    assert np.allclose([d.oracle_prob for d in draws], oracle_probability(strength, DEFAULT_TAU))
    assert 0.6 < (strength > 0).mean() < 0.9  # some images carry no evidence (empty mask)
    # the label follows the latent: rings stronger than the midpoint are mostly class 1
    labels = np.array([d.label for d in draws])
    assert labels[strength > RING_S0 + 0.2].mean() > 0.8 and labels[strength == 0].mean() < 0.2


def test_tau_moves_the_ceiling():
    """Smaller tau: a sharper label model, the oracle's AUC closer to 1 (docs/demo.md lists values).
    The same seeds draw the same images; only the label's draw from the latent changes."""

    def oracle_auc(tau: float) -> float:
        draws = [draw_v3(np.random.default_rng([11, i]), 32, tau=tau) for i in range(200)]
        return roc_auc_score([d.label for d in draws], [d.oracle_prob for d in draws])

    assert oracle_auc(0.04) > oracle_auc(DEFAULT_TAU) > oracle_auc(0.3)
    with pytest.raises(ConfigError, match="tau"):
        write_synthetic("unused", n=10, tau=0.0)
    with pytest.raises(ConfigError, match="version 3"):
        write_synthetic("unused", n=10, version=2, test_extra=5)


def test_site_column_one_site_per_patient(default_set):
    frame = pd.read_csv(default_set / "labels.csv")
    assert set(frame["site"]) == set(SITES)
    assert (frame.groupby("patient_id")["site"].nunique() == 1).all()


def test_demo_split_gives_the_test_split_600_images_and_leaves_training_alone(tmp_path):
    cfg = DemoConfig()
    root = write_synthetic(tmp_path / "demo", n=cfg.n, img_size=32, test_extra=cfg.test_extra)
    demo = load_index("demo", root)
    assert demo.frame["split"].value_counts()["test"] >= 600
    # the same set without its reserved rows: the train and val splits are the same images
    plain = tmp_path / "plain"
    plain.mkdir()
    for sub in ("images", "masks"):
        (plain / sub).symlink_to(root / sub)
    frame = pd.read_csv(root / "labels.csv")
    frame[frame["reserved_split"].isna()].drop(columns="reserved_split").to_csv(plain / "labels.csv", index=False)
    without = load_index("demo", plain)
    for split in ("train", "val"):
        assert demo.split(split)["image_id"].tolist() == without.split(split)["image_id"].tolist()
    extra = demo.frame[demo.frame["reserved_split"] == "test"]
    assert len(extra) == cfg.test_extra and (extra["split"] == "test").all()
    assert not set(extra["patient_id"]) & set(demo.frame.loc[demo.frame["split"] != "test", "patient_id"])


def _batches(root: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    index = load_index("demo", root)
    torch.manual_seed(0)  # the training augmentation draws from the global generator
    return [
        *build_loader(index, "train", img_size=32, batch_size=8, train=True, seed=0),
        *build_loader(index, "test", img_size=32, batch_size=8),
    ]


def test_no_model_input_can_see_oracle_prob(tmp_path):
    """Rewriting ``oracle_prob`` (and ``site``) leaves every training and test batch unchanged; a
    loader that fed either column to the model would change them."""
    root = write_synthetic(tmp_path / "demo", n=40, img_size=32, test_extra=8)
    before = _batches(root)
    frame = pd.read_csv(root / "labels.csv")
    frame["oracle_prob"] = 1.0 - frame["oracle_prob"]
    frame["site"] = "site_z"
    frame.to_csv(root / "labels.csv", index=False)
    after = _batches(root)
    assert len(before) == len(after)
    for (xa, ya), (xb, yb) in zip(before, after, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert ORACLE_COLUMN in load_index("demo", root).frame.columns  # read, but only for evaluation


def test_a_bad_oracle_prob_is_a_problem_not_a_crash(tmp_path):
    root = write_synthetic(tmp_path / "demo", n=20, img_size=32)
    frame = pd.read_csv(root / "labels.csv")
    frame.loc[0, "oracle_prob"] = 1.5
    frame.to_csv(root / "labels.csv", index=False)
    report = check_data("demo", root)
    assert any("oracle_prob" in p and "1.5" in p for p in report.problems)


def test_bad_tau_test_extra_and_removal_are_one_sentence(cli, one_error_line, tmp_path):
    base = ["data", "synth", "--out", tmp_path / "x", "--n", "10", "--img-size", "32"]
    one_error_line(cli([*base, "--tau", "-1"], exit_code=2), "--tau")
    one_error_line(cli([*base, "--version", "2", "--test-extra", "4"], exit_code=2), "--test-extra")
    one_error_line(cli(["interpret", "--run-id", "r", "--removal", "mean"], exit_code=2), "--removal")
    assert not (tmp_path / "x" / "labels.csv").exists()
    out = cli([*base, "--test-extra", "4"]).output
    assert "Wrote 10 plus 4 test-only synthetic images" in out
    assert len(pd.read_csv(tmp_path / "x" / "labels.csv")) == 14

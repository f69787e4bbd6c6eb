"""The synthetic demo set: determinism, masks that match the labels, learnability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from typer.testing import CliRunner

from medattn.cli import app
from medattn.data import build_loader, load_index, load_mask, write_synthetic


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    a = _files(write_synthetic(tmp_path / "a", n=16, img_size=48, seed=3))
    b = _files(write_synthetic(tmp_path / "b", n=16, img_size=48, seed=3))
    c = _files(write_synthetic(tmp_path / "c", n=16, img_size=48, seed=4))
    assert a == b
    assert len(a) == 16 * 2 + 1
    assert a.keys() == c.keys() and any(a[k] != c[k] for k in a)


def test_cli_synth(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["data", "synth", "--out", str(out), "--n", "12", "--img-size", "40", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.stdout.strip().splitlines()[-1]
    assert len(pd.read_csv(out / "labels.csv")) == 12


def test_masks_nonempty_exactly_for_lesions(demo_dir: Path) -> None:
    index = load_index("demo", demo_dir)
    frame = index.frame
    assert 0.4 < frame["label"].mean() < 0.6
    per_patient = frame.groupby("patient_id").size()
    assert per_patient.between(1, 3).all() and per_patient.mean() > 1.8
    for row in frame.itertuples():
        mask = load_mask(row.mask_path, 48)
        assert mask.dtype == bool and mask.shape == (48, 48)
        assert mask.any() == bool(row.label), row.image_id
    # masks survive the 64 px resize the demo trains at (lesion radius ≥ 4 % of the side)
    positives = frame[frame["label"] == 1]
    assert all(load_mask(p, 64).sum() >= 9 for p in positives["mask_path"])


def test_lesion_pixels_are_bright(demo_dir: Path) -> None:
    from PIL import Image

    row = load_index("demo", demo_dir).frame.query("label == 1").iloc[0]
    image = np.asarray(Image.open(row["path"]), dtype=float)
    mask = load_mask(row["mask_path"], image.shape[0])
    assert image[mask].mean() > image[~mask].mean() + 100


def _tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )


def test_learnable_by_a_small_cnn_in_a_few_cpu_epochs(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "demo", n=240, img_size=96, seed=0, version=2)
    index = load_index("demo", root)
    torch.manual_seed(0)
    model = _tiny_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = build_loader(index, "train", img_size=64, batch_size=16, train=True, seed=0)
    for _ in range(3):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for x, y in build_loader(index, "val", img_size=64, batch_size=64):
            scores.append(model(x).softmax(1)[:, 1])
            labels.append(y)
    auc = roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy())
    assert auc > 0.9, auc

"""A ``last.pt`` torn during its upload: ``--resume`` falls back to the newest complete checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest

from medattn import checkpoint as ckpt_io
from medattn import tracking
from medattn.stages import train as train_stage
from medattn.stages.train import resolve_train_config

pytestmark = pytest.mark.slow


def _artifact_dir(run_id: str) -> Path:
    return Path(unquote(urlparse(mlflow.MlflowClient().get_run(run_id).info.artifact_uri).path))


def test_torn_last_checkpoint_falls_back_and_the_run_finishes_with_steps_0_to_3(
    mlflow_store, train_tiny, tmp_path, caplog
):
    first = train_tiny(epochs=3, save_freq=1, seed=7)
    folder = _artifact_dir(first.run_id) / tracking.CHECKPOINT_DIR
    names = {p.name for p in folder.iterdir()}  # best.pt may be pruned once the model is logged
    assert {"epoch_0000.pt", "epoch_0001.pt", "epoch_0002.pt", "last.pt", "manifest.json"} <= names
    manifest = ckpt_io.Manifest.from_json((folder / "manifest.json").read_text())
    assert {n: e["epoch"] for n, e in manifest.files.items()}["last.pt"] == 2
    last = folder / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # what a kill during MLflow's copy leaves

    with caplog.at_level(logging.WARNING, logger="medattn.stages.train"):
        resumed = train_stage.train(resolve_train_config({"epochs": 4}, resume=first.run_id), progress=False)

    warnings = [r.getMessage() for r in caplog.records if r.name == "medattn.stages.train"]
    assert len(warnings) == 1, warnings
    assert "\n" not in warnings[0]
    assert "skipped the incomplete checkpoints/last.pt (truncated or corrupt" in warnings[0]
    assert "from checkpoints/epoch_0002.pt (epoch 2)" in warnings[0]
    client = mlflow.MlflowClient()
    assert resumed.run_id == first.run_id
    assert client.get_run(first.run_id).info.status == "FINISHED"
    for key in ("val_loss", "train_loss"):
        assert sorted(m.step for m in client.get_metric_history(first.run_id, key)) == [0, 1, 2, 3], key
    # the resumed run continues the manifest: the new last.pt is complete and listed with epoch 3
    final = tracking.read_manifest(first.run_id)
    assert final is not None and final.epoch("last.pt") == 3 and final.epoch("epoch_0000.pt") == 0
    path = tracking.download(first.run_id, tracking.LAST_CKPT, tmp_path / "dl")
    assert final.problem(path) is None
    assert ckpt_io.load(path)["epoch"] == 3

"""No command leaves files in the system temp folder: train, test, interpret and search run
with ``TMPDIR`` pointed at an empty folder, which holds nothing afterwards (torch's reusable compile
cache excepted); a finished run keeps its weights twice at most (``docs/storage.md``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pytest

from medattn import tracking

ALLOWED = ("torchinductor_",)
"""Torch's own compile cache, reusable across runs, may stay."""


def _left_in(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if not p.relative_to(folder).parts[0].startswith(ALLOWED)
    )


@pytest.fixture
def empty_tmpdir(tmp_path, monkeypatch) -> Path:
    """``TMPDIR`` (and Python's cached temp folder) pointed at a new empty folder."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.slow
def test_train_test_interpret_search_leave_the_temp_folder_empty(
    mlflow_store, demo_dir, tmp_path, cli, tiny_args, empty_tmpdir
):
    data = ["--dataset", "demo", "--data-dir", str(demo_dir)]
    trained = cli(["train", *data, *tiny_args, "--epochs", "2", "--save-freq", "1", "--register", "-q"]).run_id
    tracking.set_alias("medattn-demo", "champion", "1")
    cli(["train", *data, *tiny_args, "--epochs", "3", "--resume", trained, "-q"])
    assert not (left := _left_in(empty_tmpdir)), f"train left {left}"
    cli(["test", "--model-uri", "models:/medattn-demo@champion", "--n-boot", "10", "-q"])
    cli(["interpret", "--run-id", trained, "--max-images", "2", "--steps", "2", "-q"])
    assert not (left := _left_in(empty_tmpdir)), f"test / interpret left {left}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = ["search", *data, "--model", "deit_tiny", "--img-size", "32", "--epochs", "1", "--batch-sizes", "16"]
    cli([*search, "--n-trials", "1", "--storage", storage, "--study-name", "tmp", "-q"])
    assert not (left := _left_in(empty_tmpdir)), f"search left {left}"

    # the finished run keeps its weights twice: the logged model and last.pt (--resume); best.pt is gone
    names = {Path(a.path).name for a in mlflow.MlflowClient().list_artifacts(trained, tracking.CHECKPOINT_DIR)}
    assert "best.pt" not in names and "last.pt" in names
    assert tracking.read_manifest(trained).files.keys() == names - {"manifest.json"}

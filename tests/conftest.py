"""Shared fixtures: a fresh MLflow sqlite store per test (copied from a template made once per
session, because creating one runs ~6 s of migrations), CPU only, tiny synthetic data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _cpu_only():
    """Tests run on CPU with few threads (2 cores, possibly two xdist workers)."""
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def _template_store(tmp_path_factory) -> Path:
    import mlflow

    root = tmp_path_factory.mktemp("mlflow-template")
    db = root / "mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    mlflow.MlflowClient().search_experiments(max_results=1)  # creates the tables
    mlflow.set_tracking_uri(previous)
    return db


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, _template_store) -> str:
    """A private sqlite MLflow store in ``tmp_path`` (also the working directory); yields its URI."""
    import mlflow

    db = tmp_path / "mlflow.db"
    shutil.copy(_template_store, db)
    uri = f"sqlite:///{db}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A tiny synthetic demo set (60 images, 48 px) shared by the tests that train."""
    from medattn.data import write_synthetic

    out = tmp_path_factory.mktemp("demo") / "demo_data"
    write_synthetic(out, n=60, img_size=48, seed=0)
    return out

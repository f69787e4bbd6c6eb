"""Many ``medattn train`` processes started together on one folder.

Without the creation lock, processes that find no ``mlflow.db`` create its tables together and
crash (``duplicate column name: step``, ``table _alembic_tmp_tags already exists``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

pytestmark = pytest.mark.slow
WAIT_S = 900  # seven trainings on two loaded cores


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    return env


def _train_together(n: int, folder: Path, demo_dir: Path, tiny_args: list[str], tag: str) -> list[str]:
    """Start ``n`` trainings at once in ``folder`` (its default store); their outputs once all ended."""
    cmd = [sys.executable, "-m", "medattn", "train", "--dataset", "demo", "--data-dir", str(demo_dir), *tiny_args]
    procs = []
    for i in range(n):
        log = (folder / f"{tag}-{i}.log").open("wb")
        procs.append((subprocess.Popen(cmd, cwd=folder, env=_env(), stdout=log, stderr=subprocess.STDOUT), log))
    outputs = []
    try:
        for proc, log in procs:
            proc.wait(timeout=WAIT_S)
            log.close()
            outputs.append(Path(log.name).read_text())
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    for (proc, _), out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
    return outputs


def _finished_runs(db: Path) -> list[str]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=100)
    assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    for run in runs:  # every metric of every run reached the store
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0]
        assert "train_loss" in run.data.metrics and "lr" in run.data.metrics
    return [r.info.run_id for r in runs]


def test_three_then_four_trainings_at_once_in_an_empty_folder(tmp_path, demo_dir, tiny_args):
    torch.set_num_threads(1)
    folder = tmp_path / "fresh"
    folder.mkdir()
    args = [*tiny_args, "--epochs", "1"]
    _train_together(3, folder, demo_dir, args, "first")
    db = folder / "mlflow.db"
    assert (folder / "mlflow.db.lock").is_file()
    assert len(_finished_runs(db)) == 3

    _train_together(4, folder, demo_dir, args, "second")  # the store exists now: concurrent writers only
    assert len(_finished_runs(db)) == 7

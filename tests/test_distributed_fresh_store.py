"""``torchrun --nproc-per-node 2`` in a folder with no store yet: rank 0 alone creates it."""

from __future__ import annotations

import os
import subprocess

import mlflow
import pytest

from medattn import distributed

pytestmark = pytest.mark.slow


def test_torchrun_two_ranks_in_an_empty_folder_give_one_finished_run(tmp_path, demo_dir, tiny_args):
    folder = tmp_path / "fresh"
    folder.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    args = ["train", "--dataset", "demo", "--data-dir", str(demo_dir), *tiny_args, "--epochs", "2", "--device", "cpu"]
    cmd = distributed.torchrun_command(2, args)
    assert cmd[2:4] == ["torch.distributed.run", "--standalone"] and "--nproc-per-node" in cmd
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "val_loss")) == [0, 1]
    assert proc.stdout.count("Logged train run") == 1

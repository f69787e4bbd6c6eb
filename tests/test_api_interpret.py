"""`medattn interpret` / `api.interpret`: artifacts, scores, linkage, MLproject entry point, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medattn import api
from medattn.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _train(demo_dir, model, **over):
    base = {"dataset": "demo", "data_dir": str(demo_dir), "model": model, "nr_layers": 1, "img_size": 32,
            "batch_size": 16, "lr": 1e-3, "epochs": 1, "system_metrics": False}
    base.update(over)
    return api.train(api.resolve_train_config(base), progress=False).run_id


def _artifact(client, run_id, path):
    return client.download_artifacts(run_id, path)


@pytest.mark.parametrize("model", ["deit_tiny", "resnet50"])
def test_interpret_logs_maps_index_and_scores(mlflow_store, demo_dir, model):
    source = _train(demo_dir, model)
    result = api.interpret(api.InterpretConfig(run_id=source, max_images=4, batch_size=4, steps=4), progress=False)
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["medattn.source_run"] == source
    methods = ["transformer-lrp"] if model == "deit_tiny" else ["deeplift", "lrp"]
    index = pd.read_csv(_artifact(client, result.run_id, "saliency/index.csv"), dtype={"id": str})
    assert {"id", "label", "prediction", "score", "method", "file"} <= set(index.columns)
    assert sorted(index["method"].unique()) == sorted(methods)
    ids = index["id"].unique()
    assert len(ids) == 4 and len(index) == 4 * len(methods)
    grid = 32 // 16
    for row in index.itertuples():
        arr = np.load(_artifact(client, result.run_id, row.file))
        assert row.file == f"saliency/{row.method}/{row.id}.npy"
        assert arr.shape == ((grid, grid) if row.method == "transformer-lrp" else (3, 32, 32))
        assert np.isfinite(arr).all()
    inputs = {Path(p.path).name for p in client.list_artifacts(result.run_id, "inputs")}
    assert inputs == {f"{i}.png" for i in ids}
    scores = pd.read_csv(_artifact(client, result.run_id, "xai_scores.csv"), dtype={"id": str})
    means = scores.drop(columns=["id", "label"]).groupby("method").mean(numeric_only=True)
    metrics = run.data.metrics
    for method in methods:
        key = method.replace("-", "_")
        for score in ("deletion_auc", "insertion_auc", "pointing_game", "mask_mass"):
            value = means.loc[method, score]
            if np.isfinite(value):
                assert metrics[f"xai_{key}_{score}"] == pytest.approx(value, rel=1e-6, abs=1e-9)
            else:
                assert score in ("pointing_game", "mask_mass")  # no label-1 image among the first 4
    for score in ("pointing_game", "mask_mass"):
        if np.isfinite(means.loc["random", score]):
            assert metrics[f"xai_random_{score}"] == pytest.approx(means.loc["random", score], rel=1e-6)


def test_mlflow_run_interpret_entry_point(mlflow_store, demo_dir):
    source = _train(demo_dir, "deit_tiny")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = mlflow_store
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "interpret", "--env-manager", "local",
           "-P", f"run_id={source}", "-P", "max_images=2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    runs = mlflow.search_runs(search_all_experiments=True)
    row = runs[runs["tags.mlflow.project.entryPoint"] == "interpret"].iloc[0]
    assert row["status"] == "FINISHED"
    assert row["tags.medattn.source_run"] == source
    assert np.isfinite(row["metrics.xai_transformer_lrp_deletion_auc"])


@pytest.mark.parametrize(
    "methods, needle",
    [("lrp", "Error:"), ("deeplft", "did you mean")],
)
def test_interpret_bad_methods(mlflow_store, demo_dir, methods, needle):
    source = _train(demo_dir, "deit_tiny")
    before = len(mlflow.search_runs(search_all_experiments=True))
    result = runner.invoke(app, ["interpret", "--run-id", source, "--methods", methods, "--max-images", "2"])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    if methods == "lrp":
        errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and errors[0].count(". ") <= 1, result.output
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == before and not (runs["status"] == "RUNNING").any()

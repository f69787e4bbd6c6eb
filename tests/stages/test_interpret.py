"""`medattn interpret` / `interpret_stage.interpret`: artifacts, scores, linkage, MLproject entry point, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from medattn import tracking
from medattn.config import InterpretConfig
from medattn.data import load_index
from medattn.stages import interpret as interpret_stage

REPO = Path(__file__).resolve().parents[2]


def _images_with_both_classes(demo_dir: Path, at_least: int = 4) -> int:
    """How many of the first test images to explain so that both classes (lesion and none) are among them."""
    labels = load_index("demo", demo_dir).split("test")["label"].tolist()
    k = next(i for i in range(1, len(labels) + 1) if set(labels[:i]) == {0, 1})
    return max(at_least, k)


@pytest.mark.parametrize("model", ["deit_tiny", "resnet50"])
def test_interpret_logs_maps_index_and_scores(mlflow_store, demo_dir, train_tiny, model):
    source = train_tiny(model=model).run_id
    n = _images_with_both_classes(demo_dir)
    result = interpret_stage.interpret(
        InterpretConfig(run_id=source, max_images=n, batch_size=4, steps=4), progress=False
    )
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_SOURCE_RUN] == source
    methods = ["transformer-lrp"] if model == "deit_tiny" else ["deeplift", "lrp"]
    index = pd.read_csv(tracking.download(result.run_id, tracking.SALIENCY_INDEX), dtype={"id": str})
    assert {"id", "label", "prediction", "score", "method", "file"} <= set(index.columns)
    assert sorted(index["method"].unique()) == sorted(methods)
    ids = index["id"].unique()
    assert len(ids) == n and len(index) == n * len(methods)
    assert set(index["label"]) == {0, 1}, "the explained images must include lesion images"
    grid = 32 // 16
    for row in index.itertuples():
        arr = np.load(tracking.download(result.run_id, row.file))
        assert row.file == f"{tracking.SALIENCY_DIR}/{row.method}/{row.id}.npy"
        assert arr.shape == ((grid, grid) if row.method == "transformer-lrp" else (3, 32, 32))
        assert np.isfinite(arr).all()
    inputs = {Path(p.path).name for p in client.list_artifacts(result.run_id, tracking.INPUTS_DIR)}
    assert inputs == {f"{i}.png" for i in ids}
    scores = pd.read_csv(tracking.download(result.run_id, tracking.XAI_CSV), dtype={"id": str})
    means = scores.drop(columns=["id", "label"]).groupby("method").mean(numeric_only=True)
    metrics = run.data.metrics
    for method in [*methods, "random"]:
        key = method.replace("-", "_")
        for score in ("pointing_game", "mask_mass"):  # scored against the masks of the lesion images
            assert np.isfinite(means.loc[method, score]), (method, score)
            assert metrics[f"xai_{key}_{score}"] == pytest.approx(means.loc[method, score], rel=1e-6, abs=1e-9)
        if method != "random":
            for score in ("deletion_auc", "insertion_auc"):
                assert metrics[f"xai_{key}_{score}"] == pytest.approx(means.loc[method, score], rel=1e-6, abs=1e-9)


def test_mlflow_run_interpret_entry_point(mlflow_store, train_tiny):
    source = train_tiny().run_id
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = mlflow_store
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(REPO),
        "-e",
        "interpret",
        "--env-manager",
        "local",
        "-P",
        f"run_id={source}",
        "-P",
        "max_images=2",
    ]
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
def test_interpret_bad_methods(mlflow_store, train_tiny, cli, one_error_line, runs_in_store, methods, needle):
    source = train_tiny().run_id
    before = runs_in_store()
    line = one_error_line(
        cli(["interpret", "--run-id", source, "--methods", methods, "--max-images", "2"], exit_code=2), needle
    )
    if methods == "lrp":
        assert line.count(". ") <= 1, line  # one sentence
    assert runs_in_store() == before, "bad input must not start a run"

"""`medattn figures`: heat maps, originals, grid and history curves logged to the interpret run."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medattn import api, compare, figures, tracking
from medattn.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory, _template_store, demo_dir):
    """A module-wide store with one tiny DeiT training run (2 epochs) and its interpret run (2 images)."""
    root = tmp_path_factory.mktemp("figures-store")
    db = root / "mlflow.db"
    shutil.copy(_template_store, db)
    uri = f"sqlite:///{db}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            mp.delenv(var, raising=False)
        mlflow.set_tracking_uri(uri)
        cfg = api.resolve_train_config({
            "dataset": "demo", "data_dir": str(demo_dir), "model": "deit_tiny", "nr_layers": 1, "img_size": 32,
            "batch_size": 16, "lr": 1e-3, "epochs": 2, "system_metrics": False, "pretrained": "none",
            "tracking_uri": uri,
        })
        train = api.train(cfg, progress=False)
        interp = api.interpret(api.InterpretConfig(run_id=train.run_id, max_images=2, steps=2, tracking_uri=uri),
                               progress=False)
        yield {"uri": uri, "root": root, "train": train.run_id, "interpret": interp.run_id}


def _png(run_id: str, artifact: str, dst: Path) -> np.ndarray:
    return mpimg.imread(tracking.download(run_id, artifact, dst))[..., :3]


def test_figures_from_training_run_logs_maps_grid_and_history(store, tmp_path, monkeypatch):
    drawn = {}
    real = figures.history_figures

    def spy(history):
        drawn.update(real(history))
        return drawn

    monkeypatch.setattr(figures, "history_figures", spy)
    # a training run id resolves to its latest interpret run
    res = runner.invoke(app, ["figures", "--run-id", store["train"], "--alpha-overlay", "0.6"])
    assert res.exit_code == 0, res.output
    assert f"Logged interpret run {store['interpret']}" in res.output.strip().splitlines()[-1]
    rid = store["interpret"]
    client = mlflow.MlflowClient()
    index = pd.read_csv(tracking.download(rid, compare.SALIENCY_INDEX, tmp_path), dtype={"id": str})
    ids = list(dict.fromkeys(index["id"]))
    assert len(ids) == 2 and set(index["method"]) == {"transformer-lrp"}
    colour = []
    for image_id in ids:
        heat = _png(rid, compare.heat_map_artifact("transformer-lrp", image_id), tmp_path / "h")
        orig = _png(rid, f"{compare.ORIGINAL_DIR}/{image_id}.png", tmp_path / "o")
        assert heat.shape[:2] == orig.shape[:2] == (400, 400)
        assert heat.std() > 0.02 and orig.std() > 0.02  # not blank
        assert np.abs(heat - orig).mean() > 0.02  # the heat map is not the image
        # the bwr overlay puts colour on the greyscale image (an all-zero map leaves it grey, with a note)
        colour.append((heat.max(axis=2) - heat.min(axis=2)).max())
    assert max(colour) > 0.2
    grid = _png(rid, compare.GRID_FIGURE, tmp_path / "g")
    assert grid.shape[:2] == (2 * 200 + 40, 2 * 200)  # 2 images x (original + 1 method), titled
    assert grid.std() > 0.02
    # history curves: the plotted lines are the training run's logged metric values
    assert set(drawn) == set(figures.HISTORY_METRICS)
    for metric, fig in drawn.items():
        train_line, val_line = fig.axes[0].lines
        for line, key in ((train_line, f"train_{metric}"), (val_line, f"val_{metric}")):
            logged = [m.value for m in sorted(client.get_metric_history(store["train"], key), key=lambda m: m.step)]
            assert len(logged) == 2
            np.testing.assert_allclose(line.get_ydata(), logged)
        png = _png(rid, f"{compare.FIGURES_HISTORY_DIR}/{metric}.png", tmp_path / "hist")
        assert png.shape[:2] == (450, 600) and png.std() > 0.01
    assert client.get_run(rid).data.tags[compare.TAG_FIGURES] == str(2 * 2 + 1 + 3)


def _synthetic_interpret_run(experiment_id: str, rng: np.random.Generator) -> tuple[str, str]:
    """A training run with a metric history and an interpret run with (3, H, W) deeplift/lrp maps."""
    client = mlflow.MlflowClient()
    train = client.create_run(experiment_id, tags={tracking.TAG_KIND: "train", tracking.TAG_MODEL: "resnet50"})
    for step in range(3):
        for key in ("train_loss", "val_loss", "train_auc", "val_auc"):
            client.log_metric(train.info.run_id, key, float(rng.random()), step=step)
    client.set_terminated(train.info.run_id)
    run = client.create_run(experiment_id, tags={tracking.TAG_KIND: "interpret", tracking.TAG_MODEL: "resnet50",
                                                 tracking.TAG_SOURCE_RUN: train.info.run_id})
    work = Path(tempfile.mkdtemp(prefix="synthetic-interpret-"))
    rows = []
    for image_id in ("a", "b"):
        pic = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
        (work / "inputs").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pic).save(work / "inputs" / f"{image_id}.png")
        for method in ("deeplift", "lrp"):
            (work / "saliency" / method).mkdir(parents=True, exist_ok=True)
            np.save(work / "saliency" / method / f"{image_id}.npy", rng.normal(size=(3, 24, 24)).astype(np.float32))
            rows.append({"id": image_id, "label": 1, "prediction": 0, "score": 0.3, "target": 1, "method": method,
                         "file": f"saliency/{method}/{image_id}.npy", "input": f"inputs/{image_id}.png"})
    pd.DataFrame(rows).to_csv(work / "saliency" / "index.csv", index=False)
    client.log_artifacts(run.info.run_id, str(work))
    client.set_terminated(run.info.run_id)
    return train.info.run_id, run.info.run_id


def test_figures_one_method_of_cnn_maps(mlflow_store, tmp_path):
    exp = tracking.ensure_experiment("synthetic", mlflow_store)
    _, rid = _synthetic_interpret_run(exp, np.random.default_rng(0))
    result = api.figures(api.FiguresConfig(run_id=rid, saliency_maps="LRP"))
    assert sorted(result.artifacts) == sorted([
        "figures/original/a.png", "figures/original/b.png", "figures/lrp/a.png", "figures/lrp/b.png",
        "figures/grid.png", "figures/history/loss.png", "figures/history/auc.png"])
    assert result.history["val_loss"] and len(result.history["val_loss"]) == 3
    heat = _png(rid, "figures/lrp/a.png", tmp_path)
    orig = _png(rid, "figures/original/a.png", tmp_path / "o")
    assert heat.shape[:2] == (400, 400) and heat.std() > 0.02
    assert np.abs(heat - orig).mean() > 0.02
    assert (heat.max(axis=2) - heat.min(axis=2)).max() > 0.2  # red/blue relevance on a grey image
    grid = _png(rid, compare.GRID_FIGURE, tmp_path / "g")
    assert grid.shape[:2] == (2 * 200 + 40, 2 * 200)


def test_transformer_map_is_upsampled_bilinearly():
    patch = np.array([[0.0, 1.0], [2.0, 3.0]])
    up = figures.attribution_hwc(patch, (4, 4))
    assert up.shape == (4, 4, 1)
    # align_corners=False bilinear: the corners keep the patch values, the centre is their mean
    assert up[0, 0, 0] == 0.0 and up[3, 3, 0] == 3.0
    assert up[1:3, 1:3, 0].mean() == pytest.approx(1.5)
    assert figures.attribution_hwc(np.ones((3, 4, 4)), (4, 4)).shape == (4, 4, 3)


def _error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    return lines[0]


def test_figures_bad_input(mlflow_store):
    assert "does not exist" in _error_line(runner.invoke(app, ["figures", "--run-id", "0" * 32]))
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("bad", mlflow_store)
    test_run = client.create_run(exp, tags={tracking.TAG_KIND: "test"})
    client.set_terminated(test_run.info.run_id)
    assert "is a test run" in _error_line(runner.invoke(app, ["figures", "--run-id", test_run.info.run_id]))
    train = client.create_run(exp, tags={tracking.TAG_KIND: "train"})
    client.set_terminated(train.info.run_id)
    assert "no finished interpret run" in _error_line(runner.invoke(app, ["figures", "--run-id", train.info.run_id]))
    _, rid = _synthetic_interpret_run(exp, np.random.default_rng(1))
    assert "no transformer-lrp maps" in _error_line(
        runner.invoke(app, ["figures", "--run-id", rid, "--saliency-maps", "TRANSFORMER-LRP"]))
    assert "--saliency-maps" in _error_line(runner.invoke(app, ["figures", "--run-id", rid, "--saliency-maps", "x"]))

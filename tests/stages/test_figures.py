"""`medattn figures`: heat maps, originals, grid and history curves logged to the interpret run."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.image as mpimg
import mlflow
import numpy as np
import pandas as pd
import pytest

from medattn import plots, tracking
from medattn.errors import ConfigError
from medattn.stages import figures as figures_stage
from medattn.stages import interpret as interpret_stage
from medattn.stages import train as train_stage
from medattn.stages.figures import FiguresConfig
from medattn.stages.interpret import InterpretConfig
from medattn.stages.train import resolve_train_config


@pytest.fixture(scope="module")
def store(tmp_path_factory, _template_store, demo_dir, tiny_train):
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
        cfg = resolve_train_config(
            {**tiny_train, "data_dir": str(demo_dir), "epochs": 2, "pretrained": "none", "tracking_uri": uri}
        )
        train = train_stage.train(cfg, progress=False)
        interp = interpret_stage.interpret(
            InterpretConfig(run_id=train.run_id, max_images=2, steps=2, tracking_uri=uri), progress=False
        )
        yield {"uri": uri, "root": root, "train": train.run_id, "interpret": interp.run_id}


def _png(run_id: str, artifact: str, dst: Path) -> np.ndarray:
    return mpimg.imread(tracking.download(run_id, artifact, dst))[..., :3]


def test_figures_from_training_run_logs_maps_grid_and_history(store, tmp_path, monkeypatch, cli):
    drawn = {}
    real = plots.history_figures

    def spy(history):
        drawn.update(real(history))
        return drawn

    monkeypatch.setattr(plots, "history_figures", spy)
    # a training run id resolves to its latest interpret run
    res = cli(["figures", "--run-id", store["train"], "--alpha-overlay", "0.6"])
    assert f"Logged interpret run {store['interpret']}" in res.output.strip().splitlines()[-1]
    rid = store["interpret"]
    client = mlflow.MlflowClient()
    index = pd.read_csv(tracking.download(rid, tracking.SALIENCY_INDEX, tmp_path), dtype={"id": str})
    ids = list(dict.fromkeys(index["id"]))
    assert len(ids) == 2 and set(index["method"]) == {"transformer-lrp"}
    colour = []
    for image_id in ids:
        heat = _png(rid, tracking.heat_map_artifact("transformer-lrp", image_id), tmp_path / "h")
        orig = _png(rid, f"{tracking.ORIGINAL_DIR}/{image_id}.png", tmp_path / "o")
        assert heat.shape[:2] == orig.shape[:2] == (400, 400)
        assert heat.std() > 0.02 and orig.std() > 0.02  # not blank
        assert np.abs(heat - orig).mean() > 0.02  # the heat map is not the image
        # the bwr overlay puts colour on the greyscale image (an all-zero map leaves it grey, with a note)
        colour.append((heat.max(axis=2) - heat.min(axis=2)).max())
    assert max(colour) > 0.2
    grid = _png(rid, tracking.GRID_FIGURE, tmp_path / "g")
    assert grid.shape[:2] == (2 * 200 + 40, 2 * 200)  # 2 images x (original + 1 method), titled
    assert grid.std() > 0.02
    # history curves: the plotted lines are the training run's logged metric values
    assert set(drawn) == set(plots.HISTORY_METRICS)
    for metric, fig in drawn.items():
        train_line, val_line = fig.axes[0].lines
        for line, key in ((train_line, f"train_{metric}"), (val_line, f"val_{metric}")):
            logged = [m.value for m in sorted(client.get_metric_history(store["train"], key), key=lambda m: m.step)]
            assert len(logged) == 2
            np.testing.assert_allclose(line.get_ydata(), logged)
        png = _png(rid, f"{tracking.FIGURES_HISTORY_DIR}/{metric}.png", tmp_path / "hist")
        assert png.shape[:2] == (450, 600) and png.std() > 0.01
    assert client.get_run(rid).data.tags[tracking.TAG_FIGURES] == str(2 * 2 + 1 + 3)


def test_figures_one_method_of_cnn_maps(mlflow_store, tmp_path, fake_interpret_run):
    exp = tracking.ensure_experiment("synthetic", mlflow_store)
    rid = fake_interpret_run(exp, np.random.default_rng(0)).run_id
    result = figures_stage.figures(FiguresConfig(run_id=rid, saliency_maps="LRP"))
    assert sorted(result.artifacts) == sorted(
        [
            "figures/original/a.png",
            "figures/original/b.png",
            "figures/lrp/a.png",
            "figures/lrp/b.png",
            "figures/grid.png",
            "figures/history/loss.png",
            "figures/history/auc.png",
        ]
    )
    assert result.history["val_loss"] and len(result.history["val_loss"]) == 3
    heat = _png(rid, "figures/lrp/a.png", tmp_path)
    orig = _png(rid, "figures/original/a.png", tmp_path / "o")
    assert heat.shape[:2] == (400, 400) and heat.std() > 0.02
    assert np.abs(heat - orig).mean() > 0.02
    assert (heat.max(axis=2) - heat.min(axis=2)).max() > 0.2  # red/blue relevance on a grey image
    grid = _png(rid, tracking.GRID_FIGURE, tmp_path / "g")
    assert grid.shape[:2] == (2 * 200 + 40, 2 * 200)


def test_figures_max_images_draws_the_first_images_only(mlflow_store, cli, fake_interpret_run):
    exp = tracking.ensure_experiment("synthetic", mlflow_store)
    rid = fake_interpret_run(exp, np.random.default_rng(0)).run_id
    cli(["figures", "--run-id", rid, "--max-images", "1", "--saliency-maps", "lrp"])
    logged = {f.path for f in mlflow.MlflowClient().list_artifacts(rid, "figures/lrp")}
    assert logged == {"figures/lrp/a.png"}  # b, the second explained image, is not drawn
    originals = {f.path for f in mlflow.MlflowClient().list_artifacts(rid, tracking.ORIGINAL_DIR)}
    assert originals == {f"{tracking.ORIGINAL_DIR}/a.png"}
    assert FiguresConfig(run_id=rid, max_images=0).max_images is None  # 0, the CLI's and MLproject's default: all
    with pytest.raises(ConfigError, match=r"--max-images must be 0 \(every image\) or more, got -1"):
        FiguresConfig(run_id=rid, max_images=-1)


def test_transformer_map_is_upsampled_bilinearly():
    patch = np.array([[0.0, 1.0], [2.0, 3.0]])
    up = plots.attribution_hwc(patch, (4, 4))
    assert up.shape == (4, 4, 1)
    # align_corners=False bilinear: the corners keep the patch values, the centre is their mean
    assert up[0, 0, 0] == 0.0 and up[3, 3, 0] == 3.0
    assert up[1:3, 1:3, 0].mean() == pytest.approx(1.5)
    assert plots.attribution_hwc(np.ones((3, 4, 4)), (4, 4)).shape == (4, 4, 3)


def test_figures_bad_input(mlflow_store, cli, one_error_line, fake_interpret_run):
    def error_line(args):
        return one_error_line(cli(["figures", *args], exit_code=2), only=True)

    assert "does not exist" in error_line(["--run-id", "0" * 32])
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("bad", mlflow_store)
    test_run = client.create_run(exp, tags={tracking.TAG_KIND: "test"})
    client.set_terminated(test_run.info.run_id)
    assert "is a test run" in error_line(["--run-id", test_run.info.run_id])
    train = client.create_run(exp, tags={tracking.TAG_KIND: "train"})
    client.set_terminated(train.info.run_id)
    assert "no finished interpret run" in error_line(["--run-id", train.info.run_id])
    rid = fake_interpret_run(exp, np.random.default_rng(1)).run_id
    assert "no transformer-lrp maps" in error_line(["--run-id", rid, "--saliency-maps", "TRANSFORMER-LRP"])
    assert "--saliency-maps" in error_line(["--run-id", rid, "--saliency-maps", "x"])


def test_figures_accepts_every_method_interpret_logs(mlflow_store, fake_interpret_run):
    """``--saliency-maps gradcam`` is a method ``interpret`` logs, so ``figures`` draws it."""
    exp = tracking.ensure_experiment("gradcam", mlflow_store)
    rid = fake_interpret_run(exp, np.random.default_rng(2), methods=("gradcam",)).run_id
    result = figures_stage.figures(FiguresConfig(run_id=rid, saliency_maps="gradcam"))
    assert {"figures/gradcam/a.png", "figures/gradcam/b.png"} <= set(result.artifacts)

"""`medattn interpret` / `interpret_stage.interpret`: artifacts, scores, linkage, MLproject entry point, bad input."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from medattn import tracking
from medattn.data import load_index
from medattn.errors import ConfigError
from medattn.stages import interpret as interpret_stage
from medattn.stages.common import load_trained
from medattn.stages.interpret import InterpretConfig


def _images_with_both_classes(demo_dir: Path, at_least: int = 4) -> int:
    """How many of the first test images to explain so that each class (lesion and none) is among them
    twice (a bootstrap CI needs two lesion images)."""
    labels = load_index("demo", demo_dir).split("test")["label"].tolist()
    k = next(i for i in range(1, len(labels) + 1) if min(labels[:i].count(0), labels[:i].count(1)) >= 2)
    return max(at_least, k)


@pytest.mark.parametrize("model", ["deit_tiny", "resnet50"])
def test_interpret_logs_maps_index_and_scores(mlflow_store, demo_dir, train_tiny, model):
    source = train_tiny(model=model).run_id
    n = _images_with_both_classes(demo_dir)
    result = interpret_stage.interpret(
        InterpretConfig(run_id=source, max_images=n, batch_size=4, steps=4, curve_images=3, n_boot=50),
        progress=False,
    )
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_SOURCE_RUN] == source
    methods = ["transformer-lrp"] if model == "deit_tiny" else ["deeplift", "lrp"]
    index = pd.read_csv(tracking.download(result.run_id, tracking.SALIENCY_INDEX, "downloads"), dtype={"id": str})
    assert {"id", "label", "prediction", "score", "method", "file"} <= set(index.columns)
    assert sorted(index["method"].unique()) == sorted(methods)
    ids = index["id"].unique()
    assert len(ids) == n and len(index) == n * len(methods)
    assert set(index["label"]) == {0, 1}, "the explained images must include lesion images"
    grid = 32 // 16
    for row in index.itertuples():
        arr = np.load(tracking.download(result.run_id, row.file, "downloads"))
        assert row.file == f"{tracking.SALIENCY_DIR}/{row.method}/{row.id}.npy"
        assert arr.shape == ((grid, grid) if row.method == "transformer-lrp" else (3, 32, 32))
        assert np.isfinite(arr).all()
    inputs = {Path(p.path).name for p in client.list_artifacts(result.run_id, tracking.INPUTS_DIR)}
    assert inputs == {f"{i}.png" for i in ids}
    _assert_scores_match_metrics(result, run.data.metrics, methods, n)


def _assert_scores_match_metrics(result, metrics: dict, methods: list[str], n: int) -> None:
    """xai_scores.csv (id, label, source, scores) agrees with the logged means, CIs and verdicts."""
    scores = pd.read_csv(tracking.download(result.run_id, tracking.XAI_CSV, "downloads"), dtype={"id": str})
    keys = [m.replace("-", "_") for m in methods]
    baselines = [f"baseline_{b}" for b in ("random", "input", "centre", "edge")]
    sources = [*methods, *baselines, "oracle", *(f"baseline_randomized_{k}" for k in keys)]
    assert set(scores["source"]) == set(sources) and "method" not in scores.columns
    assert (scores.groupby("source").size() == n).all()
    # mask scores apply where the explained class (here the label) is the lesion and the mask is not empty
    lesion = scores.loc[scores["source"] == methods[0], "pointing_game"].notna().reset_index(drop=True)
    means = scores.drop(columns=["id", "label"]).groupby("source").mean(numeric_only=True)
    for source in sources:
        key = source.replace("-", "_")
        for score in ("pointing_game", "mask_mass"):  # scored against the masks of the lesion images only
            rows = scores[scores["source"] == source]
            assert rows.loc[rows["label"] == 0, score].isna().all(), (source, score)
            assert metrics[f"xai_{key}_{score}"] == pytest.approx(means.loc[source, score], rel=1e-5, abs=1e-7)
            assert (
                metrics[f"xai_{key}_{score}_ci_low"]
                <= metrics[f"xai_{key}_{score}"]
                <= metrics[f"xai_{key}_{score}_ci_high"]
            )
    # ROAD curves: the first curve_images=3 images with a lesion mask, for methods, baselines and the oracle
    first = lesion[lesion].index[:3]
    assert metrics["xai_n_curve_images"] == len(first) > 0
    for source in [*methods, *baselines, "oracle"]:
        rows = scores[scores["source"] == source].reset_index(drop=True)
        key = source.replace("-", "_")
        for score in ("morf_auc", "lerf_auc"):
            curve = rows[score]
            assert curve.notna().sum() == len(first) and curve[first].notna().all(), (source, score)
            assert metrics[f"xai_{key}_{score}"] == pytest.approx(curve.mean(), rel=1e-5, abs=1e-7)
        assert "deletion_auc" not in rows.columns or rows["deletion_auc"].isna().all()
    for key in keys:
        assert metrics[f"xai_{key}_passes_sanity"] in (0.0, 1.0)
        assert -1.0 <= metrics[f"xai_{key}_randomized_spearman"] <= 1.0
    assert metrics["xai_n_images"] == n and metrics["xai_n_lesion_images"] == int(lesion.sum())
    assert set(result.scores["source"]) == set(sources)


def test_randomized_model_is_a_fresh_factory_model(mlflow_store, train_tiny):
    """The randomisation twin: the trained architecture with the factory's init under the given seed,
    reproducible, unlike the trained weights, and the global RNG left as found."""
    loaded = load_trained(train_tiny().run_id)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = interpret_stage.randomized_model(loaded, 1, torch.device("cpu"))
    assert torch.equal(torch.rand(3), before), "the global RNG must be left as found"
    b = interpret_stage.randomized_model(loaded, 1, torch.device("cpu"))
    c = interpret_stage.randomized_model(loaded, 2, torch.device("cpu"))
    trained, sa, sb, sc = (m.state_dict() for m in (loaded.model, a, b, c))
    assert sa.keys() == trained.keys() and not a.training
    weights = [k for k, v in sa.items() if v.is_floating_point() and v.ndim > 1]
    assert all(torch.equal(sa[k], sb[k]) for k in weights)
    assert not all(torch.equal(sa[k], sc[k]) for k in weights)
    assert not any(torch.equal(sa[k], trained[k]) for k in weights)


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"curve_images": 0}, "--curve-images"),
        ({"randomized_images": 0}, "--randomized-images"),
        ({"n_boot": -1}, "--n-boot"),
    ],
)
def test_interpret_config_rejects_bad_caps(over, needle):
    with pytest.raises(ConfigError, match=needle):
        InterpretConfig(run_id="r", **over)


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

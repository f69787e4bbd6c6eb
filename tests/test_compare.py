"""`medattn compare`: the table equals the logged metrics, the low-data figure, scores, grids, cases."""

from __future__ import annotations

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
from medattn.errors import ConfigError

runner = CliRunner()
IDS = ["i1", "i2", "i3", "i4", "i5", "i6"]
LABELS = [1, 1, 0, 0, 1, 0]
# Full-data predictions; the 50 % runs predict something else, which --cases must ignore.
PREDS = {"resnet50": [1, 0, 0, 1, 1, 0], "cbam_resnet50": [1, 0, 0, 0, 0, 0]}
EXPECTED_CASES = {"tp": ["i1"], "tn": ["i3", "i6"], "fp": [], "fn": ["i2"],
                  "agree": ["i1", "i2", "i3", "i6"], "disagree": ["i4", "i5"]}


def _test_run(client, exp: str, model: str, perc: float, rng: np.random.Generator) -> str:
    run = client.create_run(exp, run_name=f"test-{model}-{perc}", tags={
        tracking.TAG_KIND: "test", tracking.TAG_MODEL: model, tracking.TAG_PERC_TRAIN: str(perc),
        tracking.TAG_SPLIT: "test", tracking.TAG_SOURCE_RUN: f"train-{model}-{perc}"})
    rid = run.info.run_id
    auc = float(rng.uniform(0.6, 0.9))
    for key, value in {"test_auc": auc, "test_auc_ci_low": auc - 0.1, "test_auc_ci_high": auc + 0.05,
                       "test_balanced_accuracy": float(rng.random()), "test_balanced_accuracy_ci_low": 0.1,
                       "test_balanced_accuracy_ci_high": 0.9, "test_accuracy": float(rng.random()),
                       "test_f1": float(rng.random()), "test_n_images": 6.0}.items():
        client.log_metric(rid, key, value)
    preds = PREDS[model] if perc == 1.0 else [1 - p for p in PREDS[model]]
    frame = pd.DataFrame({"id": IDS, "label": LABELS, "score": [0.5] * 6, "prediction": preds})
    client.log_text(rid, frame.to_csv(index=False), tracking.PREDICTIONS)
    client.set_terminated(rid)
    return rid


def _interpret_run(client, exp: str, model: str, rng: np.random.Generator) -> str:
    run = client.create_run(exp, run_name=f"interpret-{model}", tags={
        tracking.TAG_KIND: "interpret", tracking.TAG_MODEL: model, tracking.TAG_PERC_TRAIN: "1.0"})
    rid = run.info.run_id
    client.log_param(rid, "methods", "deeplift,lrp")
    work = Path(tempfile.mkdtemp(prefix="synthetic-interpret-"))
    rows = []
    for image_id in ("i1", "i2"):
        (work / "inputs").mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(work / "inputs" / f"{image_id}.png")
        for method in ("deeplift", "lrp"):
            (work / "saliency" / method).mkdir(parents=True, exist_ok=True)
            np.save(work / "saliency" / method / f"{image_id}.npy", rng.normal(size=(3, 16, 16)).astype(np.float32))
            rows.append({"id": image_id, "label": 1, "prediction": 1, "score": 0.7, "target": 1, "method": method,
                         "file": f"saliency/{method}/{image_id}.npy", "input": f"inputs/{image_id}.png"})
    pd.DataFrame(rows).to_csv(work / "saliency" / "index.csv", index=False)
    client.log_artifacts(rid, str(work))
    for method in ("deeplift", "lrp", "random"):
        for score in ("deletion_auc", "pointing_game"):
            client.log_metric(rid, f"xai_{method}_{score}", float(rng.random()))
    client.set_terminated(rid)
    return rid


@pytest.fixture
def variants(mlflow_store):
    """2 variants x 2 training fractions of synthetic finished test runs, plus one interpret run each."""
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("cmp", mlflow_store)
    rng = np.random.default_rng(0)
    tests = {(m, p): _test_run(client, exp, m, p, rng) for m in PREDS for p in (0.5, 1.0)}
    interp = {m: _interpret_run(client, exp, m, rng) for m in PREDS}
    # a running test run and a validation-split test run are not compared
    client.create_run(exp, tags={tracking.TAG_KIND: "test", tracking.TAG_MODEL: "resnet50"})
    val = client.create_run(exp, tags={tracking.TAG_KIND: "test", tracking.TAG_MODEL: "deit_tiny",
                                       tracking.TAG_SPLIT: "validation"})
    client.log_metric(val.info.run_id, "test_auc", 0.5)
    client.set_terminated(val.info.run_id)
    return {"exp": exp, "tests": tests, "interpret": interp}


def test_compare_table_and_figures_equal_logged_metrics(variants, monkeypatch, tmp_path):
    seen = {}
    real = figures.low_data_figure

    def spy(rows, metric, **kw):
        seen["fig"] = real(rows, metric, **kw)
        return seen["fig"]

    monkeypatch.setattr(figures, "low_data_figure", spy)
    result = api.compare(api.CompareConfig(experiment="cmp"))
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.tags[tracking.TAG_KIND] == "compare" and run.info.status == "FINISHED"
    logged = pd.read_csv(tracking.download(result.run_id, compare.COMPARISON_CSV, tmp_path))
    assert len(logged) == 4
    assert set(zip(logged["model"], logged["perc_train"], strict=True)) == set(variants["tests"])
    for _, row in logged.iterrows():
        metrics = client.get_run(row["run_id"]).data.metrics
        assert variants["tests"][(row["model"], row["perc_train"])] == row["run_id"]
        for key in ("test_auc", "test_auc_ci_low", "test_auc_ci_high", "test_balanced_accuracy",
                    "test_balanced_accuracy_ci_low", "test_accuracy", "test_f1"):
            assert row[key] == pytest.approx(metrics[key], abs=1e-12), key
        assert np.isnan(row["test_sensitivity"])  # not logged by these runs: left empty
    # the low-data figure: one line per variant, one point per fraction, y = the logged metric
    ax = seen["fig"].axes[0]
    assert sorted(line.get_label() for line in ax.lines) == sorted(PREDS)
    for line in ax.lines:
        np.testing.assert_allclose(line.get_xdata(), [50.0, 100.0])
        want = [client.get_run(variants["tests"][(line.get_label(), p)]).data.metrics["test_auc"] for p in (0.5, 1.0)]
        np.testing.assert_allclose(line.get_ydata(), want)
    styles = {line.get_label(): (line.get_color(), line.get_linestyle()) for line in ax.lines}
    assert styles["resnet50"][0] == styles["cbam_resnet50"][0]  # same family, same colour
    assert styles["resnet50"][1] != styles["cbam_resnet50"][1]  # different attention, different style
    # explanation scores: one row per model x method x score, equal to the interpret runs' metrics
    xai = pd.read_csv(tracking.download(result.run_id, compare.XAI_CSV, tmp_path / "x"))
    assert len(xai) == 2 * 3 * 2
    for _, row in xai.iterrows():
        key = f"xai_{row['method']}_{row['score']}"
        assert row["value"] == pytest.approx(client.get_run(row["run_id"]).data.metrics[key])
    for artifact in (compare.LOW_DATA_FIGURE, compare.XAI_FIGURE, compare.COMPARE_GRID_FIGURE):
        png = mpimg.imread(tracking.download(result.run_id, artifact, tmp_path / "f"))
        assert png[..., :3].std() > 0.01, artifact
    grid = mpimg.imread(tracking.download(result.run_id, compare.COMPARE_GRID_FIGURE, tmp_path / "g"))
    assert grid.shape[:2] == (2 * 200 + 40, (1 + 2 * 2) * 200)  # 2 images x (original + 2 models x 2 methods)


@pytest.mark.parametrize("case", compare.CASES)
def test_case_ids_by_hand(case):
    preds = {m: pd.DataFrame({"id": IDS, "label": LABELS, "prediction": p}) for m, p in PREDS.items()}
    assert compare.case_ids(preds, case) == EXPECTED_CASES[case]


def test_case_ids_reject_multiclass_outcomes():
    preds = {"a": pd.DataFrame({"id": ["x"], "label": [2], "prediction": [2]})}
    with pytest.raises(ConfigError):
        compare.case_ids(preds, "tp")
    assert compare.case_ids(preds, "agree") == ["x"]


def test_compare_cases_command(variants, tmp_path):
    res = runner.invoke(app, ["compare", "--experiment", "cmp", "--cases", "tn"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("| model | perc_train | test_auc |")
    assert "2 images where the models are 'tn': i3, i6" in res.output
    assert lines[-1].startswith("Logged compare run ") and "in experiment 'cmp'" in lines[-1]
    rid = lines[-1].split(" run ")[1].split()[0]
    cases = pd.read_csv(tracking.download(rid, compare.cases_csv("tn"), tmp_path), dtype={"id": str})
    assert cases["id"].tolist() == ["i3", "i6"]
    assert cases["prediction_resnet50"].tolist() == [0, 0]
    # tp selects i1, which both interpret runs explained: its grid is drawn
    res = runner.invoke(app, ["compare", "--experiment", "cmp", "--cases", "tp"])
    assert res.exit_code == 0, res.output
    rid = res.output.strip().splitlines()[-1].split(" run ")[1].split()[0]
    grid = mpimg.imread(tracking.download(rid, compare.cases_figure("tp"), tmp_path / "tp"))
    assert grid.shape[:2] == (200 + 40, 5 * 200)
    assert mlflow.MlflowClient().get_run(rid).data.metrics["cases_tp"] == 1.0


def _error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    return lines[0]


def test_compare_bad_input(mlflow_store):
    assert "does not exist" in _error_line(runner.invoke(app, ["compare", "--experiment", "nope"]))
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("only-train", mlflow_store)
    client.set_terminated(client.create_run(exp, tags={tracking.TAG_KIND: "train"}).info.run_id)
    assert "no finished test runs" in _error_line(runner.invoke(app, ["compare", "--experiment", "only-train"]))
    assert "--cases" in _error_line(runner.invoke(app, ["compare", "--experiment", "only-train", "--cases", "tpp"]))
    assert not [r for r in client.search_runs([exp]) if r.data.tags.get(tracking.TAG_KIND) == "compare"]

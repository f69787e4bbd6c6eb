"""`medattn compare`: the table equals the logged metrics, the low-data figure, scores, grids, cases."""

from __future__ import annotations

import matplotlib.image as mpimg
import mlflow
import numpy as np
import pandas as pd
import pytest

from medattn import plots, tracking
from medattn.errors import ConfigError
from medattn.stages import compare, compare_tables
from medattn.stages.compare import CompareConfig

IDS = ["i1", "i2", "i3", "i4", "i5", "i6"]
LABELS = [1, 1, 0, 0, 1, 0]
# Full-data predictions; the 50 % runs predict something else, which --cases must ignore.
PREDS = {"resnet50": [1, 0, 0, 1, 1, 0], "cbam_resnet50": [1, 0, 0, 0, 0, 0]}
EXPECTED_CASES = {
    "tp": ["i1"],
    "tn": ["i3", "i6"],
    "fp": [],
    "fn": ["i2"],
    "agree": ["i1", "i2", "i3", "i6"],
    "disagree": ["i4", "i5"],
}


def _test_run(client, exp: str, model: str, perc: float, rng: np.random.Generator) -> str:
    run = client.create_run(
        exp,
        run_name=f"test-{model}-{perc}",
        tags={
            tracking.TAG_KIND: "test",
            tracking.TAG_MODEL: model,
            tracking.TAG_PERC_TRAIN: str(perc),
            tracking.TAG_SPLIT: "test",
            tracking.TAG_SOURCE_RUN: f"train-{model}-{perc}",
        },
    )
    rid = run.info.run_id
    auc = float(rng.uniform(0.6, 0.9))
    for key, value in {
        "test_auc": auc,
        "test_auc_ci_low": auc - 0.1,
        "test_auc_ci_high": auc + 0.05,
        "test_balanced_accuracy": float(rng.random()),
        "test_balanced_accuracy_ci_low": 0.1,
        "test_balanced_accuracy_ci_high": 0.9,
        "test_accuracy": float(rng.random()),
        "test_f1": float(rng.random()),
        "test_n_images": 6.0,
    }.items():
        client.log_metric(rid, key, value)
    preds = PREDS[model] if perc == 1.0 else [1 - p for p in PREDS[model]]
    frame = pd.DataFrame({"id": IDS, "label": LABELS, "score": [0.5] * 6, "prediction": preds})
    client.log_text(rid, frame.to_csv(index=False), tracking.PREDICTIONS)
    client.set_terminated(rid)
    return rid


@pytest.fixture
def variants(mlflow_store, fake_interpret_run):
    """2 variants x 2 training fractions of synthetic finished test runs, plus one interpret run each."""
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("cmp", mlflow_store)
    rng = np.random.default_rng(0)
    tests = {(m, p): _test_run(client, exp, m, p, rng) for m in PREDS for p in (0.5, 1.0)}
    interp = {
        m: fake_interpret_run(
            exp,
            rng,
            model=m,
            ids=("i1", "i2"),
            size=16,
            prediction=1,
            perc_train="1.0",
            xai_scores=("deletion_auc", "pointing_game"),
            with_train=False,
        ).run_id
        for m in PREDS
    }
    # a running test run and a validation-split test run are not compared
    client.create_run(exp, tags={tracking.TAG_KIND: "test", tracking.TAG_MODEL: "resnet50"})
    val = client.create_run(
        exp, tags={tracking.TAG_KIND: "test", tracking.TAG_MODEL: "deit_tiny", tracking.TAG_SPLIT: "validation"}
    )
    client.log_metric(val.info.run_id, "test_auc", 0.5)
    client.set_terminated(val.info.run_id)
    return {"exp": exp, "tests": tests, "interpret": interp}


def test_compare_table_and_figures_equal_logged_metrics(variants, monkeypatch, tmp_path):
    seen = {}
    real = plots.low_data_figure

    def spy(rows, metric, **kw):
        seen["fig"] = real(rows, metric, **kw)
        return seen["fig"]

    monkeypatch.setattr(plots, "low_data_figure", spy)
    result = compare.compare(CompareConfig(experiment="cmp"))
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.tags[tracking.TAG_KIND] == "compare" and run.info.status == "FINISHED"
    logged = pd.read_csv(tracking.download(result.run_id, tracking.COMPARISON_CSV, tmp_path))
    assert len(logged) == 4
    assert set(zip(logged["model"], logged["perc_train"], strict=True)) == set(variants["tests"])
    for _, row in logged.iterrows():
        metrics = client.get_run(row["run_id"]).data.metrics
        assert variants["tests"][(row["model"], row["perc_train"])] == row["run_id"]
        for key in (
            "test_auc",
            "test_auc_ci_low",
            "test_auc_ci_high",
            "test_balanced_accuracy",
            "test_balanced_accuracy_ci_low",
            "test_accuracy",
            "test_f1",
        ):
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
    xai = pd.read_csv(tracking.download(result.run_id, tracking.XAI_CSV, tmp_path / "x"))
    assert len(xai) == 2 * 3 * 2
    for _, row in xai.iterrows():
        key = f"xai_{row['method']}_{row['score']}"
        assert row["value"] == pytest.approx(client.get_run(row["run_id"]).data.metrics[key])
    for artifact in (tracking.LOW_DATA_FIGURE, tracking.XAI_FIGURE, tracking.COMPARE_GRID_FIGURE):
        png = mpimg.imread(tracking.download(result.run_id, artifact, tmp_path / "f"))
        assert png[..., :3].std() > 0.01, artifact
    grid = mpimg.imread(tracking.download(result.run_id, tracking.COMPARE_GRID_FIGURE, tmp_path / "g"))
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


def test_compare_cases_command(variants, tmp_path, cli):
    res = cli(["compare", "--experiment", "cmp", "--cases", "tn"])
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("| model | perc_train | test_auc |")
    assert "2 images where the models are 'tn': i3, i6" in res.output
    assert lines[-1].startswith("Logged compare run ") and "in experiment 'cmp'" in lines[-1]
    rid = res.run_id
    cases = pd.read_csv(tracking.download(rid, tracking.cases_csv("tn"), tmp_path), dtype={"id": str})
    assert cases["id"].tolist() == ["i3", "i6"]
    assert cases["prediction_resnet50"].tolist() == [0, 0]
    # tp selects i1, which both interpret runs explained: its grid is drawn
    rid = cli(["compare", "--experiment", "cmp", "--cases", "tp"]).run_id
    grid = mpimg.imread(tracking.download(rid, tracking.cases_figure("tp"), tmp_path / "tp"))
    assert grid.shape[:2] == (200 + 40, 5 * 200)
    assert mlflow.MlflowClient().get_run(rid).data.metrics["cases_tp"] == 1.0


def test_compare_bad_input(mlflow_store, cli, one_error_line):
    def error_line(args):
        return one_error_line(cli(["compare", *args], exit_code=2), only=True)

    assert "does not exist" in error_line(["--experiment", "nope"])
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("only-train", mlflow_store)
    client.set_terminated(client.create_run(exp, tags={tracking.TAG_KIND: "train"}).info.run_id)
    assert "no finished test runs" in error_line(["--experiment", "only-train"])
    assert "--cases" in error_line(["--experiment", "only-train", "--cases", "tpp"])
    assert not [r for r in client.search_runs([exp]) if r.data.tags.get(tracking.TAG_KIND) == "compare"]


def test_compare_shows_the_oracle_as_the_auc_reference(variants, monkeypatch, tmp_path):
    """Test runs on a data set with a known ceiling: the table gains the oracle's AUC and each gap,
    the AUC figure a dashed reference line at the oracle's AUC."""
    client = mlflow.MlflowClient()
    for rid in variants["tests"].values():
        auc = client.get_run(rid).data.metrics["test_auc"]
        for key, value in {"auc": 0.93, "auc_ci_low": 0.91, "auc_ci_high": 0.95, "gap": 0.93 - auc}.items():
            client.log_metric(rid, f"test_oracle_{key}", value)
    seen = {}
    real = plots.low_data_figure

    def spy(rows, metric, **kw):
        seen["fig"] = real(rows, metric, **kw)
        return seen["fig"]

    monkeypatch.setattr(plots, "low_data_figure", spy)
    result = compare.compare(CompareConfig(experiment="cmp"))
    logged = pd.read_csv(tracking.download(result.run_id, tracking.COMPARISON_CSV, tmp_path))
    assert (logged["test_oracle_auc"] == 0.93).all()
    np.testing.assert_allclose(logged["test_oracle_gap"], 0.93 - logged["test_auc"], atol=1e-12)
    lines = {line.get_label(): line for line in seen["fig"].axes[0].lines}
    oracle = [label for label in lines if label.startswith("oracle")]
    assert oracle == ["oracle 0.930 (known ceiling)"]
    np.testing.assert_allclose(lines[oracle[0]].get_ydata(), [0.93, 0.93])
    # without the oracle (another metric), no reference line and no oracle columns are invented
    assert compare_tables.oracle_reference(logged, "test_balanced_accuracy") is None

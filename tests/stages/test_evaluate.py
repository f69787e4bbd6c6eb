"""``medattn test`` (the evaluate stage): a linked test run with ``test_*`` metrics and predictions."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from medattn import tracking
from medattn.data import load_index
from medattn.errors import ConfigError
from medattn.stages import evaluate as evaluate_stage
from medattn.stages.evaluate import TestConfig

TEST_METRICS = (
    "test_accuracy",
    "test_balanced_accuracy",
    "test_precision",
    "test_recall",
    "test_f1",
    "test_sensitivity",
    "test_specificity",
    "test_auc",
    "test_auc_ci_low",
    "test_auc_ci_high",
    "test_balanced_accuracy_ci_low",
    "test_balanced_accuracy_ci_high",
)


def test_test_by_run_id_and_by_checkpoint(mlflow_store, demo_dir, train_tiny, cli, tmp_path):
    source = train_tiny().run_id
    # by run id (CLI): test_* metrics, predictions.csv with exactly the test split's ids and labels
    run_id = cli(["test", "--run-id", source, "--n-boot", "50"]).run_id
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_SOURCE_RUN] == source
    assert run.data.tags[tracking.TAG_KIND] == "test"
    assert run.data.tags[tracking.TAG_SPLIT] == "test"
    m = run.data.metrics
    assert set(TEST_METRICS) <= set(m)
    test_split = load_index("demo", demo_dir).split("test")
    preds = pd.read_csv(tracking.download(run_id, tracking.PREDICTIONS, "downloads"), dtype={"id": str})
    assert preds["id"].tolist() == test_split["image_id"].astype(str).tolist()
    assert preds["label"].tolist() == test_split["label"].tolist()
    assert m["test_accuracy"] == pytest.approx((preds["label"] == preds["prediction"]).mean())
    assert m["test_auc_ci_low"] <= m["test_auc"] <= m["test_auc_ci_high"]
    figs = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert figs == {"figures/roc_curve.png", "figures/confusion_matrix.png", "figures/reliability.png"}
    # calibration and the validation-chosen operating points in every run (docs/evaluation.md)
    assert {"test_ece", "test_brier", "test_sens_at_spec90", "test_spec_at_sens95"} <= set(m)
    assert "threshold_spec90" in run.data.params

    # by checkpoint file (API): the same model gives the same metrics, and no source run
    path = tracking.model_weights(source, tmp_path)
    by_ckpt = evaluate_stage.test(TestConfig(ckpt=str(path), n_boot=50), progress=False)
    assert by_ckpt.source_run_id is None
    for key in ("test_auc", "test_accuracy", "test_balanced_accuracy", "test_f1"):
        assert by_ckpt.metrics[key] == pytest.approx(m[key]), key


def test_python_api_rejects_what_the_cli_rejects():
    """Validation lives in the config constructor: the API refuses before any work, like the CLI."""
    with pytest.raises(ConfigError, match="--n-boot must be 0 or more"):
        TestConfig(run_id="0123456789abcdef", n_boot=-1)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--run-id", "0123456789abcdef"], "does not exist"),
        (["--model-uri", "models:/medattn-demo@champion"], "does not resolve"),
        ([], "exactly one of --run-id, --model-uri or --ckpt"),
        (["--ckpt", "missing.pt"], "does not exist"),
        (["--ckpt", "truncated.pt"], "truncated or corrupt"),
    ],
    ids=["test-run-id", "alias", "no-source", "ckpt-missing", "ckpt-truncated"],
)
def test_bad_input_is_one_sentence_and_exit_2(mlflow_store, cli, one_error_line, runs_in_store, args, needle):
    """Each mistake: exit 2, one ``Error:`` line with the needle, and no run at all (not even a FAILED one)."""
    Path("truncated.pt").write_bytes(b"PK\x03\x04 not a zip")
    one_error_line(cli(["test", *args], exit_code=2), needle)
    assert runs_in_store() == {}

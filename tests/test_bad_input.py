"""Bad input across commands: one ``Error:`` sentence, exit code 2, no traceback, no RUNNING run.

The mistakes covered in ``tests/test_api_train.py`` (unknown model/data set, ``--perc-train``,
missing data folder, unknown run ids, alias not set, ...) and ``tests/test_search.py`` (search
spaces) are not repeated here; the README's troubleshooting table lists all of them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medattn import api, tracking
from medattn.cli import app

runner = CliRunner()
TINY = ["--model", "deit_tiny", "--nr-layers", "1", "--img-size", "32", "--batch-size", "16", "--lr", "1e-3",
        "--no-system-metrics", "--epochs", "1"]


def _tiny_run(demo_dir: Path, **over) -> api.TrainResult:
    """Train a one-epoch, one-block DeiT on the demo set (the setup some mistakes need)."""
    base = {"dataset": "demo", "data_dir": str(demo_dir), "model": "deit_tiny", "nr_layers": 1, "img_size": 32,
            "batch_size": 16, "lr": 1e-3, "epochs": 1, "system_metrics": False}
    base.update(over)
    return api.train(api.resolve_train_config(base), progress=False)


def _no_column_dir(demo_dir: Path, tmp_path: Path) -> list[str]:
    """A copy of the demo set whose labels.csv lacks the ``label`` column."""
    bad = tmp_path / "no_label_column"
    shutil.copytree(demo_dir, bad)
    frame = pd.read_csv(bad / "labels.csv")
    frame.drop(columns=["label"]).to_csv(bad / "labels.csv", index=False)
    return ["train", "--dataset", "demo", "--data-dir", str(bad), *TINY]


def _other_architecture(demo_dir: Path, tmp_path: Path) -> list[str]:
    """``train --ckpt`` a deit_tiny checkpoint while asking for densenet121."""
    res = _tiny_run(demo_dir)
    path = tracking.download(res.run_id, tracking.LAST_CKPT, tmp_path / "dl")
    return ["train", "--dataset", "demo", "--data-dir", str(demo_dir), "--ckpt", str(path), "--model", "densenet121",
            "--img-size", "32", "--batch-size", "16", "--no-system-metrics", "--epochs", "2", "--pretrained", "none"]


def _resume_not_longer(demo_dir: Path, tmp_path: Path) -> list[str]:
    """``train --resume`` a finished one-epoch run with ``--epochs 1``."""
    res = _tiny_run(demo_dir)
    return ["train", "--resume", res.run_id, "--epochs", "1"]


def _promote_empty(demo_dir: Path, tmp_path: Path) -> list[str]:
    """``promote`` an experiment that exists but holds no finished training run (only a failed one)."""
    exp = mlflow.create_experiment("medattn-empty", artifact_location=(tmp_path / "mlruns" / "empty").as_uri())
    with mlflow.start_run(experiment_id=exp, tags={tracking.TAG_KIND: "train"}):
        pass
    mlflow.MlflowClient().set_terminated(mlflow.last_active_run().info.run_id, "FAILED")
    return ["promote", "--experiment", "medattn-empty"]


def _static(args: list[str]) -> Callable[[Path, Path], list[str]]:
    """An argv that needs no setup (``{demo}`` becomes the demo data folder)."""
    return lambda demo_dir, tmp_path: [a.replace("{demo}", str(demo_dir)) for a in args]


# (id, build the argv (may set up runs first), needle expected in the one Error: line)
CASES = [
    ("deit-img-size", _static(["train", "--dataset", "demo", "--data-dir", "{demo}", *TINY, "--img-size", "50"]),
     "multiple of its patch size 16"),
    ("ckpt-other-architecture", _other_architecture, "model='deit_tiny'"),
    ("unreachable-tracking-uri",
     _static(["train", "--dataset", "demo", "--data-dir", "{demo}", *TINY, "--tracking-uri", "http://127.0.0.1:9"]),
     "cannot reach the MLflow tracking server 'http://127.0.0.1:9'"),
    ("batch-not-divisible-by-nproc",
     _static(["train", "--dataset", "demo", "--data-dir", "{demo}", *TINY, "--batch-size", "15", "--nproc", "2"]),
     "must split evenly over 2 processes"),
    ("split-holdout", _static(["test", "--run-id", "0123456789abcdef", "--split", "holdout"]), "unknown split 'holdout'"),
    ("interpret-target", _static(["interpret", "--run-id", "0123456789abcdef", "--target", "foo"]),
     "--target must be label or pred"),
    ("n-boot-negative", _static(["test", "--run-id", "0123456789abcdef", "--n-boot", "-1"]),
     "--n-boot must be 0 or more"),
    ("cuda-without-gpu", _static(["train", "--dataset", "demo", "--data-dir", "{demo}", *TINY, "--device", "cuda"]),
     "has no CUDA GPU"),
    ("csv-missing-column", _no_column_dir, "lacks the required column(s) 'label'"),
    ("promote-no-finished-run", _promote_empty, "no FINISHED training run"),
    ("resume-epochs-not-larger", _resume_not_longer, "pass --epochs larger than 1"),
]


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so --device cuda is no mistake")


@pytest.mark.parametrize(
    "build, needle",
    [pytest.param(b, n, id=i, marks=[NO_CUDA] if i == "cuda-without-gpu" else []) for i, b, n in CASES],
)
def test_bad_input_is_one_sentence_and_exit_2(mlflow_store, demo_dir, tmp_path, build, needle):
    """Each mistake: exit 2, exactly one ``Error:`` line holding the needle, no traceback, no new run."""
    args = build(demo_dir, tmp_path)
    before = {r.info.run_id: r.info.status for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    start = time.monotonic()
    res = runner.invoke(app, args)
    elapsed = time.monotonic() - start
    out = res.output
    assert res.exit_code == 2, out + repr(res.exception)
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, out
    assert needle in errors[0], out
    assert "Traceback" not in out
    assert elapsed < 30, f"took {elapsed:.1f} s"
    mlflow.set_tracking_uri(mlflow_store)
    after = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert not [r.info.run_id for r in after if r.info.status == "RUNNING"]
    assert {r.info.run_id for r in after} == set(before), "bad input must not start a run"


def test_unreachable_tracking_server_fails_fast(mlflow_store, demo_dir):
    """MLflow retries an unreachable http server for minutes; medattn gives up within seconds."""
    start = time.monotonic()
    res = runner.invoke(app, ["test", "--run-id", "0123456789abcdef", "--tracking-uri", "http://127.0.0.1:9"])
    assert res.exit_code == 2, res.output
    assert time.monotonic() - start < 10
    assert "cannot reach the MLflow tracking server" in res.output

"""Shared fixtures: a fresh MLflow sqlite store per test (copied from a template made once per
session, because creating one runs ~6 s of migrations), CPU only, tiny synthetic data, and the
helpers many test files need (the tiny training config, a CLI runner that returns the run id, the
one-error-line check, a fake interpret run, the exact list of runs in the store)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medattn import tracking
from medattn.cli import app
from medattn.config import TrainConfig
from medattn.data import write_synthetic
from medattn.stages import train as train_stage
from medattn.stages.search import SearchConfig
from medattn.stages.train import TrainResult, resolve_train_config

# The tiny training setup every training test starts from: a one-block DeiT at 32 px, one epoch.
TINY_TRAIN = {
    "dataset": "demo",
    "model": "deit_tiny",
    "nr_layers": 1,
    "img_size": 32,
    "batch_size": 16,
    "lr": 1e-3,
    "epochs": 1,
    "system_metrics": False,
}
# The same on the command line (without --dataset/--data-dir/--epochs, which tests give themselves).
TINY_ARGS = [
    "--model",
    "deit_tiny",
    "--nr-layers",
    "1",
    "--img-size",
    "32",
    "--batch-size",
    "16",
    "--lr",
    "1e-3",
    "--no-system-metrics",
]


@pytest.fixture(autouse=True, scope="session")
def _cpu_only():
    """Tests run on CPU with few threads: the cores shared among the xdist workers (``make test``
    runs one per core), so that intra-op threads of two workers do not spin against each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(autouse=True, scope="session")
def _private_tmpdir(tmp_path_factory):
    """The temp folder of this session (and of the subprocesses it starts) is a folder in pytest's
    base temp, which pytest prunes: libraries that leave empty ``tmpXXXX`` folders (``mlflow run``,
    torch elastic, multiprocessing) do not litter the machine's temp folder. medattn's own
    temp-folder hygiene is checked with a private ``TMPDIR`` in ``tests/tracking/test_tmpdir.py``."""
    tmp = tmp_path_factory.getbasetemp() / "tmp"
    tmp.mkdir(exist_ok=True)
    previous = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(tmp), str(tmp)
    yield
    if previous[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous[0]
    tempfile.tempdir = previous[1]


@pytest.fixture(scope="session")
def _template_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mlflow-template")
    db = root / "mlflow.db"
    previous, cwd = mlflow.get_tracking_uri(), Path.cwd()
    # The Default experiment's artifact folder is ./mlruns of the working directory at creation:
    # create it here, not in the repository.
    os.chdir(root)
    try:
        mlflow.set_tracking_uri(f"sqlite:///{db}")
        mlflow.MlflowClient().search_experiments(max_results=1)  # creates the tables
    finally:
        os.chdir(cwd)
        mlflow.set_tracking_uri(previous)
    return db


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, _template_store) -> str:
    """A private sqlite MLflow store in ``tmp_path`` (also the working directory); yields its URI."""
    db = tmp_path / "mlflow.db"
    shutil.copy(_template_store, db)
    uri = f"sqlite:///{db}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A tiny synthetic demo set (60 images, 48 px) shared by the tests that train."""
    out = tmp_path_factory.mktemp("demo") / "demo_data"
    write_synthetic(out, n=60, img_size=48, seed=0)
    return out


# ---- the tiny training setup ----------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_train() -> dict:
    """:data:`TINY_TRAIN` (a copy): the options of the tiny training setup, for any fixture scope."""
    return dict(TINY_TRAIN)


@pytest.fixture
def tiny_config(demo_dir, tiny_train) -> Callable[..., TrainConfig]:
    """``tiny_config(**overrides)``: the resolved :data:`TINY_TRAIN` config on the demo set."""

    def make(**over) -> TrainConfig:
        return resolve_train_config({**tiny_train, "data_dir": str(demo_dir), **over})

    return make


@pytest.fixture
def train_tiny(tiny_config) -> Callable[..., TrainResult]:
    """``train_tiny(**overrides)``: train the tiny config (into the active store); its result."""

    def run(**over) -> TrainResult:
        return train_stage.train(tiny_config(**over), progress=False)

    return run


@pytest.fixture
def tiny_args() -> list[str]:
    """:data:`TINY_ARGS`: the tiny model on the command line (a fresh list per test)."""
    return list(TINY_ARGS)


@pytest.fixture
def tiny_search() -> Callable[..., SearchConfig]:
    """``tiny_search(demo_dir, storage, **over)``: a search of the tiny one-block DeiT at 32 px, one
    epoch per trial, batch sizes 8 or 16, lr in [1e-4, 1e-2]; ``over`` replaces any field."""

    def make(demo_dir: Path, storage: str, **over) -> SearchConfig:
        base = {
            "dataset": "demo",
            "model": "deit_tiny",
            "data_dir": str(demo_dir),
            "img_size": 32,
            "epochs": 1,
            "batch_sizes": (8, 16),
            "lr_min": 1e-4,
            "lr_max": 1e-2,
            "storage": storage,
            "train_overrides": {"nr_layers": 1, "system_metrics": False},
        }
        return SearchConfig(**{**base, **over})

    return make


# ---- the CLI ----------------------------------------------------------------------------------
@dataclass
class Invocation:
    """What one CLI invocation gave: its exit code, output and the run id of its last ``Logged`` line."""

    exit_code: int
    output: str
    run_id: str | None
    exception: BaseException | None = None


def run_id_from(output: str) -> str | None:
    """The run id of the last ``Logged <kind> run <id> ...`` line of a command's output."""
    lines = [ln for ln in output.splitlines() if ln.startswith("Logged ") and " run " in ln]
    return lines[-1].split(" run ")[1].split()[0] if lines else None


@pytest.fixture
def cli() -> Callable[..., Invocation]:
    """``cli(args, exit_code=0)``: run ``medattn ARGS`` in-process and check its exit code.

    Returns the :class:`Invocation` (``.run_id`` is the id printed on the final ``Logged`` line).
    """
    runner = CliRunner()

    def invoke(args: Sequence[str], exit_code: int | None = 0) -> Invocation:
        res = runner.invoke(app, [str(a) for a in args])
        if exit_code is not None:
            assert res.exit_code == exit_code, res.output + repr(res.exception)
        return Invocation(res.exit_code, res.output, run_id_from(res.output), res.exception)

    return invoke


def assert_one_error_line(result, *needles: str, only: bool = False) -> str:
    """Check the bad-input contract of a CLI result and return its ``Error:`` line.

    Exit code 2, no traceback, exactly one line starting with ``Error:`` that holds every needle;
    with ``only`` the whole (non-blank) output is that one line.
    """
    out = result.output
    assert result.exit_code == 2, out + repr(getattr(result, "exception", None))
    assert "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, out
    if only:
        assert [ln for ln in out.splitlines() if ln.strip()] == errors, out
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def one_error_line() -> Callable[..., str]:
    """:func:`assert_one_error_line` as a fixture: ``one_error_line(result, *needles, only=False)``."""
    return assert_one_error_line


# ---- the store --------------------------------------------------------------------------------
def store_runs() -> dict[str, str]:
    """Every run of the active store (all experiments): ``{run_id: status}``."""
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return {r.info.run_id: r.info.status for r in runs}


@pytest.fixture
def runs_in_store() -> Callable[[], dict[str, str]]:
    """``runs_in_store()``: ``{run_id: status}`` of every run in the active store, for exact comparisons."""
    return store_runs


# ---- a fake interpret run ---------------------------------------------------------------------
@dataclass
class FakeInterpret:
    """The ids of a synthetic training run and of the interpret run that explains it."""

    train_run_id: str | None
    run_id: str
    ids: list[str]
    methods: list[str]


def _log_fake_interpret(
    experiment_id: str,
    rng: np.random.Generator,
    *,
    model: str,
    ids: Iterable[str],
    methods: Iterable[str],
    size: int,
    label: int,
    prediction: int,
    xai_scores: Iterable[str],
    perc_train: str | None,
    with_train: bool,
) -> FakeInterpret:
    """Write a training run (3 epochs of loss/auc history) and an interpret run of random (3, H, W) maps."""
    client = mlflow.MlflowClient()
    tags = {tracking.TAG_KIND: "train", tracking.TAG_MODEL: model}
    if perc_train is not None:
        tags[tracking.TAG_PERC_TRAIN] = perc_train
    train_id = None
    if with_train:
        train_id = client.create_run(experiment_id, tags=tags).info.run_id
        for step in range(3):
            for key in ("train_loss", "val_loss", "train_auc", "val_auc"):
                client.log_metric(train_id, key, float(rng.random()), step=step)
        client.set_terminated(train_id)
    link = {tracking.TAG_SOURCE_RUN: train_id} if train_id else {}
    run = client.create_run(
        experiment_id, run_name=f"interpret-{model}", tags={**tags, tracking.TAG_KIND: "interpret", **link}
    )
    rid = run.info.run_id
    ids, methods = list(ids), list(methods)
    client.log_param(rid, "methods", ",".join(methods))
    work = Path(tempfile.mkdtemp(prefix="fake-interpret-"))
    rows = []
    for image_id in ids:
        (work / tracking.INPUTS_DIR).mkdir(parents=True, exist_ok=True)
        pic = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(pic).save(work / tracking.INPUTS_DIR / f"{image_id}.png")
        for method in methods:
            (work / tracking.SALIENCY_DIR / method).mkdir(parents=True, exist_ok=True)
            rel = f"{tracking.SALIENCY_DIR}/{method}/{image_id}.npy"
            np.save(work / rel, rng.normal(size=(3, size, size)).astype(np.float32))
            rows.append(
                {
                    "id": image_id,
                    "label": label,
                    "prediction": prediction,
                    "score": 0.7,
                    "target": label,
                    "method": method,
                    "file": rel,
                    "input": f"{tracking.INPUTS_DIR}/{image_id}.png",
                }
            )
    pd.DataFrame(rows).to_csv(work / tracking.SALIENCY_INDEX, index=False)
    client.log_artifacts(rid, str(work))
    shutil.rmtree(work)
    for method in [*methods, "random"]:
        for score in xai_scores:
            client.log_metric(rid, f"xai_{method}_{score}", float(rng.random()))
    client.set_terminated(rid)
    return FakeInterpret(train_id, rid, ids, methods)


@pytest.fixture
def fake_interpret_run(mlflow_store) -> Callable[..., FakeInterpret]:
    """``fake_interpret_run(experiment_id, rng, model="resnet50", ids=("a", "b"), ...)``.

    A finished training run with a 3-step metric history (unless ``with_train=False``) and a finished
    interpret run (linked to it by ``medattn.source_run``) of random
    (3, size, size) deeplift/lrp maps in the layout ``medattn interpret`` logs (``inputs/``,
    ``saliency/<method>/<id>.npy``, ``saliency/index.csv``), plus ``xai_<method>_<score>`` metrics.
    """

    def make(
        experiment_id: str,
        rng: np.random.Generator,
        *,
        model: str = "resnet50",
        ids: Iterable[str] = ("a", "b"),
        methods: Iterable[str] = ("deeplift", "lrp"),
        size: int = 24,
        label: int = 1,
        prediction: int = 0,
        xai_scores: Iterable[str] = (),
        perc_train: str | None = None,
        with_train: bool = True,
    ) -> FakeInterpret:
        return _log_fake_interpret(
            experiment_id,
            rng,
            model=model,
            ids=ids,
            methods=methods,
            size=size,
            label=label,
            prediction=prediction,
            xai_scores=xai_scores,
            perc_train=perc_train,
            with_train=with_train,
        )

    return make

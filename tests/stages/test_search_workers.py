"""Optuna as its users run it — several workers on one RDB study, one of them killed.

Worker A trials a long training in a subprocess and is SIGKILLed mid-trial: its trial names its
MLflow run from the start, and both stay RUNNING. Worker B, started on the same study after the
heartbeat's grace period, marks the stale trial FAIL, ends A's runs FAILED and runs the retry (same
parameters) as its first trial. The parent run gets Optuna's plots; trials log no model by default.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest

from medattn import tracking
from medattn.errors import ConfigError
from medattn.stages import search, search_storage
from medattn.stages import train as train_stage

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 240.0


WORKER_A = """
import sys
from medattn.stages.search import SearchConfig
from medattn.errors import ConfigError
from medattn.stages import search
search.search(SearchConfig(dataset="demo", model="deit_tiny", data_dir=sys.argv[1], img_size=32, epochs=500,
    batch_sizes=(8, 16), lr_min=1e-4, lr_max=1e-2, storage=sys.argv[2], study_name="workers", heartbeat_s=1,
    train_overrides={"nr_layers": 1, "system_metrics": False}), progress=False)
"""


def _running_trial(storage: str, proc: subprocess.Popen) -> optuna.trial.FrozenTrial:
    """Worker A's trial once it is RUNNING and names its MLflow run."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, "worker A ended on its own"
        try:
            trials = optuna.load_study(study_name="workers", storage=storage).get_trials(deepcopy=False)
        except KeyError:  # the study is not created yet
            trials = []
        for t in trials:
            if t.state.name == "RUNNING" and t.user_attrs.get(search_storage.TRIAL_ATTR_RUN_ID):
                return t
        time.sleep(0.5)
    raise AssertionError("worker A started no trial in time")


def test_killed_worker_trial_fails_and_is_retried(mlflow_store, demo_dir, tmp_path, tiny_search):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_A, str(demo_dir), storage],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "worker_a.log").open("wb"),
    )
    try:
        killed = _running_trial(storage, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    client = mlflow.MlflowClient()
    a_run = killed.user_attrs[search_storage.TRIAL_ATTR_RUN_ID]
    a_parent = killed.user_attrs[search_storage.TRIAL_ATTR_PARENT_RUN_ID]
    assert client.get_run(a_run).info.status == "RUNNING"
    time.sleep(3)  # past the grace period (2 heartbeats) since A's last heartbeat

    result = search.search(
        tiny_search(demo_dir, storage, study_name="workers", heartbeat_s=1, n_trials=2), progress=False
    )

    trials = optuna.load_study(study_name="workers", storage=storage).get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state.name == "FAIL"
    retry = by_number[killed.number + 1]
    assert retry.state.name == "COMPLETE"
    assert retry.params == killed.params
    assert retry.system_attrs["failed_trial"] == killed.number
    assert result.states == {killed.number + 1: "COMPLETE", killed.number + 2: "COMPLETE"}
    assert retry.user_attrs[search_storage.TRIAL_ATTR_RUN_ID] == result.trial_run_ids[retry.number] != a_run

    # the dead worker's runs ended FAILED; nothing is left RUNNING
    a = client.get_run(a_run)
    assert a.info.status == "FAILED" and a.data.tags[tracking.TAG_TRIAL_STATE] == "FAIL"
    assert client.get_run(a_parent).info.status == "FAILED"
    assert {r.info.status for r in mlflow.search_runs(search_all_experiments=True, output_format="list")} == {
        "FINISHED",
        "FAILED",
    }
    retry_run = client.get_run(retry.user_attrs[search_storage.TRIAL_ATTR_RUN_ID])
    assert retry_run.data.tags[tracking.TAG_RETRY_OF] == str(killed.number)

    # the parent: Optuna's plots; the trials: no logged model unless asked for
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["heartbeat_s"] == "1" and parent.data.params["log_models"] == "False"
    figures = {f.path for f in client.list_artifacts(result.parent_run_id, "figures")}
    assert figures == {tracking.SEARCH_HISTORY_FIGURE, tracking.SEARCH_IMPORTANCE_FIGURE}
    for run_id in result.trial_run_ids.values():
        assert tracking.TAG_MODEL_ID not in client.get_run(run_id).data.tags
    assert mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id], output_format="list") == []


def test_storage_from_the_environment_and_never_logged_with_its_password(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(search_storage.ENV_STORAGE, "postgresql://team:s3cret@db.example.org/optuna")
    assert search_storage.resolve_storage(None) == "postgresql://team:s3cret@db.example.org/optuna"
    assert search_storage.resolve_storage("sqlite:///x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    assert search.redact_url(search_storage.resolve_storage("")) == "postgresql://team:***@db.example.org/optuna"
    monkeypatch.delenv(search_storage.ENV_STORAGE)
    assert search_storage.resolve_storage(None) == f"sqlite:///{tmp_path / 'optuna.db'}"


def test_a_storage_error_never_shows_the_password(mlflow_store, demo_dir, tiny_search):
    cfg = tiny_search(
        demo_dir,
        "postgresql+psycopg2://team:s3cret@127.0.0.1:1/optuna",
        study_name="workers",
        heartbeat_s=1,
        n_trials=1,
    )
    with pytest.raises(ConfigError) as info:
        search.search(cfg, progress=False)
    assert "s3cret" not in str(info.value) and "team:***@" in str(info.value)


def test_cli_storage_from_environment_and_models_on_request(mlflow_store, demo_dir, tmp_path, cli, monkeypatch):
    """``--log-models`` logs each trial's model; without ``--storage`` the study goes to ``$OPTUNA_STORAGE``."""
    storage = f"sqlite:///{tmp_path / 'from_env.db'}"
    monkeypatch.setenv(search_storage.ENV_STORAGE, storage)
    res = cli(
        ["search", "--dataset", "demo", "--model", "deit_tiny", "--data-dir", demo_dir, "--n-trials", "1"]
        + ["--epochs", "1", "--img-size", "32", "--batch-sizes", "8", "--study-name", "env", "--quiet"]
        + ["--log-models", "--heartbeat-s", "0", "--trial-retries", "0"]
    )
    assert f"to {storage}" in res.output
    assert [t.state.name for t in optuna.load_study(study_name="env", storage=storage).trials] == ["COMPLETE"]
    parent = mlflow.MlflowClient().get_run(res.run_id)
    assert parent.data.params["storage"] == storage and parent.data.params["log_models"] == "True"
    (child,) = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{res.run_id}'", output_format="list"
    )
    assert child.data.tags[tracking.TAG_MODEL_ID]
    assert not (tmp_path / "optuna.db").exists()


def test_trial_hooks_of_train_run_id_first_and_no_model(mlflow_store, tiny_config):
    """What search relies on: ``on_run_start`` sees the new run before anything is logged to it, and
    ``log_model=False`` logs no model and keeps ``checkpoints/best.pt`` (the only copy of the weights)."""
    events: list[str] = []

    def started(run_id: str) -> None:
        client = mlflow.MlflowClient()
        assert client.get_run(run_id).info.status == "RUNNING" and client.get_metric_history(run_id, "val_loss") == []
        events.append(f"start {run_id}")

    result = train_stage.train(
        tiny_config(),
        progress=False,
        on_run_start=started,
        epoch_callback=lambda epoch, metrics: events.append(f"epoch {epoch}"),
        log_model=False,
    )
    assert events == [f"start {result.run_id}", "epoch 0"]
    assert result.model_uri is None
    tags = mlflow.MlflowClient().get_run(result.run_id).data.tags
    assert tracking.TAG_MODEL_ID not in tags
    paths = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, tracking.CHECKPOINT_DIR)}
    assert tracking.BEST_CKPT in paths

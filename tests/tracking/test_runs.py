"""medattn.tracking.runs: the store, stage runs (``MLFLOW_RUN_ID`` handled once), end statuses and
reading back, checked against what the MLflow store holds."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from medattn import tracking
from medattn.errors import MedattnError


def test_default_store_is_sqlite_beside_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert tracking.resolve_tracking_uri() == "http://example:5000"
    assert tracking.resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert tracking.artifact_root(f"sqlite:///{tmp_path / 'db' / 'm.db'}") == (tmp_path / "db" / "mlruns").resolve()
    assert tracking.artifact_root("http://example:5000") is None
    assert tracking.ui_command("sqlite:///m.db") == "mlflow ui --backend-store-uri sqlite:///m.db"


def test_experiments_keep_their_artifacts_beside_the_store(mlflow_store, tmp_path):
    exp_id = tracking.ensure_experiment("medattn-x", mlflow_store)
    assert tracking.ensure_experiment("medattn-x", mlflow_store) == exp_id  # idempotent
    location = mlflow.get_experiment(exp_id).artifact_location
    assert location == (tmp_path / "mlruns" / "medattn-x").resolve().as_uri()
    mlflow.MlflowClient().delete_experiment(exp_id)
    assert tracking.active_experiment_id("medattn-x") is None
    assert tracking.ensure_experiment("medattn-x", mlflow_store) == exp_id  # restored, not duplicated
    assert tracking.experiment_name_of(exp_id) == "medattn-x"


@pytest.mark.parametrize(
    ("raised", "status"), [(None, "FINISHED"), (RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")]
)
def test_tracked_run_always_ends_with_the_right_status(mlflow_store, runs_in_store, raised, status):
    exp_id = tracking.ensure_experiment("e", mlflow_store)
    seen = {}
    try:
        with tracking.tracked_run(experiment_id=exp_id, run_name="r", tags={tracking.TAG_KIND: "train"}) as run:
            seen["id"] = run.info.run_id
            if raised is not None:
                raise raised("stop")
    except (RuntimeError, KeyboardInterrupt) as exc:
        assert type(exc) is raised  # re-raised unchanged
    assert runs_in_store() == {seen["id"]: status}
    assert mlflow.active_run() is None


def test_stage_run_logs_into_the_project_run_once(mlflow_store, monkeypatch, runs_in_store):
    """Under ``mlflow run`` a top-level stage logs into MLFLOW_RUN_ID; a nested stage never does."""
    exp_id = tracking.ensure_experiment("e", mlflow_store)
    project = mlflow.MlflowClient().create_run(exp_id).info.run_id
    monkeypatch.setenv(tracking.ENV_RUN_ID, project)
    with tracking.stage_run(experiment_id=exp_id, run_name="t", tags={tracking.TAG_KIND: "test"}) as rid:
        assert rid == project
        with tracking.stage_run(
            experiment_id=exp_id, run_name="n", tags={tracking.TAG_KIND: "interpret"}, parent_run_id=rid
        ) as nested:
            assert nested != project
    runs = runs_in_store()
    assert runs == {project: "FINISHED", nested: "FINISHED"}
    assert mlflow.get_run(project).data.tags[tracking.TAG_KIND] == "test"
    assert mlflow.get_run(nested).data.tags["mlflow.parentRunId"] == project
    monkeypatch.setenv(tracking.ENV_RUN_ID, "abc")
    assert tracking.project_run_id(parent_run_id="p") is None  # a nested stage never takes it
    assert tracking.project_run_id() == "abc"
    assert tracking.project_run_id(claim=True) == "abc"
    assert tracking.project_run_id() is None  # claimed: later stages start their own runs


def test_unknown_run_and_missing_artifact_are_one_sentence(mlflow_store):
    with pytest.raises(MedattnError, match=r"run '0123' does not exist in the tracking store .*; check the run id"):
        tracking.get_run("0123")
    exp_id = tracking.ensure_experiment("e", mlflow_store)
    rid = mlflow.MlflowClient().create_run(exp_id).info.run_id
    with pytest.raises(MedattnError, match=r"has no artifact 'checkpoints/best.pt'"):
        tracking.download(rid, tracking.BEST_CKPT, "downloads")


def test_logging_and_reading_back(mlflow_store, tmp_path):
    exp_id = tracking.ensure_experiment("e", mlflow_store)
    with tracking.tracked_run(experiment_id=exp_id) as run:
        tracking.log_params({"lr": 0.1, "resume": None})
        for step, loss in enumerate([0.9, 0.7, float("nan")]):
            tracking.log_metrics({"val_loss": loss, "val_auc": 0.5 + step / 10}, step=step)
        tracking.log_yaml({"model": "resnet50", "lr": 0.1}, tracking.CONFIG_FILE)
    rid = run.info.run_id
    assert mlflow.get_run(rid).data.params == {"lr": "0.1", "resume": "None"}
    # NaN is dropped, not stored
    assert tracking.metric_history(rid, ["val_loss", "val_auc", "absent"]) == {
        "val_loss": [0.9, 0.7],
        "val_auc": [0.5, 0.6, 0.7],
    }
    assert tracking.run_config(rid) == {"model": "resnet50", "lr": 0.1}
    assert Path(tracking.download(rid, tracking.CONFIG_FILE, tmp_path / "dl")).parent == tmp_path / "dl"
    found = tracking.search_runs([exp_id], "attributes.status = 'FINISHED'")
    assert [r.info.run_id for r in found] == [rid]


def test_missing_steps_are_filled_in_once(mlflow_store):
    """A kill between ``last.pt`` and the epoch's metrics: the steps the checkpoint holds are logged once."""
    exp_id = tracking.ensure_experiment("e", mlflow_store)
    history = {"val_loss": [0.9, 0.8, 0.7], "lr": [0.1, 0.1, 0.01]}
    with tracking.tracked_run(experiment_id=exp_id) as run:
        tracking.log_metrics({"val_loss": 0.9, "lr": 0.1}, step=0)
        tracking.log_missing_steps(run.info.run_id, history)
        tracking.log_missing_steps(run.info.run_id, history)
    client = mlflow.MlflowClient()
    for key, values in history.items():
        points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in points] == list(enumerate(values)), key

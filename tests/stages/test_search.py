"""``medattn search``: an Optuna study whose trials are nested MLflow training runs."""

from __future__ import annotations

import mlflow
import optuna
import pytest
import sqlalchemy
import yaml

from medattn import tracking
from medattn.errors import MedattnError
from medattn.stages import search, search_storage


def _children(parent_id: str) -> list:
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        output_format="list",
    )


class _AlwaysPrune(optuna.pruners.BasePruner):
    """Prunes every trial at its first report; trial 0 instead fails inside the training run."""

    def prune(self, study, trial) -> bool:
        if trial.number == 0:
            raise MedattnError("constructed failure inside a trial")
        return True


def test_search_four_trials_nested_then_resumed_from_cli(mlflow_store, demo_dir, tmp_path, cli, tiny_search):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = search.search(tiny_search(demo_dir, storage, study_name="tiny", n_trials=4), progress=False)

    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[tracking.TAG_KIND] == "search"
    assert parent.data.params["study_name"] == "tiny"
    assert parent.data.params["storage"] == storage
    assert parent.data.params["batch_sizes"] == "8,16"
    assert mlflow.get_experiment(parent.info.experiment_id).name == "medattn-demo"

    children = _children(result.parent_run_id)
    assert len(children) == 4
    assert {c.info.status for c in children} == {"FINISHED"}
    assert sorted(int(c.data.tags[tracking.TAG_TRIAL_NUMBER]) for c in children) == [0, 1, 2, 3]
    assert {c.data.tags[tracking.TAG_KIND] for c in children} == {"train"}
    assert {c.info.experiment_id for c in children} == {parent.info.experiment_id}
    for c in children:  # the trial's suggested lr and batch size are the run's training params
        assert c.data.params["select_metric"] == "val_auc"
        assert int(c.data.params["batch_size"]) in (8, 16)
        assert 1e-4 <= float(c.data.params["lr"]) <= 1e-2

    # the parent carries the best trial: its params, its value, its run id
    best_child = client.get_run(parent.data.tags[tracking.TAG_BEST_TRIAL_RUN])
    values = [c.data.metrics["best_val_auc"] for c in children]
    assert parent.data.metrics["best_value"] == pytest.approx(max(values))
    assert best_child.data.metrics["best_val_auc"] == pytest.approx(max(values))
    assert float(parent.data.params["best_lr"]) == pytest.approx(float(best_child.data.params["lr"]))
    assert parent.data.params["best_batch_size"] == best_child.data.params["batch_size"]
    assert result.best_trial_run_id == best_child.info.run_id
    assert set(result.states.values()) == {"COMPLETE"}

    # a second invocation (CLI) with the same study name adds trials to the same study
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({"nr_layers": 1, "system_metrics": False}))
    res = cli(
        [
            "search",
            "--dataset",
            "demo",
            "--model",
            "deit_tiny",
            "--data-dir",
            str(demo_dir),
            "--img-size",
            "32",
            "--epochs",
            "1",
            "--batch-sizes",
            "8,16",
            "--lr-min",
            "1e-4",
            "--lr-max",
            "1e-2",
            "--n-trials",
            "1",
            "--storage",
            storage,
            "--study-name",
            "tiny",
            "--config",
            str(cfg_file),
        ]
    )
    last = [ln for ln in res.output.splitlines() if ln.strip()][-1]
    assert last.startswith("Logged search run ") and "study 'tiny'" in last and "mlflow ui" in last
    second_parent = res.run_id
    assert second_parent != result.parent_run_id
    assert len(_children(second_parent)) == 1
    assert _children(second_parent)[0].data.tags[tracking.TAG_TRIAL_NUMBER] == "4"
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 5


def test_pruned_trial_ends_killed_and_failed_trial_failed(mlflow_store, demo_dir, tmp_path, tiny_search):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = search.search(
        tiny_search(demo_dir, storage, study_name="tiny", n_trials=2, epochs=2), pruner=_AlwaysPrune(), progress=False
    )

    assert result.states == {0: "FAIL", 1: "PRUNED"}
    runs = {int(r.data.tags[tracking.TAG_TRIAL_NUMBER]): r for r in _children(result.parent_run_id)}
    assert runs[0].info.status == "FAILED"
    assert runs[1].info.status == "KILLED"
    assert runs[1].data.tags[tracking.TAG_TRIAL_STATE] == "PRUNED"
    # pruned after its first epoch: one report, one epoch of metrics, no logged model
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(runs[1].info.run_id, "val_auc")] == [0]
    assert tracking.TAG_MODEL_ID not in runs[1].data.tags
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert "best_value" not in parent.data.metrics and result.best_value is None
    assert parent.data.metrics["n_trials_pruned"] == 1 and parent.data.metrics["n_trials_failed"] == 1
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "PRUNED"]
    assert study.trials[1].user_attrs[search_storage.TRIAL_ATTR_RUN_ID] == runs[1].info.run_id
    assert not mlflow.search_runs(
        search_all_experiments=True, filter_string="attributes.status = 'RUNNING'", output_format="list"
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--batch-sizes", "0,-4"], "--batch-sizes"),
        (["--batch-sizes", ","], "no valid batch size"),
        (["--batch-sizes", "8,x"], "not an integer"),
        (["--lr-min", "1e-2", "--lr-max", "1e-3"], "--lr-min"),
        (["--n-trials", "0"], "--n-trials"),
        (["--metric", "val_acc"], "did you mean 'val_auc'"),
        (["--mode", "min"], "contradicts"),
        (["--storage", "nosuchdb://x/y"], "Optuna storage"),
        (["--model", "cbam_resnet5"], "cbam_resnet50"),
        (["--data-dir", "missing_folder"], "missing_folder"),
    ],
    ids=[
        "batch-sizes",
        "batch-sizes-empty",
        "batch-sizes-not-int",
        "lr",
        "n-trials",
        "metric",
        "mode",
        "storage",
        "model",
        "data-dir",
    ],
)
def test_bad_input_exits_2_without_a_run(
    mlflow_store, demo_dir, tmp_path, cli, one_error_line, runs_in_store, args, needle
):
    base = [
        "search",
        "--dataset",
        "demo",
        "--model",
        "deit_tiny",
        "--data-dir",
        str(demo_dir),
        "--storage",
        f"sqlite:///{tmp_path / 'optuna.db'}",
        "--n-trials",
        "1",
    ]
    one_error_line(cli(base + args, exit_code=2), needle)
    assert runs_in_store() == {}


def test_redact_url():
    assert search.redact_url("postgresql://u:secret@db:5432/optuna") == "postgresql://u:***@db:5432/optuna"
    assert search.redact_url("sqlite:///optuna.db") == "sqlite:///optuna.db"


def test_relative_sqlite_storage_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert search_storage.absolute_storage("sqlite:///optuna.db") == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    assert search_storage.absolute_storage("sqlite:////abs/o.db") == "sqlite:////abs/o.db"
    assert search_storage.absolute_storage("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize(
    "error",
    [
        sqlalchemy.exc.ProgrammingError("CREATE TYPE", {}, Exception('type "studydirection" already exists')),
        sqlalchemy.exc.IntegrityError("CREATE TYPE", {}, Exception("duplicate key value violates pg_type")),
    ],
    ids=["duplicate-object", "unique-violation"],
)
def test_a_worker_that_loses_the_schema_race_opens_the_storage_again(monkeypatch, tiny_search, tmp_path, error):
    """Two workers on a fresh PostgreSQL storage both create Optuna's schema; the loser retries."""
    calls = []

    def flaky(cfg):
        calls.append(cfg.storage)
        if len(calls) == 1:
            raise error
        return "storage"

    monkeypatch.setattr(search_storage, "_rdb_storage", flaky)
    monkeypatch.setattr(search_storage.time, "sleep", lambda s: None)
    assert search_storage._get_storage(tiny_search(tmp_path, "sqlite:///o.db")) == "storage" and len(calls) == 2


def test_other_storage_errors_are_not_retried(monkeypatch, tiny_search, tmp_path):
    def broken(cfg):
        raise sqlalchemy.exc.OperationalError("connect", {}, Exception("connection refused"))

    monkeypatch.setattr(search_storage, "_rdb_storage", broken)
    with pytest.raises(sqlalchemy.exc.OperationalError, match="connection refused"):
        search_storage._get_storage(tiny_search(tmp_path, "sqlite:///o.db"))

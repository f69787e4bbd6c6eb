"""medattn.tracking.runs as MLflow users meet it: params that ``mlflow run``
already logged in another spelling, ``best_val_*`` logged once, split manifests as Datasets,
predictions as a table, run descriptions, the project run's experiment."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import RestException

from medattn import tracking
from medattn.tracking import store


def test_params_logged_by_mlflow_run_are_kept_and_the_resolved_value_goes_beside(mlflow_store):
    exp = tracking.ensure_experiment("e", mlflow_store)
    client = mlflow.MlflowClient()
    project = client.create_run(exp).info.run_id
    typed = {"model": "SEResNet50", "lr": "1e-3", "data_dir": "demo_data", "split": "validation", "model_uri": ""}
    for key, value in typed.items():  # what `mlflow run -P ...` logs before medattn starts
        client.log_param(project, key, value)
    resolved = {"model": "se_resnet50", "lr": 0.001, "data_dir": "demo_data", "split": "val", "model_uri": None}
    with tracking.tracked_run(run_id=project):
        first = tracking.log_params({**resolved, "epochs": 1})
        again = tracking.log_params({**resolved, "epochs": 1})  # idempotent, never an MLflow error
    assert first == {"resolved.model": "se_resnet50", "resolved.lr": "0.001", "resolved.split": "val", "epochs": "1"}
    assert again == {}
    assert mlflow.get_run(project).data.params == {**typed, **first}


def test_metrics_attached_to_a_logged_model_are_logged_once(mlflow_store):
    exp = tracking.ensure_experiment("e", mlflow_store)
    with tracking.tracked_run(experiment_id=exp) as run:
        for step, auc in enumerate([0.6, 0.8, 0.7]):
            tracking.log_metrics({"val_auc": auc}, step=step)
        tracking.log_metrics({"best_val_auc": 0.8}, step=1)
        model = mlflow.initialize_logged_model(name="model", source_run_id=run.info.run_id, experiment_id=exp)
        tracking.log_metrics({"best_val_auc": 0.8, "params_m": 1.5}, model_id=model.model_id)
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "best_val_auc")
    assert [(m.step, m.value) for m in history] == [(1, 0.8)]  # not again at step 0
    assert [(m.step, m.value) for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "params_m")] == [
        (0, 1.5)
    ]
    on_model = {m.key: m.value for m in mlflow.get_logged_model(model.model_id).metrics}
    assert on_model == {"best_val_auc": 0.8, "params_m": 1.5}


def test_split_manifests_are_datasets_with_a_digest_of_their_ids(mlflow_store, tmp_path):
    exp = tracking.ensure_experiment("e", mlflow_store)
    train = pd.DataFrame({"image_id": ["a", "b", "c"], "label": [0, 1, 0], "patient_id": ["p1", "p2", "p3"]})
    test = pd.DataFrame({"image_id": ["d", "e"], "label": [1, 0], "patient_id": ["p4", "p5"]})
    with tracking.tracked_run(experiment_id=exp) as run:
        for split, frame in (("train", train), ("test", test)):
            tracking.log_dataset(
                frame, name=tracking.dataset_name("demo", split), context=split, source=str(tmp_path / "demo_data")
            )
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    seen = {d.dataset.name: (d.dataset.digest, {t.key: t.value for t in d.tags}["mlflow.data.context"]) for d in inputs}
    assert seen == {
        "demo-train": (tracking.ids_digest(["a", "b", "c"]), "train"),
        "demo-test": (tracking.ids_digest(["d", "e"]), "test"),
    }
    assert tracking.ids_digest(["c", "a", "b"]) == tracking.ids_digest(["a", "b", "c"])  # a set of ids
    assert tracking.ids_digest(["a", "b"]) != tracking.ids_digest(["a", "b", "c"])
    schema = {d.dataset.name: d.dataset.schema for d in inputs}["demo-train"]
    assert "image_id" in schema and "label" in schema


def test_a_dataset_insert_that_lost_a_race_is_repeated_and_linked(mlflow_store, tmp_path, monkeypatch):
    """Two search workers logging the same new split at once: the team server refused the slower insert."""
    monkeypatch.setattr(store.time, "sleep", lambda s: None)
    refusal = (
        '(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"\n'
        "DETAIL:  Key (experiment_id, name, digest)=(2, demo-val, 072c15a03e7f8752) already exists."
    )
    real = mlflow.MlflowClient.log_inputs
    calls = []

    def racing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RestException({"error_code": "BAD_REQUEST", "message": refusal})
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_inputs", racing)
    exp = tracking.ensure_experiment("e", mlflow_store)
    val = pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1]})
    with tracking.tracked_run(experiment_id=exp) as run:
        tracking.log_dataset(val, name="demo-val", context="val", source=str(tmp_path))
    assert len(calls) == 2
    assert [d.dataset.name for d in mlflow.get_run(run.info.run_id).inputs.dataset_inputs] == ["demo-val"]
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED"

    other = RestException({"error_code": "BAD_REQUEST", "message": 'duplicate key value violates "experiments_pk"'})
    assert not store.is_dataset_race(other), "only a dataset's unique key is a race worth repeating"


def test_predictions_table_reads_back(mlflow_store):
    exp = tracking.ensure_experiment("e", mlflow_store)
    preds = pd.DataFrame({"id": ["a", "b"], "label": [0, 1], "score": [0.2, 0.9], "prediction": [0, 1]})
    with tracking.tracked_run(experiment_id=exp) as run:
        tracking.log_table(preds, tracking.PREDICTIONS_TABLE)
    back = mlflow.MlflowClient().load_table(exp, tracking.PREDICTIONS_TABLE, run_ids=[run.info.run_id])
    pd.testing.assert_frame_equal(back[list(preds.columns)], preds, check_dtype=False)


@pytest.mark.parametrize(
    ("tags", "description"),
    [
        (
            {tracking.TAG_KIND: "train", tracking.TAG_MODEL: "se_resnet50", tracking.TAG_DATASET: "demo"},
            "se_resnet50 trained on demo.",
        ),
        (
            {
                tracking.TAG_KIND: "train",
                tracking.TAG_MODEL: "resnet50",
                tracking.TAG_DATASET: "isic2020",
                tracking.TAG_PERC_TRAIN: "0.1",
            },
            "resnet50 trained on isic2020 (10% of the training split).",
        ),
        (
            {
                tracking.TAG_KIND: "test",
                tracking.TAG_MODEL: "resnet50",
                tracking.TAG_DATASET: "demo",
                tracking.TAG_SPLIT: "val",
                tracking.TAG_SOURCE_RUN: "abc",
            },
            "resnet50 from training run abc tested on the val split of demo.",
        ),
        ({tracking.TAG_KIND: "compare"}, None),
    ],
    ids=["train", "low-data", "test", "no-sentence"],
)
def test_stage_runs_describe_themselves(mlflow_store, tags, description):
    exp = tracking.ensure_experiment("e", mlflow_store)
    with tracking.stage_run(experiment_id=exp, run_name="r", tags=tags) as rid:
        pass
    assert mlflow.get_run(rid).data.tags.get(tracking.TAG_DESCRIPTION) == description


def test_a_given_or_existing_description_wins(mlflow_store):
    exp = tracking.ensure_experiment("e", mlflow_store)
    tags = {tracking.TAG_KIND: "train", tracking.TAG_MODEL: "resnet50", tracking.TAG_DATASET: "demo"}
    with tracking.stage_run(experiment_id=exp, run_name="r", tags=tags, description="Mine.") as rid:
        pass
    assert mlflow.get_run(rid).data.tags[tracking.TAG_DESCRIPTION] == "Mine."
    tracking.set_description("Edited in the UI.", run_id=rid)
    with tracking.stage_run(experiment_id=exp, run_name="r", tags=tags, run_id=rid):
        pass
    assert mlflow.get_run(rid).data.tags[tracking.TAG_DESCRIPTION] == "Edited in the UI."


def test_project_experiment_is_the_one_mlflow_run_chose(mlflow_store, monkeypatch):
    assert tracking.project_experiment_name() is None  # not under `mlflow run`
    exp = tracking.ensure_experiment("Default-like", mlflow_store)
    project = mlflow.MlflowClient().create_run(exp).info.run_id
    monkeypatch.setenv(tracking.ENV_RUN_ID, project)
    assert tracking.project_experiment_name() == "Default-like"

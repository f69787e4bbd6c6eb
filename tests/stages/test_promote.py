"""``medattn promote``: the best finished training run's model gets the registry alias."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from medattn import tracking
from medattn.stages import promote as promote_stage
from medattn.stages.promote import PromoteConfig

NAME = "medattn-demo"


def _versions() -> list:
    return mlflow.MlflowClient().search_model_versions(f"name = '{NAME}'")


def _champion():
    return mlflow.MlflowClient().get_model_version_by_alias(NAME, "champion")


def _metrics_line(output: str) -> str:
    line = [ln for ln in output.replace("\r", "\n").splitlines() if "test AUC" in ln][-1]
    return line[line.index("test AUC") :]


def test_promote_follows_the_best_run_and_is_idempotent(mlflow_store, train_tiny, cli):
    client = mlflow.MlflowClient()
    runs = [train_tiny(seed=1).run_id, train_tiny(seed=2, lr=3e-4).run_id]

    first = promote_stage.promote(PromoteConfig(experiment="medattn-demo", metric="val_loss"))
    losses = {r: client.get_run(r).data.metrics["best_val_loss"] for r in runs}
    assert first.run_id in runs and losses[first.run_id] == pytest.approx(min(losses.values()))
    assert (first.changed, first.registered, first.previous_version, first.version) == (True, True, None, "1")
    mv = _champion()
    assert (str(mv.version), mv.run_id) == ("1", first.run_id)
    assert mv.tags[tracking.VTAG_METRIC] == "best_val_loss"
    assert float(mv.tags[tracking.VTAG_METRIC_VALUE]) == pytest.approx(losses[first.run_id], rel=1e-5)
    assert mv.tags[tracking.VTAG_VARIANT] == "deit_tiny"

    again = promote_stage.promote(PromoteConfig(experiment="medattn-demo", metric="val_loss"))
    assert (again.changed, again.registered, again.version, again.run_id) == (False, False, "1", first.run_id)
    assert again.describe() == "champion: version 1 (unchanged)"
    assert len(_versions()) == 1

    # a better run is added (its best_val_loss made lower by construction): the alias moves to it
    better = train_tiny(seed=3).run_id
    client.log_metric(better, "best_val_loss", min(losses.values()) - 0.05)
    moved = promote_stage.promote(PromoteConfig(experiment="medattn-demo", metric="val_loss"))
    assert (moved.changed, moved.previous_version, moved.version, moved.run_id) == (True, "1", "2", better)
    assert moved.describe() == "champion: version 1 → 2"
    assert _champion().run_id == better

    res = cli(["promote", "--experiment", "medattn-demo", "--metric", "val_loss"])
    assert "champion: version 2 (unchanged)" in res.output
    last = [ln for ln in res.output.splitlines() if ln.strip()][-1]
    assert last.startswith("Kept alias 'champion' of registered model 'medattn-demo' on version 2")
    assert "models:/medattn-demo@champion" in last
    assert len(_versions()) == 2

    # the champion URI tests exactly like the run it points at
    by_alias = cli(["test", "--model-uri", "models:/medattn-demo@champion", "--n-boot", "50"])
    by_run = cli(["test", "--run-id", better, "--n-boot", "50"])
    assert _metrics_line(by_alias.output) == _metrics_line(by_run.output)
    tests = mlflow.search_runs(
        experiment_names=["medattn-demo"], filter_string="tags.`medattn.kind` = 'test'", output_format="list"
    )
    assert len(tests) == 2
    a, b = (t.data.metrics for t in tests)
    assert a == pytest.approx(b)
    assert {t.data.tags[tracking.TAG_SOURCE_RUN] for t in tests} == {better}


def _fake_train_run(exp_id: str, metrics: dict[str, float], *, kind="train", status="FINISHED", model=True) -> str:
    """A run shaped like a medattn training run, with a tiny logged model (no training)."""
    tags = {tracking.TAG_KIND: kind, tracking.TAG_DATASET: "demo", tracking.TAG_MODEL: "resnet50"}
    with mlflow.start_run(experiment_id=exp_id, tags=tags) as run:
        mlflow.log_metrics(metrics)
        if model:
            x = np.zeros((2, 3), np.float32)
            info = mlflow.pytorch.log_model(
                torch.nn.Linear(3, 2), name="model", input_example=x, pip_requirements=["torch"]
            )
            mlflow.set_tag(tracking.TAG_MODEL_ID, info.model_id)
        else:
            mlflow.set_tag(tracking.TAG_MODEL_ID, "m-does-not-exist")
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_selection_rules_and_reuse_of_a_registered_version(mlflow_store):
    exp_id = tracking.ensure_experiment("medattn-demo", mlflow_store)
    with_best = _fake_train_run(exp_id, {"best_val_auc": 0.70, "val_auc": 0.95})
    latest_only = _fake_train_run(exp_id, {"val_auc": 0.80})
    _fake_train_run(exp_id, {"best_val_auc": 0.99}, status="FAILED", model=False)
    _fake_train_run(exp_id, {"best_val_auc": 0.99}, kind="test", model=False)

    # best_<metric> wins over the latest value; unfinished and non-train runs never compete
    res = promote_stage.promote(PromoteConfig())
    assert (res.run_id, res.metric, res.value) == (latest_only, "val_auc", pytest.approx(0.80))
    # min mode flips the choice; an existing version of the chosen run is reused, not duplicated
    mlflow.register_model(f"models:/{mlflow.get_run(with_best).data.tags[tracking.TAG_MODEL_ID]}", NAME)
    flipped = promote_stage.promote(PromoteConfig(dataset="demo", metric="val_auc", mode="min", alias="worst"))
    assert (flipped.run_id, flipped.registered, flipped.previous_version) == (with_best, False, None)
    assert flipped.version == "2" and len(_versions()) == 2
    assert _champion().run_id == latest_only


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--metric", "val_acc"], "did you mean 'val_auc'"),
        (["--mode", "up"], "--mode"),
        (["--alias", "v3"], "--alias"),
        (["--experiment", "nope"], "'nope' does not exist"),
        (["--dataset", "isic2020"], "does not exist"),
        ([], "no FINISHED training run"),
    ],
)
def test_bad_input_exits_2(mlflow_store, cli, one_error_line, runs_in_store, args, needle):
    tracking.ensure_experiment("medattn-demo", mlflow_store)
    one_error_line(cli(["promote", *args], exit_code=2), needle)
    assert not mlflow.MlflowClient().search_registered_models()
    assert runs_in_store() == {}

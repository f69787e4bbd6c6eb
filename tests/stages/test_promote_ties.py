"""`promote` breaks a tie on the selection metric by a stated secondary metric."""

from __future__ import annotations

from types import SimpleNamespace

import mlflow
import numpy as np
import torch

from medattn import tracking
from medattn.stages import promote as promote_stage
from medattn.stages.promote import PromoteConfig, choose


def _run(run_id: str, **metrics: float):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id), data=SimpleNamespace(metrics=metrics))


def _cands(*runs):
    return [(r, "best_val_auc", r.data.metrics["best_val_auc"]) for r in runs]


def test_choose_breaks_a_tie_by_the_lowest_val_loss_and_says_so():
    a = _run("a", best_val_auc=1.0, best_val_loss=0.05)
    b = _run("b", best_val_auc=1.0, best_val_loss=0.01)
    c = _run("c", best_val_auc=0.9, best_val_loss=0.001)
    (run, key, value), note = choose(_cands(a, b, c), "val_auc", "max", current_run="a")
    assert (run.info.run_id, key, value) == ("b", "best_val_auc", 1.0)
    assert note == "2 runs tie at best_val_auc = 1; the tie is broken by the lowest best_val_loss (0.01)."


def test_choose_without_a_tie_says_nothing_and_a_full_tie_keeps_the_champion():
    a = _run("a", best_val_auc=0.8, best_val_loss=0.05)
    b = _run("b", best_val_auc=0.9, best_val_loss=0.05)
    assert choose(_cands(b, a), "val_auc", "max", None) == ((b, "best_val_auc", 0.9), None)
    a2 = _run("a2", best_val_auc=0.9, best_val_loss=0.05)
    (run, _, _), note = choose(_cands(b, a2), "val_auc", "max", current_run="a2")
    assert run is a2 and note.endswith("(0.05), then by keeping the current champion.")
    (run, _, _), note = choose(_cands(b, a2), "val_auc", "max", current_run=None)
    assert run is b and note.endswith(", then by the earliest run.")
    # ranking by val_loss: the tie goes to the highest val_auc
    x, y = _run("x", best_val_loss=0.1, best_val_auc=0.7), _run("y", best_val_loss=0.1, best_val_auc=0.8)
    cands = [(r, "best_val_loss", 0.1) for r in (x, y)]
    (run, _, _), note = choose(cands, "val_loss", "min", None)
    assert run is y and "highest best_val_auc (0.8)" in note


def _train_run(exp_id: str, metrics: dict[str, float]) -> str:
    tags = {tracking.TAG_KIND: "train", tracking.TAG_DATASET: "demo", tracking.TAG_MODEL: "resnet50"}
    with mlflow.start_run(experiment_id=exp_id, tags=tags) as run:
        mlflow.log_metrics(metrics)
        info = mlflow.pytorch.log_model(
            torch.nn.Linear(3, 2), name="model", input_example=np.zeros((2, 3), np.float32), pip_requirements=["torch"]
        )
        mlflow.set_tag(tracking.TAG_MODEL_ID, info.model_id)
    return run.info.run_id


def test_promote_picks_the_lower_val_loss_among_runs_tied_on_auc(mlflow_store):
    exp_id = tracking.ensure_experiment("medattn-demo", mlflow_store)
    first = _train_run(exp_id, {"best_val_auc": 1.0, "best_val_loss": 0.20})  # earliest: "first wins" before
    second = _train_run(exp_id, {"best_val_auc": 1.0, "best_val_loss": 0.02})
    res = promote_stage.promote(PromoteConfig())
    assert res.run_id == second != first
    assert res.tie_break == "2 runs tie at best_val_auc = 1; the tie is broken by the lowest best_val_loss (0.02)."
    again = promote_stage.promote(PromoteConfig())
    assert (again.run_id, again.changed) == (second, False)


def test_promote_prints_how_it_broke_a_tie(mlflow_store, cli):
    exp_id = tracking.ensure_experiment("medattn-demo", mlflow_store)
    _train_run(exp_id, {"best_val_auc": 1.0, "best_val_loss": 0.20})
    second = _train_run(exp_id, {"best_val_auc": 1.0, "best_val_loss": 0.02})
    out = cli(["promote", "--experiment", "medattn-demo"]).output.splitlines()
    sentence = "2 runs tie at best_val_auc = 1; the tie is broken by the lowest best_val_loss (0.02)."
    assert out[1] == sentence and f"best run {second}" in out[2]


def test_promote_without_a_tie_prints_no_tie_break(mlflow_store, cli):
    exp_id = tracking.ensure_experiment("medattn-demo", mlflow_store)
    _train_run(exp_id, {"best_val_auc": 0.9, "best_val_loss": 0.20})
    _train_run(exp_id, {"best_val_auc": 0.8, "best_val_loss": 0.02})
    out = cli(["promote", "--experiment", "medattn-demo"]).output
    assert "runs tie at" not in out and "the tie" not in out

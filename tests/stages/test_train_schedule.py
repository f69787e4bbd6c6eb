"""A resume with a new ``--epochs`` continues the cosine schedule downwards."""

from __future__ import annotations

import math

import mlflow
import pytest
import torch

from medattn.stages import train as train_stage
from medattn.stages.train import extend_cosine, resolve_train_config, schedule_end


def _cosine(epochs: int, lr: float = 1.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)


def test_extend_cosine_falls_from_the_last_lr_to_the_new_end_and_survives_a_second_resume():
    opt, sched = _cosine(10)
    lrs = []
    for _ in range(10):  # a finished 10-epoch run
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    state = sched.state_dict()
    opt2, sched2 = _cosine(10)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    extend_cosine(sched2, 10, 20, lrs[-1])
    assert schedule_end(sched2, 10) == 20
    for e in range(10, 20):
        lrs.append(opt2.param_groups[0]["lr"])
        sched2.step()
        if e == 14:  # a second resume with the same --epochs leaves the schedule alone
            snapshot = sched2.state_dict()
            sched2.load_state_dict(snapshot)
            extend_cosine(sched2, 15, 20, lrs[-1])
    assert all(b <= a for a, b in zip(lrs, lrs[1:], strict=False)), lrs
    # by hand: a half cosine from lr_9 (epoch 9) to 0 at epoch 20
    lr9 = (1 + math.cos(math.pi * 9 / 10)) / 2
    for e in range(10, 20):
        assert lrs[e] == pytest.approx(lr9 * (1 + math.cos(math.pi * (e - 9) / 11)) / 2, rel=1e-9), e


def test_resume_with_more_epochs_never_raises_the_lr(mlflow_store, train_tiny):
    first = train_tiny(epochs=2, scheduler="cosine")
    resumed = train_stage.train(resolve_train_config({"epochs": 4}, resume=first.run_id), progress=False)
    lrs = [m.value for m in sorted(mlflow.MlflowClient().get_metric_history(first.run_id, "lr"), key=lambda m: m.step)]
    # epochs 0, 1 of the 2-epoch cosine; then from lr_1 = 5e-4 down to 0 at epoch 4 (T = 3)
    assert lrs == pytest.approx([1e-3, 5e-4, 5e-4 * 0.75, 5e-4 * 0.25], rel=1e-6)
    assert resumed.history["lr"] == pytest.approx(lrs, rel=1e-6)

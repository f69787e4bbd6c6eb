"""medattn.checkpoint: atomic files on the CPU, the TrainState that ``last.pt`` holds, RNG states, and
a one-sentence error for every file that is not a usable checkpoint."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from medattn import checkpoint
from medattn.checkpoint import FORMAT, TrainState
from medattn.errors import MedattnError


def _state() -> TrainState:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return TrainState(
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        scheduler=None,
        scaler={},
        epoch=4,
        config={"model": "resnet50", "lr": 0.001, "img_size": 32},
        num_classes=2,
        class_names=["no", "yes"],
        history={"val_loss": [0.9, 0.5], "val_auc": [0.6, 0.8]},
        best_value=0.5,
        best_epoch=1,
        best_metrics={"val_loss": 0.5, "val_auc": 0.8},
        rng=checkpoint.rng_state(),
    )


def test_train_state_round_trips_through_last_pt(tmp_path: Path):
    state = _state()
    path = checkpoint.save(tmp_path / "checkpoints" / "last.pt", state.payload())
    assert path == tmp_path / "checkpoints" / "last.pt"
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left behind
    data = checkpoint.load(path)
    assert data["format"] == FORMAT
    back = TrainState.from_payload(data)
    assert (back.epoch, back.num_classes, back.class_names) == (4, 2, ["no", "yes"])
    assert back.config == state.config and back.history == state.history
    assert (back.best_value, back.best_epoch, back.best_metrics) == (0.5, 1, state.best_metrics)
    for k, v in state.model.items():
        torch.testing.assert_close(back.model[k], v, rtol=0, atol=0)
    assert back.optimizer["param_groups"][0]["lr"] == 1e-3
    torch.testing.assert_close(back.optimizer["state"][0]["exp_avg"], state.optimizer["state"][0]["exp_avg"])


def test_best_payload_is_the_documented_subset():
    state = _state()
    best = state.best_payload({"val_loss": 0.5})
    assert set(best) == {"model", "config", "epoch", "metrics", "num_classes", "class_names"}
    assert best["metrics"] == {"val_loss": 0.5} and best["epoch"] == 4


def test_tensors_are_stored_on_the_cpu_and_detached(tmp_path: Path):
    w = torch.ones(2, requires_grad=True) * 3
    data = checkpoint.load(checkpoint.save(tmp_path / "x.pt", {"model": {"w": w}, "nested": [w, {"w": w}]}))
    assert data["model"]["w"].device.type == "cpu" and not data["model"]["w"].requires_grad
    torch.testing.assert_close(data["nested"][1]["w"], torch.full((2,), 3.0))


def test_rng_state_restores_every_generator():
    state = checkpoint.rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_unusable_files_are_one_sentence(tmp_path: Path):
    with pytest.raises(MedattnError, match=r"checkpoint '.*missing.pt' does not exist; check the path\.$"):
        checkpoint.load(tmp_path / "missing.pt")
    good = checkpoint.save(tmp_path / "good.pt", _state().payload()).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(MedattnError, match=r"'.*cut.pt' is truncated or corrupt; use another checkpoint"):
        checkpoint.load(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)  # a torch file, but not written by medattn train
    with pytest.raises(MedattnError, match="is not a medattn checkpoint"):
        checkpoint.load(foreign)

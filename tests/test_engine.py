"""medattn.engine: one pass, one evaluation and the epoch loop ``fit``, against values worked out
independently (a hand-made SGD step, hand-picked validation losses), with no MLflow involved."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medattn import engine
from medattn.engine import Callback, DivergedError, EpochEnd, EpochOutput, FitResult, evaluate, fit, train_one_epoch

CPU = torch.device("cpu")


def _data(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 4), generator=g)
    y = (x[:, 0] > 0).long()
    return x, y


def _batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 2)


def test_evaluate_returns_the_mean_loss_softmax_scores_and_labels_in_order():
    x, y = _data()
    model = _linear()
    out = evaluate(model, _batches(x, y, 5), nn.CrossEntropyLoss(), CPU, progress=False)
    with torch.no_grad():
        logits = model(x)
    assert out.n_images == 12
    np.testing.assert_array_equal(out.y_true, y.numpy())
    np.testing.assert_allclose(out.scores, logits.softmax(1).numpy(), rtol=1e-6, atol=1e-7)
    # mean per image, not the mean of the three batch means (batches of 5, 5, 2)
    assert out.loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-6)


def test_train_one_epoch_takes_the_same_sgd_steps_as_written_by_hand():
    x, y = _data()
    model, reference = _linear(), _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = train_one_epoch(model, _batches(x, y, 4), opt, nn.CrossEntropyLoss(), CPU, progress=False)
    losses = []
    for xb, yb in _batches(x, y, 4):  # w <- w - lr * grad of the batch mean loss, three times
        reference.zero_grad()
        loss = nn.functional.cross_entropy(reference(xb), yb)
        loss.backward()
        losses.append(loss.item() * len(yb))
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.5 * p.grad
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert out.n_images == 12
    assert out.loss == pytest.approx(sum(losses) / 12, rel=1e-5)
    np.testing.assert_array_equal(out.y_true, y.numpy())


class _NaN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 2), math.nan) * self.w


def test_a_nan_loss_stops_training_with_a_sentence():
    x, y = _data()
    model = _NaN()
    with pytest.raises(DivergedError, match=r"the training loss became nan in epoch 1/2 train; lower --lr"):
        train_one_epoch(
            model,
            _batches(x, y, 4),
            torch.optim.SGD(model.parameters(), lr=0.1),
            nn.CrossEntropyLoss(),
            CPU,
            progress=False,
            desc="epoch 1/2 train",
        )


def _scripted(monkeypatch, val_losses: list[float], val_scores: list[float]) -> None:
    """Replace the passes by outputs whose validation loss and scores are fixed per epoch."""
    y = np.array([0, 0, 1, 1])
    calls = {"train": 0, "val": 0}

    def fake_train(*args, **kwargs) -> EpochOutput:
        calls["train"] += 1
        return EpochOutput(0.5, y, np.tile([0.5, 0.5], (4, 1)), 4, 1.0)

    def fake_eval(*args, **kwargs) -> EpochOutput:
        e = calls["val"]
        calls["val"] += 1
        s = val_scores[e]  # P(class 1) of the two positives; the negatives get 0.5
        p1 = np.array([0.5, 0.5, s, s])
        return EpochOutput(val_losses[e], y, np.stack([1 - p1, p1], 1), 4, 1.0)

    monkeypatch.setattr(engine, "train_one_epoch", fake_train)
    monkeypatch.setattr(engine, "evaluate", fake_eval)


class _Recorder(Callback):
    def __init__(self) -> None:
        self.ends: list[EpochEnd] = []

    def on_epoch_end(self, end: EpochEnd) -> None:
        self.ends.append(end)


@pytest.mark.parametrize(
    ("select", "best_epoch", "improved"),
    [("val_loss", 1, [True, True, False, False]), ("val_auc", 2, [True, False, True, False])],
)
def test_fit_selects_the_best_epoch_and_tells_the_callbacks(monkeypatch, select, best_epoch, improved):
    # val_loss 0.9, 0.4, 0.6, 0.4 (a tie is no improvement); val AUC 0.5, 0.5, 1.0, 1.0
    _scripted(monkeypatch, [0.9, 0.4, 0.6, 0.4], [0.5, 0.5, 0.9, 0.9])
    rec = _Recorder()
    model = _linear()
    result = fit(
        model,
        ([], []),
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        CPU,
        epochs=4,
        seed=0,
        select_metric=select,
        progress=False,
        callbacks=[rec],
    )
    assert result.history["val_loss"] == [0.9, 0.4, 0.6, 0.4]
    assert result.history["val_auc"] == [0.5, 0.5, 1.0, 1.0]
    assert result.best_epoch == best_epoch
    assert result.best_value == result.history[select][best_epoch]
    assert result.best_metrics["val_loss"] == result.history["val_loss"][best_epoch]
    assert [e.epoch for e in rec.ends] == [0, 1, 2, 3]
    assert [e.improved for e in rec.ends] == improved
    assert set(result.history) >= {
        "train_loss",
        "val_loss",
        "train_auc",
        "val_auc",
        "val_f1",
        "lr",
        "epoch_time_s",
        "train_images_per_s",
    }
    assert result.history["lr"] == [0.1] * 4
    assert result.history["epoch_time_s"] == [2.0] * 4  # train + val seconds


def test_fit_resumed_from_its_own_state_equals_an_uninterrupted_fit():
    """Epochs 0-1, then 2-3 from the returned state: the same weights and history as epochs 0-3."""
    x, y = _data(n=24)
    train = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=5, shuffle=True, generator=torch.Generator()
    )
    val = _batches(*_data(n=10, seed=1), 5)

    def run(model, opt, epochs, start=None, start_epoch=0):
        return fit(
            model,
            (train, val),
            opt,
            nn.CrossEntropyLoss(),
            CPU,
            epochs=epochs,
            seed=3,
            progress=False,
            start=start,
            start_epoch=start_epoch,
        )

    full_model = _linear()
    full = run(full_model, torch.optim.SGD(full_model.parameters(), lr=0.3), 4)
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    half = run(model, opt, 2)
    resumed = run(model, opt, 4, start=half, start_epoch=2)
    for key in ("train_loss", "val_loss", "val_auc"):
        assert resumed.history[key] == pytest.approx(full.history[key], abs=1e-7), key
    assert (resumed.best_epoch, resumed.best_value) == (full.best_epoch, pytest.approx(full.best_value))
    for a, b in zip(model.parameters(), full_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert isinstance(half, FitResult) and len(half.history["val_loss"]) == 2


def test_a_callback_can_stop_the_loop(monkeypatch):
    """An exception raised by a callback (Optuna pruning, say) ends ``fit`` after that epoch."""
    _scripted(monkeypatch, [0.9, 0.4, 0.6], [0.5, 0.6, 0.7])

    class Stop(Callback):
        def on_epoch_end(self, end: EpochEnd) -> None:
            if end.epoch == 1:
                raise KeyboardInterrupt

    rec = _Recorder()
    model = _linear()
    with pytest.raises(KeyboardInterrupt):
        fit(
            model,
            ([], []),
            torch.optim.SGD(model.parameters(), lr=0.1),
            nn.CrossEntropyLoss(),
            CPU,
            epochs=3,
            seed=0,
            progress=False,
            callbacks=[rec, Stop()],
        )
    assert [e.epoch for e in rec.ends] == [0, 1]

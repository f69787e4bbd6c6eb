"""The weighted loss and fp32 validation of medattn.engine, against values
worked out by hand."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from medattn import engine
from medattn.engine import evaluate, fit, train_one_epoch
from medattn.stages.train import training_loss

CPU = torch.device("cpu")


class PerImageLogits(nn.Module):
    """Image ``i`` (its input is the number ``i``) gets its own row of logits, all zero at the start.

    One SGD step with lr 1 moves row ``i`` by ``-c_i (p - onehot)`` where ``c_i`` is image ``i``'s
    weight in its batch's loss; each row is touched in one batch only, so the rows after one epoch
    read out every image's share of the epoch's loss weight.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.logits[x.long()]


def test_positives_carry_half_of_an_epochs_loss_weight_whatever_the_batches():
    # 10 images, 2 positives, batches of 4: [pos, neg, neg, neg], [pos, neg, neg, neg], [neg, neg].
    # Balanced weights N / (C N_c): positives 10 / (2 * 2) = 2.5, negatives 10 / (2 * 8) = 0.625.
    # Weighted sum / 4: each positive's coefficient is 2.5 / 4, each negative's 0.625 / 4, and the
    # row moves by coefficient * 0.5 (softmax of zero logits). Positives: 2 * 2.5 = 5 of 10 = 50 %.
    # (The old per-batch weighted mean gave 2.5 / 4.375 per positive: 38 % of the epoch.)
    y = torch.tensor([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    x = torch.arange(10)
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 10, 4)]
    model = PerImageLogits(10)
    loss_fn = training_loss(y.numpy(), 2, class_weights=True, norm=4, device=CPU)
    train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=1.0), loss_fn, CPU, progress=False)
    moved = model.logits.detach()[:, 1].abs().numpy()  # the true-or-other class column; |change| = c_i / 2
    expected = np.where(y.numpy() == 1, 2.5 / 4 * 0.5, 0.625 / 4 * 0.5)
    np.testing.assert_allclose(moved, expected, rtol=1e-6)
    assert moved[y.numpy() == 1].sum() / moved.sum() == pytest.approx(0.5, abs=1e-6)


def test_validation_loss_is_the_same_for_batch_sizes_1_7_and_32():
    g = torch.Generator().manual_seed(0)
    x = torch.randn((45, 4), generator=g)
    y = (torch.rand(45, generator=g) < 0.2).long()  # imbalanced
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    loss_fn = training_loss(y.numpy(), 2, class_weights=True, norm=32, device=CPU)
    losses = [
        evaluate(model, [(x[i : i + b], y[i : i + b]) for i in range(0, 45, b)], loss_fn, CPU, progress=False).loss
        for b in (1, 7, 32)
    ]
    with torch.no_grad():  # total weighted loss / total weight over the whole split, by hand
        per = nn.functional.cross_entropy(model(x), y, reduction="none")
        w = loss_fn.weight[y]
        expected = float((w * per).sum() / w.sum())
    assert losses == pytest.approx([expected] * 3, rel=1e-6)


def test_weighted_cross_entropy_is_the_batch_sum_over_the_norm():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    w = torch.tensor([1.0, 3.0])
    per = nn.functional.cross_entropy(logits, labels, reduction="none")
    loss = engine.WeightedCrossEntropy(w, norm=8)(logits, labels)
    assert loss.item() == pytest.approx(float((per * w[labels]).sum() / 8), rel=1e-6)
    total, weight = engine.loss_terms(engine.WeightedCrossEntropy(w, norm=8), logits, labels)
    assert weight.item() == 7.0
    assert total.item() == pytest.approx(float((per * w[labels]).sum()), rel=1e-6)


def test_validation_runs_in_fp32_with_amp_on(monkeypatch):
    # On CPU engine.autocast is a no-op; make it a real bf16 autocast so that amp changes logits.
    def cpu_bf16(device, enabled):
        return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()

    monkeypatch.setattr(engine, "autocast", cpu_bf16)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((40, 64), generator=g)
    y = (x[:, 0] > 0).long()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 40, 8)]
    torch.manual_seed(0)
    model = nn.Linear(64, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay what evaluate() sees below
    loss_fn = nn.CrossEntropyLoss()
    res = fit(model, (batches, batches), opt, loss_fn, CPU, epochs=1, seed=0, amp=True, progress=False)
    fp32 = evaluate(model, batches, loss_fn, CPU, amp=False, progress=False)
    bf16 = evaluate(model, batches, loss_fn, CPU, amp=True, progress=False)
    assert abs(bf16.loss - fp32.loss) > 1e-5  # bf16 really differs here
    assert res.history["val_loss"][0] == pytest.approx(fp32.loss, rel=1e-7, abs=0)

"""DDP with the weighted-sum training loss: each rank's gradient share, averaged as DDP
does, equals the single-process gradient of the global batch, and the gathered validation loss is
``Σ w l / Σ w`` over the whole split, as one process computes it.

No process group is started: DDP's gradient average and ``all_gather_object`` are reproduced by
hand on CPU, so these run in a second.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medattn import distributed, engine
from medattn.distributed import DistContext, GlobalBatchSampler

WEIGHTS = torch.tensor([0.6, 3.0])  # balanced weights of a 5:1 imbalance


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (torch.rand(n, generator=g) < 0.2).long()
    return x, y


def _grad(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize(("n", "world"), [(37, 2), (33, 2), (40, 4)])
def test_ddp_gradient_average_equals_the_single_process_gradient(n, world):
    # 37 / 16: last batch 5 splits 2 + 3 (the old world·local/m factors 0.8 / 1.2 broke this);
    # 33 / 16: last batch 1 < 2 ranks, rank 1 repeats an image at weight 0
    x, y = _data(n)
    global_batch = 16 if world == 2 else 8
    local = distributed.per_rank_batch(global_batch, world)
    model = nn.Linear(4, 2)
    single_loss = engine.WeightedCrossEntropy(WEIGHTS, norm=global_batch)  # norm: nominal batch (train stage)
    rank_loss = engine.WeightedCrossEntropy(WEIGHTS, norm=local)
    samplers = [GlobalBatchSampler(n, global_batch, r, world, lambda e: 3 + e, replay=False) for r in range(world)]
    shares = [s.shares() for s in samplers]
    for step, batch in enumerate(samplers[0].global_batches()):
        expected = _grad(model, single_loss(model(x[batch]), y[batch]))
        grads = []
        for r, sampler in enumerate(samplers):
            idx = shares[r][step][0]
            scale = sampler.loss_scale(step, len(idx))
            grads.append(_grad(model, rank_loss(model(x[idx]), y[idx]) * scale))
        ddp = torch.stack(grads).mean(0)  # DDP all-reduces the mean of the ranks' gradients
        torch.testing.assert_close(ddp, expected, rtol=1e-5, atol=1e-7)


def test_loss_scale_is_one_except_for_a_padding_repeat():
    # 17 images, global batch 16, 2 ranks: the last batch holds one image, so one rank pads
    samplers = [GlobalBatchSampler(17, 16, r, 2, lambda e: e, replay=False) for r in (0, 1)]
    assert [s.loss_scale(0, 8) for s in samplers] == [1.0, 1.0]
    last = {s.shares()[1][1] == [-1]: s.loss_scale(1, 1) for s in samplers}
    assert last == {True: 0.0, False: 1.0}


def _gather_all(outs: list[engine.EpochOutput], monkeypatch) -> list[engine.EpochOutput]:
    """``gather_output`` on every rank, ``all_gather_object`` replayed by hand (two passes: record
    what each rank sends, then hand every rank the full list)."""
    sent: list = []

    def record(parts, obj):
        sent.append(obj)
        parts[:] = [obj] * len(parts)  # a placeholder result, thrown away

    monkeypatch.setattr(distributed.dist, "all_gather_object", record)
    world = len(outs)
    for r, out in enumerate(outs):
        distributed.gather_output(out, DistContext(rank=r, world_size=world))

    def fill(parts, obj):
        parts[:] = sent

    monkeypatch.setattr(distributed.dist, "all_gather_object", fill)
    return [distributed.gather_output(out, DistContext(rank=r, world_size=world)) for r, out in enumerate(outs)]


def test_gathered_validation_loss_is_the_whole_split_weighted_loss(monkeypatch):
    x, y = _data(23, seed=1)
    y[:4] = 1  # rank shards of different class mix: an image-weighted mean of their losses is wrong
    model = nn.Linear(4, 2)
    loss_fn = engine.WeightedCrossEntropy(WEIGHTS, norm=8)
    device = torch.device("cpu")

    def run(idx) -> engine.EpochOutput:
        loader = DataLoader(TensorDataset(x[idx], y[idx]), batch_size=5)
        return engine.evaluate(model, loader, loss_fn, device, progress=False)

    whole = run(list(range(23)))
    shards = [run(list(range(r, 23, 3))) for r in range(3)]  # ShardSampler's rank, rank + world, ...
    assert not any(s.loss == pytest.approx(whole.loss) for s in shards)
    for joined in _gather_all(shards, monkeypatch):
        assert joined.loss == pytest.approx(whole.loss, rel=1e-6)
        assert joined.loss_weight == pytest.approx(whole.loss_weight, rel=1e-6)
        assert joined.n_images == 23 and joined.scores.shape == (23, 2)
    # by hand: Σ w_y · CE / Σ w_y over all 23 images
    logits = model(x).detach()
    ce = nn.functional.cross_entropy(logits, y, reduction="none")
    assert whole.loss == pytest.approx(float((WEIGHTS[y] * ce).sum() / WEIGHTS[y].sum()), rel=1e-6)


def test_gather_without_loss_weight_falls_back_to_images(monkeypatch):
    def out(loss: float, n: int) -> engine.EpochOutput:
        return engine.EpochOutput(loss=loss, y_true=torch.zeros(n).long().numpy(), scores=torch.ones(n, 2).numpy(),
                                  n_images=n, seconds=float(n))  # fmt: skip

    joined = _gather_all([out(1.0, 3), out(2.0, 1)], monkeypatch)[0]
    assert joined.loss == pytest.approx((1.0 * 3 + 2.0 * 1) / 4)
    assert (joined.n_images, joined.loss_weight, joined.seconds) == (4, 4.0, 3.0)

"""Multi-process training with PyTorch DDP (``torchrun -m medattn train`` or ``medattn train --nproc N``).

What this module owns, so that :func:`medattn.stages.train.train` only asks "am I the main rank?":

* process-group set-up and teardown from the ``torchrun`` environment (``gloo`` on CPU, ``nccl`` on
  CUDA, one GPU per local rank);
* the **global batch**: ``--batch-size`` is the batch of one optimisation step summed over all
  ranks; each rank takes ``batch_size / world_size`` images of it (an error when not divisible);
* :class:`GlobalBatchSampler`, a seeded, ``set_epoch``-aware distributed batch sampler whose global
  batches are *exactly* the batches a single-process run with the same seed draws, so a DDP run and
  a single-process run optimise the same model (see "Parity" below);
* :class:`ShardSampler`, a :class:`~torch.utils.data.DistributedSampler` for evaluation that drops
  the padding duplicates, so validation metrics cover exactly the validation split;
* :func:`gather_output`, which joins every rank's labels, scores and loss before metrics are computed;
* :func:`on_main`, work rank 0 alone does while the others wait for its result (opening the
  tracking store, finding the checkpoint to resume from).

Parity with a single process (same ``--batch-size``, ``--seed``, ``--num-workers 0``): every rank
replays the single-process random stream of the augmentation (it runs the random transforms on a
blank image for the samples other ranks own, which costs a little CPU but no decoding). The training
loss is a weighted *sum* divided by a fixed constant, the nominal per-rank batch
(:class:`medattn.engine.WeightedCrossEntropy`), so DDP's gradient average over ``world`` ranks is the
global batch's sum divided by the nominal global batch, exactly the single-process loss, even when
the last batch does not split evenly; only a rank's zero-weight padding repeat is scaled to 0
(:meth:`GlobalBatchSampler.loss_scale`). What remains is float
summation order (per-rank means, the all-reduce, per-rank evaluation batches): the validation and
training metrics of a 2-process gloo run match the single-process run to 1e-4 absolute (observed:
about 1e-7 after 2 epochs of DeiT; ``tests/test_distributed.py``). This relies on the
single-process loop creating exactly one DataLoader iterator per epoch (each creation draws a base
seed from ``loader.generator``, ahead of the shuffling permutation); the progress bar of
:mod:`medattn.engine` is therefore given a lazy view of the loader. Not covered: BatchNorm
statistics (they are per-rank in DDP, so CNNs drift from a single-process run; DeiT uses
LayerNorm) and ``--num-workers > 0`` (worker random streams differ). ``--class-weights`` is
covered: every image adds ``w_y · loss / norm`` to the gradient whatever its rank, and the gathered
validation loss is ``Σ w l / Σ w`` over the whole split (:func:`gather_output`).
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from medattn.engine import EpochOutput, Parallel
from medattn.errors import ConfigError, MedattnError

T = TypeVar("T")

#: Environment variables ``torchrun`` sets in every worker.
ENV_WORLD_SIZE, ENV_RANK, ENV_LOCAL_RANK = "WORLD_SIZE", "RANK", "LOCAL_RANK"


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job.

    Attributes:
        rank: global rank (0 logs to MLflow and writes checkpoints).
        local_rank: rank on this machine (picks the GPU).
        world_size: number of processes; 1 means no DDP at all.
        backend: ``gloo`` or ``nccl`` (empty without DDP).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that talks to MLflow and writes files."""
        return self.rank == 0


def env_world_size() -> int:
    """The world size ``torchrun`` announced (1 outside ``torchrun``)."""
    try:
        return max(1, int(os.environ.get(ENV_WORLD_SIZE, "1")))
    except ValueError:
        return 1


def env_rank() -> int:
    """The global rank ``torchrun`` announced (0 outside ``torchrun``)."""
    try:
        return int(os.environ.get(ENV_RANK, "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """True outside ``torchrun`` and on rank 0 inside it (decides who prints and logs)."""
    return env_rank() == 0


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Images per rank and step.

    Raises:
        ConfigError: ``global_batch`` is not a multiple of ``world_size``.
    """
    if global_batch % world_size:
        raise ConfigError(
            f"--batch-size {global_batch} is the global batch and must split evenly over {world_size} "
            f"processes; use a multiple of {world_size} (e.g. {max(world_size, global_batch // world_size * world_size)})."
        )
    return global_batch // world_size


def setup(device_name: str = "auto") -> DistContext:
    """Join the process group when launched by ``torchrun`` (no-op for a single process).

    Args:
        device_name: the ``--device`` option; ``auto``/``cuda`` picks ``cuda:LOCAL_RANK`` when CUDA
            is there, and the backend follows (``nccl`` for CUDA, ``gloo`` for CPU).

    Returns:
        This process's :class:`DistContext`.
    """
    world = env_world_size()
    if world <= 1:
        return DistContext()
    local_rank = int(os.environ.get(ENV_LOCAL_RANK, "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        # A bounded timeout: a rank that died must not keep the others waiting for the default 30 min.
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10))
    return DistContext(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size(), backend=backend)


def device_for(ctx: DistContext, device_name: str) -> str:
    """The ``--device`` value this rank uses: its own GPU under DDP on CUDA, the option otherwise."""
    if ctx.enabled and ctx.backend == "nccl":
        return f"cuda:{ctx.local_rank}"
    return device_name


def teardown(ctx: DistContext) -> None:
    """Leave the process group (safe to call when there is none)."""
    if not ctx.enabled:
        return
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op without DDP)."""
    if ctx.enabled:
        dist.barrier()


def broadcast_object(ctx: DistContext, obj: object) -> object:
    """Rank 0's ``obj`` on every rank (e.g. the run id, or an error sentence)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(ctx: DistContext, fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 alone; every rank gets its result (or fails with its error).

    The other ranks wait here (the broadcast is a barrier) and never run ``fn``: e.g. rank 0 alone
    creates or opens the tracking store (two ranks creating a fresh sqlite store at once
    crash), and reads the checkpoint a resumed run continues from. A :class:`MedattnError` of rank 0
    is raised on every rank with the same sentence; any other failure of rank 0 is re-raised there
    and stops the others with a ``RuntimeError`` instead of leaving them waiting.

    Args:
        ctx: this rank.
        fn: the work of rank 0; its result must pickle (it is broadcast).
    """
    if not ctx.enabled:
        return fn()
    result, failure, failed = None, None, None
    if ctx.is_main:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - told to the other ranks, then re-raised below
            failure, failed = (isinstance(exc, MedattnError), str(exc)), exc
    result, failure = broadcast_object(ctx, (result, failure))
    if failed is not None:
        raise failed
    if failure is not None:
        user_error, message = failure
        raise MedattnError(message) if user_error else RuntimeError(f"rank 0 failed: {message}")
    return result


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """Wrap ``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` under DDP."""
    if not ctx.enabled:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP and/or ``torch.compile`` wrapper."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def all_finite(ctx: DistContext):
    """A loss check that every rank answers the same way (so all ranks stop together on NaN).

    Returns:
        ``check(loss) -> bool``: true when the loss is finite on every rank.
    """

    def check(loss: torch.Tensor) -> bool:
        bad = (~torch.isfinite(loss.detach())).to(torch.float32).reshape(1)
        if ctx.enabled:
            dist.all_reduce(bad)
        return bool(bad.item() == 0)

    return check


# =============================================================================================
# samplers
# =============================================================================================
class GlobalBatchSampler(BatchSampler):
    """This rank's share of each global batch, in the exact order a single process draws them.

    The global batches are those of ``DataLoader(dataset, batch_size=global_batch, shuffle=True,
    generator=torch.Generator().manual_seed(seed_fn(epoch)))``, i.e. the single-process loader of
    :func:`medattn.data.build_loader` as :func:`medattn.stages.train.train` reseeds it each epoch. Rank ``r``
    takes the ``r``-th slice of each; a last global batch smaller than the world is padded with
    repeats that carry zero loss weight. Indices are yielded encoded as ``position * n + index``
    (``position``: place in the epoch's order) so :class:`AugmentationReplay` can replay the
    random stream; with ``replay=False`` plain indices are yielded.

    Args:
        n: dataset length.
        global_batch: images per optimisation step over all ranks.
        rank: this rank.
        world_size: number of ranks.
        seed_fn: epoch → seed of the shuffling generator.
        replay: encode positions for :class:`AugmentationReplay`.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world_size: int, seed_fn, *, replay: bool = True):
        # BatchSampler's own fields are not used; the parent is here for isinstance checks and docs.
        self.n, self.global_batch, self.rank, self.world_size = n, global_batch, rank, world_size
        self.seed_fn, self.replay, self.epoch = seed_fn, replay, 0
        self.drop_last = False
        self.batch_size = global_batch // world_size
        self._steps: list[list[int]] = []

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration follows (as ``DistributedSampler``)."""
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """The single-process batches of the current epoch (dataset indices)."""
        generator = torch.Generator().manual_seed(self.seed_fn(self.epoch))
        # Iterating a DataLoader over bare indices consumes the generator exactly as the real
        # single-process loader does (one base-seed draw, then the permutation).
        loader = DataLoader(range(self.n), batch_size=self.global_batch, shuffle=True, generator=generator)
        return [b.tolist() for b in loader]

    def shares(self) -> list[tuple[list[int], list[int], int]]:
        """Per step: ``(indices, positions, global_size)`` of this rank's share."""
        out, start = [], 0
        for batch in self.global_batches():
            m = len(batch)
            bounds = (
                np.linspace(0, m, self.world_size + 1).round().astype(int)
                if m < self.global_batch
                else np.arange(self.world_size + 1) * self.batch_size
            )
            lo, hi = int(bounds[self.rank]), int(bounds[self.rank + 1])
            if hi > lo:
                idx, pos = batch[lo:hi], list(range(start + lo, start + hi))
            else:  # fewer images than ranks: repeat one, weighted zero by loss_scale
                idx, pos = [batch[0]], [-1]
            out.append((idx, pos, m))
            start += m
        return out

    def __iter__(self) -> Iterator[list[int]]:
        self._steps = self.shares()
        for idx, pos, _ in self._steps:
            if self.replay:
                yield [p * self.n + i if p >= 0 else -(i + 1) for i, p in zip(idx, pos, strict=True)]
            else:
                yield list(idx)

    def __len__(self) -> int:
        return -(-self.n // self.global_batch)

    def loss_scale(self, step: int, local: int) -> float:
        """Factor on this rank's loss of ``step``: 0 for a padding repeat, else 1.

        The loss is a weighted sum over the rank's images divided by the nominal per-rank batch
        (:class:`medattn.engine.WeightedCrossEntropy`), so DDP's average over the ranks
        already equals the single-process loss of the global batch (its sum over the nominal
        global batch), however unevenly the last batch splits. ``local`` (the rank's images in
        this step) is part of the :class:`~medattn.engine.Parallel` hook and unused here.
        """
        if not self._steps:
            self._steps = self.shares()
        _, pos, _ = self._steps[step]
        return 0.0 if pos == [-1] else 1.0


class ShardSampler(DistributedSampler):
    """Evaluation shards ``rank, rank + world, ...`` of a split, without padding duplicates.

    ``DistributedSampler`` pads the last round so every rank gets the same count; evaluation needs
    no collective per batch, so the padding is simply dropped and the gathered predictions cover
    each image exactly once.
    """

    def __init__(self, dataset: Dataset, rank: int, world_size: int):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
        self.n = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))


class AugmentationReplay(Dataset):
    """Wraps an image dataset so each rank's random augmentation matches a single-process run.

    A single process augments the images of an epoch one after another from the global torch
    generator. This wrapper, fed ``position * n + index`` by :class:`GlobalBatchSampler`, runs the
    dataset's transform on a blank image for every position owned by another rank, which advances
    the generator by exactly what that image would have consumed (the draws of the random
    transforms do not depend on the pixels).

    Args:
        base: a dataset with ``transform``, ``load(i)`` and ``labels`` (:class:`medattn.data.loader.ImageDataset`).
    """

    def __init__(self, base: Dataset):
        self.base = base
        self.n = len(base)
        self._next = 0
        self._blank: Image.Image | None = None

    def __len__(self) -> int:
        return self.n

    def reset(self) -> None:
        """Start of an epoch: positions count from 0 again (the caller reseeded the generator)."""
        self._next = 0

    def __getitem__(self, code: int):
        if code < 0:  # a zero-weight repeat: no place in the single-process stream
            return self.base[-code - 1]
        pos, i = divmod(int(code), self.n)
        if pos < self._next:
            self._next = 0
        if self._blank is None:
            self._blank = Image.new("RGB", self.base.load(i).size)
        for _ in range(self._next, pos):
            self.base.transform(self._blank)
        self._next = pos + 1
        return self.base[i]


class _ReplayBatchSampler:
    """Resets the replay wrapper at the start of each epoch's iteration."""

    def __init__(self, inner: GlobalBatchSampler, dataset: AugmentationReplay):
        self.inner, self.dataset = inner, dataset

    def __iter__(self):
        self.dataset.reset()
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def distribute_loader(loader: DataLoader, ctx: DistContext, *, train: bool, global_batch: int, seed_fn) -> DataLoader:
    """The DDP version of a single-process loader from :func:`medattn.data.build_loader`.

    Args:
        loader: the single-process loader (its dataset, workers and collate are reused).
        ctx: this rank.
        train: training loader (global-batch shares, replayed augmentation) or evaluation
            (:class:`ShardSampler`, per-rank batch ``global_batch / world``).
        global_batch: ``--batch-size``.
        seed_fn: epoch → shuffling seed (training only).

    Returns:
        A loader with ``.batch_sampler`` a :class:`GlobalBatchSampler` (train) or ``.sampler`` a
        :class:`ShardSampler` (evaluation).
    """
    local = per_rank_batch(global_batch, ctx.world_size)
    # A private generator: without one, each new iterator draws its base seed from the global torch
    # generator, which would shift the augmentation stream away from the single-process run's.
    common = dict(
        num_workers=loader.num_workers,
        persistent_workers=loader.num_workers > 0,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        generator=torch.Generator().manual_seed(seed_fn(0)),
    )
    if not train:
        return DataLoader(
            loader.dataset, batch_size=local, sampler=ShardSampler(loader.dataset, ctx.rank, ctx.world_size), **common
        )
    replay = loader.num_workers == 0 and hasattr(loader.dataset, "transform") and hasattr(loader.dataset, "load")
    dataset = AugmentationReplay(loader.dataset) if replay else loader.dataset
    sampler = GlobalBatchSampler(len(loader.dataset), global_batch, ctx.rank, ctx.world_size, seed_fn, replay=replay)
    batches = _ReplayBatchSampler(sampler, dataset) if replay else sampler
    out = DataLoader(dataset, batch_sampler=batches, **common)
    out.global_batch_sampler = sampler  # type: ignore[attr-defined]  # for set_epoch / loss_scale
    return out


# =============================================================================================
# gathering
# =============================================================================================
def gather_output(out, ctx: DistContext):
    """Join every rank's :class:`~medattn.engine.EpochOutput` into one over all images.

    Labels and scores are concatenated rank by rank (metrics do not depend on order); the loss is
    ``Σ loss · w / Σ w`` with ``w`` each rank's ``loss_weight`` (its ``Σ w_i``; ``n_images`` when
    ``None``), i.e. the class-weighted loss of the whole split as one process computes it (issue
    13.2); the time is the slowest rank's. Called on every rank; every rank gets the joined result.
    """
    if not ctx.enabled:
        return out
    weight = float(out.n_images if out.loss_weight is None else out.loss_weight)
    parts: list = [None] * ctx.world_size
    summed = out.loss * weight if weight > 0 else 0.0  # a rank without loss weight adds nothing (not NaN)
    dist.all_gather_object(parts, (summed, weight, out.n_images, out.y_true, out.scores, out.seconds))
    total_weight = sum(p[1] for p in parts)
    return EpochOutput(
        loss=sum(p[0] for p in parts) / total_weight if total_weight > 0 else float("nan"),
        y_true=np.concatenate([p[3] for p in parts]),
        scores=np.concatenate([p[4] for p in parts]),
        n_images=sum(p[2] for p in parts),
        seconds=max(p[5] for p in parts),
        loss_weight=total_weight,
    )


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what the re-launched workers receive)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The ``torchrun`` command that runs ``medattn <argv>`` on ``nproc`` local processes.

    ``--standalone`` lets the rendezvous pick a free local port, so several jobs on one machine do
    not collide on the default 29500.
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "medattn",
        *argv,
    ]


class DDPParallel(Parallel):
    """The DDP hooks of :func:`medattn.engine.fit`: per-epoch sampler seeding, global-batch loss
    weights, a NaN check all ranks agree on, evaluation of the plain module, gathered outputs."""

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx
        self.is_main = ctx.is_main

    def on_epoch_start(self, train_loader, epoch: int) -> None:  # noqa: D102 - see Parallel
        train_loader.global_batch_sampler.set_epoch(epoch)

    def loss_scale(self, train_loader):  # noqa: D102 - see Parallel
        return train_loader.global_batch_sampler.loss_scale

    def finite_check(self):  # noqa: D102 - see Parallel
        return all_finite(self.ctx)

    def eval_model(self, model: nn.Module) -> nn.Module:  # noqa: D102 - see Parallel
        return unwrap_model(model)

    def gather(self, out: EpochOutput) -> EpochOutput:  # noqa: D102 - see Parallel
        return gather_output(out, self.ctx)


def parallel_for(ctx: DistContext) -> Parallel:
    """The :class:`~medattn.engine.Parallel` hooks of this process (one process: the default)."""
    return DDPParallel(ctx) if ctx.enabled else Parallel()

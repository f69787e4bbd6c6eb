"""Training and evaluation loops. They know nothing about MLflow: explicit arguments in, plain
results out (STYLE habit 5)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medattn.errors import MedattnError


@dataclass(frozen=True)
class EpochOutput:
    """What one pass over a loader produced.

    Attributes:
        loss: mean loss per image.
        y_true: labels, shape (N,).
        scores: softmax probabilities, shape (N, C), in loader order.
        n_images: number of images seen.
        seconds: wall time of the pass.
    """

    loss: float
    y_true: np.ndarray
    scores: np.ndarray
    n_images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Throughput of the pass."""
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")


SYNC_EVERY = 50
"""Training steps between host reads of the running loss (divergence check, progress bar; issue 8)."""


class DivergedError(MedattnError):
    """The loss became NaN or infinite."""


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere (bf16 on CPU is slow and not needed)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _lazy(loader: Iterable):
    """``loader``'s iterator, created only when the first batch is asked for."""
    yield from loader


def _bar(loader: Iterable, desc: str, show: bool):
    total = len(loader) if hasattr(loader, "__len__") else None
    # tqdm.auto is tqdm.asyncio, whose __init__ calls iter(iterable) and throws the iterator away.
    # A DataLoader iterator draws its base seed from loader.generator when it is created, so that
    # throwaway draw would shift the shuffling permutation drawn next from the same generator (and,
    # for a loader without a generator, the global RNG that drives augmentation). The bar therefore
    # gets a lazy view: exactly one iterator per pass, as GlobalBatchSampler assumes (issue 9).
    return tqdm(_lazy(loader), desc=desc, total=total, leave=False, disable=not show, unit="batch",
                dynamic_ncols=True)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    *,
    amp: bool = False,
    desc: str = "train",
    progress: bool = True,
    loss_scale: Callable[[int, int], float] | None = None,
    finite_check: Callable[[torch.Tensor], bool] | None = None,
) -> EpochOutput:
    """One optimisation pass over ``loader``.

    Args:
        model: classifier mapping (B, 3, H, W) to logits (B, C).
        loader: yields ``(images (B, 3, H, W), labels (B,))``.
        optimizer: steps once per batch.
        loss_fn: e.g. ``nn.CrossEntropyLoss`` (reduction ``mean``).
        device: where the model lives.
        amp: bf16 autocast on CUDA.
        desc: progress bar label.
        progress: show a tqdm progress bar.
        loss_scale: DDP only: ``(step, batch_images) -> factor`` applied to the loss before
            ``backward`` (not to the reported loss), so that DDP's gradient average equals the
            global-batch mean (:meth:`medattn.distributed.GlobalBatchSampler.loss_scale`).
        finite_check: DDP only: ``loss -> bool`` that every rank answers alike
            (:func:`medattn.distributed.all_finite`), so all ranks stop together on NaN.

    Returns:
        Mean loss, labels and (detached) probabilities of the training pass.

    Raises:
        DivergedError: the loss became NaN or infinite.
    """
    model.train()
    # Issue 8: the loss sum, labels and probabilities stay on the device and are read once per
    # epoch; the divergence check and the progress bar read them every SYNC_EVERY steps only, so
    # the host does not wait for the GPU on each step.
    total, n = torch.zeros((), device=device), 0
    ys, ps = [], []
    start = time.perf_counter()
    bar = _bar(loader, desc, progress)
    for step, (images, labels) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits = model(images)
            loss = loss_fn(logits.float(), labels)
        if step % SYNC_EVERY == 0 and not (finite_check(loss) if finite_check is not None else torch.isfinite(loss)):
            raise DivergedError(
                f"the training loss became {loss.item()} in {desc}; lower --lr or check the data."
            )
        scale = loss_scale(step, labels.shape[0]) if loss_scale is not None else 1.0
        (loss if scale == 1.0 else loss * scale).backward()
        optimizer.step()
        b = labels.shape[0]
        total += loss.detach() * b
        n += b
        ys.append(labels.detach())
        ps.append(torch.softmax(logits.detach().float(), 1))
        if step % SYNC_EVERY == 0:
            bar.set_postfix(loss=f"{total.item() / n:.4f}")
    if not (finite_check(total) if finite_check is not None else torch.isfinite(total)):
        raise DivergedError(f"the training loss became {total.item()} in {desc}; lower --lr or check the data.")
    out = _output(total.item(), n, ys, ps, 0.0)  # issue 8: time includes the one end-of-epoch sync
    return dataclasses.replace(out, seconds=time.perf_counter() - start)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: nn.Module,
    device: torch.device,
    *,
    amp: bool = False,
    desc: str = "eval",
    progress: bool = True,
) -> EpochOutput:
    """Loss and probabilities of ``model`` over ``loader`` in eval mode (loader order kept)."""
    model.eval()
    total, n = torch.zeros((), device=device), 0  # on the device: no per-batch host sync (issue 8)
    ys, ps = [], []
    start = time.perf_counter()
    for images, labels in _bar(loader, desc, progress):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        loss = loss_fn(logits.float(), labels)
        b = labels.shape[0]
        total += loss * b
        n += b
        ys.append(labels)
        ps.append(torch.softmax(logits.float(), 1))
    out = _output(total.item(), n, ys, ps, 0.0)
    return dataclasses.replace(out, seconds=time.perf_counter() - start)


def _output(total: float, n: int, ys: list, ps: list, seconds: float) -> EpochOutput:
    if n == 0:
        raise MedattnError("the data loader yielded no images; check the split and --batch-size.")
    return EpochOutput(
        loss=total / n if n else math.nan,
        y_true=torch.cat(ys).cpu().numpy().astype(np.int64),
        scores=torch.cat(ps).cpu().numpy().astype(np.float64),
        n_images=n,
        seconds=seconds,
    )

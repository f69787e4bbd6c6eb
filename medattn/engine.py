"""Training and evaluation loops. They know nothing about MLflow: explicit arguments in, plain
results out (STYLE habit 5)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
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


class DivergedError(MedattnError):
    """The loss became NaN or infinite."""


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere (bf16 on CPU is slow and not needed)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _bar(loader: Iterable, desc: str, show: bool):
    total = len(loader) if hasattr(loader, "__len__") else None
    return tqdm(loader, desc=desc, total=total, leave=False, disable=not show, unit="batch", dynamic_ncols=True)


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

    Returns:
        Mean loss, labels and (detached) probabilities of the training pass.

    Raises:
        DivergedError: the loss became NaN or infinite.
    """
    model.train()
    total, n = 0.0, 0
    ys, ps = [], []
    start = time.perf_counter()
    bar = _bar(loader, desc, progress)
    for images, labels in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits = model(images)
            loss = loss_fn(logits.float(), labels)
        if not torch.isfinite(loss):
            raise DivergedError(
                f"the training loss became {loss.item()} in {desc}; lower --lr or check the data."
            )
        loss.backward()
        optimizer.step()
        b = labels.shape[0]
        total += loss.item() * b
        n += b
        ys.append(labels.detach().cpu())
        ps.append(torch.softmax(logits.detach().float(), 1).cpu())
        bar.set_postfix(loss=f"{total / n:.4f}")
    seconds = time.perf_counter() - start
    return _output(total, n, ys, ps, seconds)


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
    total, n = 0.0, 0
    ys, ps = [], []
    start = time.perf_counter()
    for images, labels in _bar(loader, desc, progress):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        loss = loss_fn(logits.float(), labels)
        b = labels.shape[0]
        total += loss.item() * b
        n += b
        ys.append(labels.cpu())
        ps.append(torch.softmax(logits.float(), 1).cpu())
    return _output(total, n, ys, ps, time.perf_counter() - start)


def _output(total: float, n: int, ys: list, ps: list, seconds: float) -> EpochOutput:
    if n == 0:
        raise MedattnError("the data loader yielded no images; check the split and --batch-size.")
    return EpochOutput(
        loss=total / n if n else math.nan,
        y_true=torch.cat(ys).numpy().astype(np.int64),
        scores=torch.cat(ps).numpy().astype(np.float64),
        n_images=n,
        seconds=seconds,
    )

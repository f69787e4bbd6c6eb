"""Training and evaluation loops. They know nothing about MLflow: explicit arguments in, plain
results out."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medattn.errors import MedattnError
from medattn.metrics import classification_metrics, is_better, metric_mode


@dataclass(frozen=True)
class EpochOutput:
    """What one pass over a loader produced.

    Attributes:
        loss: the class-weighted cross-entropy of the whole pass, ``Σ w_i l_i / Σ w_i`` over its
            images (the plain mean per image without class weights; :func:`loss_terms`), so it
            depends on neither the batch size nor the batch composition.
        y_true: labels, shape (N,).
        scores: softmax probabilities, shape (N, C), in loader order.
        n_images: number of images seen.
        seconds: wall time of the pass.
        loss_weight: ``Σ w_i`` of the pass (``None``: one per image), to join passes of several
            processes as ``Σ loss · loss_weight / Σ loss_weight``.
    """

    loss: float
    y_true: np.ndarray
    scores: np.ndarray
    n_images: int
    seconds: float
    loss_weight: float | None = None

    @property
    def images_per_s(self) -> float:
        """Throughput of the pass."""
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")


SYNC_EVERY = 50
"""Training steps between host reads of the running loss (divergence check, progress bar): a read
makes the host wait for the GPU, so it happens only every this many steps."""


class DivergedError(MedattnError):
    """The loss became NaN or infinite."""


class WeightedCrossEntropy(nn.Module):
    """Class-weighted cross-entropy summed over the batch and divided by a fixed ``norm``.

    ``nn.CrossEntropyLoss(weight=w)`` divides each batch by that batch's own ``Σ w``, so an image's
    share of an epoch's objective depends on which images share its batch: on ISIC (1.8 %
    positives, batch 32) the positives carried about 30 % of an epoch's loss weight instead of the
    50 % that balanced class weights promise. Here every image contributes ``w_{y_i} l_i / norm``
    whatever its batch, as the original project's weighted sum did; a fixed ``norm`` (the nominal
    batch size) keeps the learning rate's meaning (without class weights and with full batches
    the loss equals the batch mean).

    Args:
        weight: class weights, shape (C,); ``None``: every class 1.
        norm: the constant the batch sum is divided by.
    """

    def __init__(self, weight: torch.Tensor | None = None, norm: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # a buffer moves with .to(device), as in nn.CrossEntropyLoss
        self.norm = float(norm)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``Σ_i w_{y_i} CE(logits_i, y_i) / norm`` of a batch: logits (B, C), labels (B,)."""
        return nn.functional.cross_entropy(logits, labels, weight=self.weight, reduction="sum") / self.norm


def loss_terms(loss_fn: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ_i w_{y_i} l_i, Σ_i w_{y_i})`` of a batch, the class weights taken from ``loss_fn.weight``.

    The reported loss of a pass is the ratio of these sums over the whole pass, whatever
    ``loss_fn`` divides a batch by for the gradient.

    Args:
        loss_fn: a cross-entropy (:class:`WeightedCrossEntropy`, ``nn.CrossEntropyLoss``); its
            ``weight`` attribute (``None``: unweighted) gives the class weights.
        logits: (B, C), float32.
        labels: (B,).
    """
    weight = getattr(loss_fn, "weight", None)
    total = nn.functional.cross_entropy(logits, labels, weight=weight, reduction="sum")
    if weight is None:
        return total, torch.full((), float(labels.shape[0]), device=logits.device)
    return total, weight[labels].sum()


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
    # gets a lazy view: exactly one iterator per pass, as GlobalBatchSampler assumes
    # (tests/test_distributed.py checks it).
    return tqdm(_lazy(loader), desc=desc, total=total, leave=False, disable=not show, unit="batch", dynamic_ncols=True)


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
        loss_fn: the loss to minimise, e.g. :class:`WeightedCrossEntropy`; the reported loss is
            the pass's weighted cross-entropy (:func:`loss_terms`).
        device: where the model lives.
        amp: bf16 autocast on CUDA.
        desc: progress bar label.
        progress: show a tqdm progress bar.
        loss_scale: DDP only: ``(step, batch_images) -> factor`` applied to the loss before
            ``backward`` (not to the reported loss): 1 for a real batch, 0 for a padding repeat;
            the per-rank loss is already a sum over the nominal per-rank batch, so DDP's gradient
            average equals the single-process gradient
            (:meth:`medattn.distributed.GlobalBatchSampler.loss_scale`).
        finite_check: DDP only: ``loss -> bool`` that every rank answers alike
            (:func:`medattn.distributed.all_finite`), so all ranks stop together on NaN.

    Returns:
        Loss (``Σ w l / Σ w`` over the pass), labels and (detached) probabilities of the training pass.

    Raises:
        DivergedError: the loss became NaN or infinite.
    """
    model.train()
    # The loss sum, labels and probabilities stay on the device and are read once per
    # epoch; the divergence check and the progress bar read them every SYNC_EVERY steps only, so
    # the host does not wait for the GPU on each step.
    total, weight, n = torch.zeros((), device=device), torch.zeros((), device=device), 0
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
            raise DivergedError(f"the training loss became {loss.item()} in {desc}; lower --lr or check the data.")
        scale = loss_scale(step, labels.shape[0]) if loss_scale is not None else 1.0
        (loss if scale == 1.0 else loss * scale).backward()
        optimizer.step()
        with torch.no_grad():
            batch_total, batch_weight = loss_terms(loss_fn, logits.detach().float(), labels)
        total += batch_total
        weight += batch_weight
        n += labels.shape[0]
        ys.append(labels.detach())
        ps.append(torch.softmax(logits.detach().float(), 1))
        if step % SYNC_EVERY == 0:
            bar.set_postfix(loss=f"{total.item() / weight.item():.4f}")
    if not (finite_check(total) if finite_check is not None else torch.isfinite(total)):
        raise DivergedError(f"the training loss became {total.item()} in {desc}; lower --lr or check the data.")
    out = _output(total.item(), weight.item(), n, ys, ps)  # the time includes the one end-of-epoch sync
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
    """Loss and probabilities of ``model`` over ``loader`` in eval mode (loader order kept).

    The loss is ``Σ w_i l_i / Σ w_i`` over the whole split (class weights from ``loss_fn.weight``,
    :func:`loss_terms`), independent of the batch size and composition.
    """
    model.eval()
    # on the device: no per-batch host sync (the host would wait for the GPU)
    total, weight, n = torch.zeros((), device=device), torch.zeros((), device=device), 0
    ys, ps = [], []
    start = time.perf_counter()
    for images, labels in _bar(loader, desc, progress):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        batch_total, batch_weight = loss_terms(loss_fn, logits.float(), labels)
        total += batch_total
        weight += batch_weight
        n += labels.shape[0]
        ys.append(labels)
        ps.append(torch.softmax(logits.float(), 1))
    out = _output(total.item(), weight.item(), n, ys, ps)
    return dataclasses.replace(out, seconds=time.perf_counter() - start)


def _output(total: float, weight: float, n: int, ys: list, ps: list) -> EpochOutput:
    """The pass's :class:`EpochOutput` from its loss sums (time filled in by the caller)."""
    if n == 0:
        raise MedattnError("the data loader yielded no images; check the split and --batch-size.")
    return EpochOutput(
        loss=total / weight if weight > 0 else math.nan,
        y_true=torch.cat(ys).cpu().numpy().astype(np.int64),
        scores=torch.cat(ps).cpu().numpy().astype(np.float64),
        n_images=n,
        seconds=0.0,
        loss_weight=weight,
    )


# =============================================================================================
# fit: the epoch loop, with tracking and DDP hooked in from outside
# =============================================================================================
class Parallel:
    """How the loop runs across processes; this default is one process (DDP: :mod:`medattn.distributed`)."""

    is_main = True

    def on_epoch_start(self, train_loader: Iterable, epoch: int) -> None:
        """Called before each epoch (DDP: tell the sampler the epoch)."""

    def loss_scale(self, train_loader: Iterable) -> Callable[[int, int], float] | None:
        """``(step, batch_images) -> factor`` applied to the loss before ``backward``, or ``None``."""
        return None

    def finite_check(self) -> Callable[[torch.Tensor], bool] | None:
        """A NaN check every process answers alike, or ``None`` for the local check."""
        return None

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The module to evaluate (DDP: the plain module, no gradient sync)."""
        return model

    def gather(self, out: EpochOutput) -> EpochOutput:
        """Join every process's output of one pass (identity for one process)."""
        return out


@dataclass
class EpochEnd:
    """What an epoch produced, handed to each :class:`Callback` on the main process."""

    epoch: int
    metrics: dict[str, float]
    improved: bool
    history: dict[str, list[float]]
    best_value: float | None
    best_epoch: int
    best_metrics: dict[str, float]


class Callback:
    """Hook into :func:`fit` (tracking, checkpoints, Optuna pruning); methods are no-ops by default."""

    def on_epoch_end(self, end: EpochEnd) -> None:
        """Called on the main process after each epoch, after the metrics are computed."""


@dataclass
class FitResult:
    """Outcome of :func:`fit` (on non-main DDP processes: empty history and ``best_epoch`` -1)."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_value: float | None = None
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)


def _prefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": float(v) for k, v in metrics.items()}


def epoch_metrics(tr: EpochOutput, va: EpochOutput, lr: float) -> dict[str, float]:
    """The per-epoch metrics: ``train_*``, ``val_*``, ``lr``, ``epoch_time_s``, ``train_images_per_s``."""
    return {
        **_prefixed("train", {"loss": tr.loss, **classification_metrics(tr.y_true, tr.scores)}),
        **_prefixed("val", {"loss": va.loss, **classification_metrics(va.y_true, va.scores)}),
        "lr": lr,
        "epoch_time_s": tr.seconds + va.seconds,
        "train_images_per_s": tr.images_per_s,
    }


def _passes(model, loaders, optimizer, loss_fn, device, par: Parallel, tag: str, amp: bool, progress: bool):
    """One training pass and one validation pass, each joined over every process."""
    train_loader, val_loader = loaders
    show = progress and par.is_main
    tr = train_one_epoch(
        model,
        train_loader,
        optimizer,
        loss_fn,
        device,
        amp=amp,
        desc=f"{tag} train",
        progress=show,
        loss_scale=par.loss_scale(train_loader),
        finite_check=par.finite_check(),
    )
    # Validation picks best.pt (and, through best_val_*, the champion), so it runs in
    # fp32 like `test`, never from bf16 logits (coarser scores, more ties), even with amp on.
    va = evaluate(par.eval_model(model), val_loader, loss_fn, device, amp=False, desc=f"{tag} val", progress=show)
    return par.gather(tr), par.gather(va)


def _record(state: FitResult, epoch: int, metrics: dict[str, float], select_metric: str, mode: str) -> EpochEnd:
    """Append the epoch to the history, update the best epoch; what the callbacks get."""
    for k, v in metrics.items():
        state.history.setdefault(k, []).append(v)
    improved = is_better(metrics.get(select_metric, math.nan), state.best_value, mode)
    if improved:
        state.best_value, state.best_epoch, state.best_metrics = metrics[select_metric], epoch, dict(metrics)
    return EpochEnd(epoch, metrics, improved, state.history, state.best_value, state.best_epoch, state.best_metrics)


def fit(
    model: nn.Module,
    loaders: tuple[Iterable, Iterable],
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    *,
    epochs: int,
    seed: int,
    select_metric: str = "val_loss",
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    start: FitResult | None = None,
    start_epoch: int = 0,
    amp: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    parallel: Parallel | None = None,
) -> FitResult:
    """Train ``model`` for epochs ``start_epoch .. epochs - 1``, selecting the best epoch by ``select_metric``.

    Shuffling and augmentation are reseeded per epoch (``seed * 1000 + epoch``), so a resumed run
    sees exactly the batches an uninterrupted one would.

    Args:
        model: classifier mapping (B, 3, H, W) to logits (B, C).
        loaders: ``(train, val)`` loaders of ``(images, labels)``.
        optimizer: steps once per batch; ``scheduler`` (optional) once per epoch.
        loss_fn: e.g. :class:`WeightedCrossEntropy` (the train stage's loss).
        device: where the model lives.
        epochs: total epochs (the loop stops before this index).
        seed: the run's seed.
        select_metric: metric that picks the best epoch (lowest for losses, highest otherwise).
        scheduler: learning-rate schedule stepped after each epoch.
        start: history and best epoch so far (a resumed run).
        start_epoch: first epoch to run.
        amp: bf16 autocast on CUDA for the training passes; validation always runs in fp32.
        progress: show progress bars.
        callbacks: called after each epoch on the main process (may raise, e.g. Optuna pruning).
        parallel: DDP hooks (:class:`Parallel` for one process).

    Returns:
        A :class:`FitResult`.
    """
    par = parallel or Parallel()
    train_loader = loaders[0]
    state = FitResult(**dataclasses.asdict(start)) if start is not None else FitResult()
    mode = metric_mode(select_metric)
    for epoch in range(start_epoch, epochs):
        torch.manual_seed(seed * 1000 + epoch)
        if getattr(train_loader, "generator", None) is not None:
            train_loader.generator.manual_seed(seed * 1000 + epoch)
        par.on_epoch_start(train_loader, epoch)
        tr, va = _passes(model, loaders, optimizer, loss_fn, device, par, f"epoch {epoch + 1}/{epochs}", amp, progress)
        lr_now = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        metrics = epoch_metrics(tr, va, lr_now)
        if not par.is_main:  # DDP: the main process alone keeps the history and runs the callbacks
            continue
        end = _record(state, epoch, metrics, select_metric, mode)
        for cb in callbacks:
            cb.on_epoch_end(end)
    return state if par.is_main else FitResult()

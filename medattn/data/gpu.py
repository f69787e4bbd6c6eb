"""The fast input path: uint8 cache batches on the training device and batched augmentation there.

The PIL path (:func:`medattn.data.build_loader`) decodes, augments and normalises one image at a
time on the CPU, which fed a GPU at 125 images/s with 0 workers and 1103 with 15 (a 512×680 JPEG to 224 px,
affine + flip, on 16 cores), below every model's GPU rate. This module
replaces it when the uint8 cache of ``medattn data prepare`` exists:

1. :class:`CacheBatchLoader` gathers whole batches of rows from the memory-mapped cache
   ``(N, H, W, 3)`` uint8 on a background thread into pinned memory and copies them to the device
   with ``non_blocking=True``; it yields uint8 ``(B, 3, H, W)`` (a channels-last view, no copy)
   and int64 labels ``(B,)`` already on the device.
2. :class:`BatchAugment` applies the paper's augmentation to the whole batch at once with
   ``F.affine_grid``/``F.grid_sample``: RandomAffine(±10°, translate (0.05, 0.1), scale
   (0.95, 1.05)) and a horizontal flip with p = 0.5, drawn per sample from a ``torch.Generator``
   with the same distribution as torchvision's ``RandomAffine`` (integer-pixel translations,
   nearest-neighbour sampling, black fill), then ImageNet normalisation, float32 channels_last.
3. :class:`DeviceLoader` ties both together and is what the train stage iterates; it has a
   ``generator`` attribute (shuffling *and* augmentation), so reseeding it per epoch makes a
   resumed run see exactly the batches of an uninterrupted one, on CPU and GPU alike.

Augmentation parameters are drawn on the generator's device (the CPU for the loaders built
here), so a seed gives the same augmented batches on every device. Nothing in this module
synchronises the host with the GPU.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medattn.data.base import DataIndex
from medattn.data.cache import open_cache
from medattn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from medattn.errors import ConfigError

PIPELINES = ("auto", "gpu", "cpu")
"""Values of ``--data-pipeline``: ``gpu`` is this module (on whatever device trains), ``cpu`` the PIL path."""

DEGREES = 10.0
TRANSLATE = (0.05, 0.1)
SCALE = (0.95, 1.05)
FLIP_P = 0.5


# =============================================================================================
# augmentation
# =============================================================================================
@dataclass(frozen=True)
class AffineParams:
    """Per-sample parameters of one augmented batch (all tensors of shape ``(B,)``).

    Attributes:
        angle: rotation in degrees, counter-clockwise as in torchvision (``[-10, 10]``).
        tx: horizontal translation in whole pixels (``|tx| <= round(0.05 * W)``).
        ty: vertical translation in whole pixels (``|ty| <= round(0.1 * H)``).
        scale: isotropic scale (``[0.95, 1.05]``).
        flip: ``True`` where the sample is flipped horizontally (after the affine, as torchvision's
            ``RandomAffine`` followed by ``RandomHorizontalFlip``).
    """

    angle: Tensor
    tx: Tensor
    ty: Tensor
    scale: Tensor
    flip: Tensor


def sample_params(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    *,
    degrees: float = DEGREES,
    translate: tuple[float, float] = TRANSLATE,
    scale: tuple[float, float] = SCALE,
    flip_p: float = FLIP_P,
) -> AffineParams:
    """Draw per-sample augmentation parameters with torchvision ``RandomAffine``'s distribution.

    Args:
        batch: number of samples ``B``.
        height: image height ``H`` in pixels (bounds the vertical translation).
        width: image width ``W`` in pixels.
        generator: source of randomness; the parameters live on its device (CPU if ``None``).
        degrees: rotation drawn uniformly from ``[-degrees, degrees]``.
        translate: maximal fractions ``(a, b)``: ``tx ~ round(U(-a W, a W))``, ``ty ~ round(U(-b H, b H))``.
        scale: scale drawn uniformly from ``[scale[0], scale[1]]``.
        flip_p: probability of a horizontal flip.

    Returns:
        :class:`AffineParams` with ``(B,)`` tensors.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((5, batch), generator=generator, device=device, dtype=torch.float64)
    max_dx, max_dy = translate[0] * width, translate[1] * height
    return AffineParams(
        angle=(u[0] * 2 - 1) * degrees,
        tx=torch.round((u[1] * 2 - 1) * max_dx),
        ty=torch.round((u[2] * 2 - 1) * max_dy),
        scale=scale[0] + u[3] * (scale[1] - scale[0]),
        flip=u[4] < flip_p,
    )


def affine_theta(params: AffineParams, height: int, width: int) -> Tensor:
    """The ``F.affine_grid`` matrices of ``params`` (normalised coordinates, ``align_corners=False``).

    torchvision maps an output pixel offset ``o`` (from the image centre) to the input offset
    ``M⁻¹ (o − t)`` with ``M⁻¹ = [[cos a, sin a], [−sin a, cos a]] / s``. In normalised coordinates
    ``n = D⁻¹ o`` with ``D = diag(W/2, H/2)`` that is ``D⁻¹ M⁻¹ D n − D⁻¹ M⁻¹ t``. A horizontal flip
    of the output negates ``n_x``, i.e. the first column.

    Args:
        params: per-sample parameters, ``(B,)`` tensors.
        height: image height ``H``.
        width: image width ``W``.

    Returns:
        float32 ``(B, 2, 3)`` on the parameters' device.
    """
    a = torch.deg2rad(params.angle.double())
    cos, sin, s = torch.cos(a), torch.sin(a), params.scale.double()
    tx, ty = params.tx.double(), params.ty.double()
    aspect = height / width
    f = torch.where(params.flip, -1.0, 1.0).double()
    theta = torch.stack(
        [
            torch.stack([f * cos / s, sin / s * aspect, -(cos * tx + sin * ty) / s * (2.0 / width)], -1),
            torch.stack([-f * sin / s / aspect, cos / s, -(-sin * tx + cos * ty) / s * (2.0 / height)], -1),
        ],
        -2,
    )
    return theta.float()


class BatchAugment(nn.Module):
    """Paper augmentation + ImageNet normalisation of a whole uint8 batch on its device.

    Args:
        train: augment (random affine + flip); otherwise only convert and normalise.
        mode: ``grid_sample`` interpolation; ``nearest`` is torchvision ``RandomAffine``'s default
            (what the PIL path does), ``bilinear`` is smoother.
        channels_last: return ``torch.channels_last`` memory format (fast convolutions under bf16).
        degrees: rotation bound in degrees.
        translate: maximal translation fractions ``(horizontal, vertical)``.
        scale: scale range.
        flip_p: horizontal flip probability.
    """

    def __init__(
        self,
        train: bool = True,
        *,
        mode: str = "nearest",
        channels_last: bool = True,
        degrees: float = DEGREES,
        translate: tuple[float, float] = TRANSLATE,
        scale: tuple[float, float] = SCALE,
        flip_p: float = FLIP_P,
    ) -> None:
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise ConfigError(f"augmentation interpolation {mode!r} is not valid; use nearest or bilinear.")
        self.augment = train
        self.mode = mode
        self.channels_last = channels_last
        self.degrees, self.translate, self.scale, self.flip_p = degrees, tuple(translate), tuple(scale), flip_p
        # mean/std scaled to 0..255 so the uint8 values need no separate division
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> AffineParams:
        """Per-sample parameters for a batch (see :func:`sample_params`)."""
        return sample_params(
            batch,
            height,
            width,
            generator,
            degrees=self.degrees,
            translate=self.translate,
            scale=self.scale,
            flip_p=self.flip_p,
        )

    def apply(self, images: Tensor, params: AffineParams | None) -> Tensor:
        """Transform a batch with given parameters.

        Args:
            images: uint8 (or float in 0..255) ``(B, 3, H, W)``; ``(B, H, W, 3)`` is accepted too.
            params: per-sample parameters, or ``None`` for no augmentation.

        Returns:
            float32 ``(B, 3, H, W)``, ImageNet-normalised, channels_last when configured.
        """
        x = _nchw(images).float()
        if params is not None:
            b, _, h, w = x.shape
            theta = affine_theta(params, h, w).to(x.device, non_blocking=True)
            grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
            # out-of-image pixels are 0 (black) before normalisation, as torchvision's fill=0
            x = F.grid_sample(x, grid, mode=self.mode, padding_mode="zeros", align_corners=False)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment (when ``train``) and normalise a batch.

        Args:
            images: uint8 ``(B, 3, H, W)`` or ``(B, H, W, 3)`` on any device.
            generator: randomness for the per-sample parameters (ignored when not ``train``).

        Returns:
            float32 ``(B, 3, H, W)`` on the images' device.
        """
        if not self.augment:
            return self.apply(images, None)
        b, _, h, w = _nchw(images).shape
        return self.apply(images, self.sample(b, h, w, generator))


def _nchw(images: Tensor) -> Tensor:
    """``(B, 3, H, W)`` view of ``(B, 3, H, W)`` or ``(B, H, W, 3)`` images (no copy)."""
    if images.dim() != 4:
        raise ConfigError(f"images must be a 4-d batch, got shape {tuple(images.shape)}.")
    if images.shape[1] == 3:
        return images
    if images.shape[-1] == 3:
        return images.permute(0, 3, 1, 2)
    raise ConfigError(f"images must have 3 channels, got shape {tuple(images.shape)}.")


# =============================================================================================
# loaders
# =============================================================================================
class CacheBatchLoader:
    """uint8 batches of cache rows, gathered on a background thread and copied to ``device``.

    Args:
        images: the cache array, uint8 ``(N, H, W, 3)`` (usually a read-only memmap).
        rows: cache row of each sample, ``(n,)`` int.
        labels: label of each sample, ``(n,)`` int.
        batch_size: samples per batch.
        device: where batches are delivered.
        shuffle: draw a new order every iteration from ``generator``.
        generator: CPU generator for the order (a fresh unseeded one if ``None``).
        drop_last: skip the last partial batch (constant shapes for benchmarks).
        prefetch: batches gathered ahead on the thread (0: gather in the caller's thread).
        layout: ``nchw`` yields ``(B, 3, H, W)`` (a channels-last view of the same memory) and
            ``nhwc`` the raw ``(B, H, W, 3)``.
    """

    def __init__(
        self,
        images: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray,
        *,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        prefetch: int = 2,
        layout: str = "nchw",
    ) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ConfigError(f"the cache must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}.")
        if len(rows) != len(labels):
            raise ConfigError(f"{len(rows)} cache rows but {len(labels)} labels.")
        if layout not in ("nchw", "nhwc"):
            raise ConfigError(f"layout {layout!r} is not valid; use nchw or nhwc.")
        self.images = images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))  # a private, writable copy
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.generator = generator if generator is not None else torch.Generator()
        self.drop_last = drop_last
        self.prefetch = int(prefetch)
        self.layout = layout
        self._pin = self.device.type == "cuda"

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> Tensor:
        n = len(self.rows)
        return torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)

    def _gather(self, idx: np.ndarray) -> tuple[Tensor, Tensor]:
        """Host batch ``(uint8 (B, H, W, 3), int64 (B,))``, pinned when the device is CUDA."""
        rows = self.rows[idx]
        # Reading the memmap in ascending row order is sequential I/O; the inverse permutation
        # restores the sampled order so images and labels stay aligned.
        order = np.argsort(rows, kind="stable")
        _, h, w, c = self.images.shape
        out = torch.empty((len(idx), h, w, c), dtype=torch.uint8, pin_memory=self._pin)
        out.numpy()[order] = self.images[rows[order]]
        labels = self.labels[torch.from_numpy(idx)]
        return out, (labels.pin_memory() if self._pin else labels)

    def _host_batches(self, order: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        idx = order.numpy()
        for k in range(len(self)):
            yield self._gather(idx[k * self.batch_size : (k + 1) * self.batch_size])

    def _prefetched(self, order: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """Host batches gathered on a daemon thread, at most ``prefetch`` ahead."""
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def put(item: object) -> bool:
            """Enqueue unless the consumer has gone (then the thread must end, not block)."""
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for item in self._host_batches(order):
                    if not put(item):
                        return
                put(done)
            except BaseException as exc:  # re-raised in the consuming thread
                put(exc)

        thread = threading.Thread(target=work, name="medattn-cache-loader", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Yields ``(uint8 (B, 3, H, W) or (B, H, W, 3), int64 labels (B,))`` on ``device``."""
        order = self._order()  # drawn here, in the caller's thread: reseeding stays deterministic
        host = self._prefetched(order) if self.prefetch > 0 else self._host_batches(order)
        for images, labels in host:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield (images.permute(0, 3, 1, 2) if self.layout == "nchw" else images), labels


class DeviceLoader:
    """Normalised (and, for training, augmented) float batches from the cache, on the device.

    Iterating yields ``(images float32 (B, 3, H, W), labels int64 (B,))`` on ``device``; the
    engine's ``.to(device)`` calls are then no-ops. ``generator`` drives both the shuffling and
    the augmentation parameters.

    Args:
        batches: the uint8 batch loader.
        augment: the augmentation/normalisation module (on any device; moved with the batch).
    """

    def __init__(self, batches: CacheBatchLoader, augment: BatchAugment) -> None:
        self.batches = batches
        self.augment = augment.to(batches.device)

    @property
    def generator(self) -> torch.Generator:
        """The CPU generator of shuffling and augmentation (reseeded per epoch by the train stage)."""
        return self.batches.generator

    @property
    def dataset(self) -> range:
        """A sized stand-in for ``DataLoader.dataset`` (``len`` is the number of samples)."""
        return range(len(self.batches.rows))

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in self.batches:
            yield self.augment(images, self.generator), labels


# =============================================================================================
# choosing the path
# =============================================================================================
def resolve_pipeline(choice: str, device: torch.device, *, cache_ok: bool, resize: str) -> str:
    """Which input path trains: ``gpu`` (this module) or ``cpu`` (PIL loader).

    Args:
        choice: ``auto``, ``gpu`` or ``cpu`` (``--data-pipeline``).
        device: the training device.
        cache_ok: a prepared cache matches the data set at this image size.
        resize: ``--resize`` (only ``direct_resize`` can use the cache).

    Returns:
        ``auto`` gives ``gpu`` on CUDA when the cache matches, ``cpu`` otherwise; explicit choices
        are returned as they are.

    Raises:
        ConfigError: ``gpu`` was forced but the cache is missing/stale or the resize mode needs files.
    """
    if choice not in PIPELINES:
        raise ConfigError(f"--data-pipeline {choice!r} is not valid; choose one of {', '.join(PIPELINES)}.")
    if choice == "cpu":
        return "cpu"
    usable = cache_ok and resize == "direct_resize"
    if choice == "auto":
        return "gpu" if usable and device.type == "cuda" else "cpu"
    if resize != "direct_resize":
        raise ConfigError(
            f"--data-pipeline gpu reads the uint8 cache, which only --resize direct_resize can use (got {resize}); "
            "use --data-pipeline cpu."
        )
    if not cache_ok:
        raise ConfigError(
            "--data-pipeline gpu needs an up-to-date uint8 cache at this --img-size; run "
            "`medattn data prepare --dataset D --data-dir DIR --img-size S` first, or use --data-pipeline cpu."
        )
    return "gpu"


def build_device_loader(
    index: DataIndex,
    split: str,
    *,
    img_size: int,
    batch_size: int,
    device: torch.device,
    train: bool = False,
    seed: int = 42,
    channels_last: bool = True,
    drop_last: bool = False,
    prefetch: int = 2,
) -> DeviceLoader:
    """The fast-path loader of one split (the counterpart of :func:`medattn.data.build_loader`).

    Args:
        index: the loaded data set (its cache must be prepared at ``img_size``).
        split: ``train``, ``val`` or ``test``.
        img_size: cached image side.
        batch_size: images per batch.
        device: where batches are delivered and augmented.
        train: paper augmentation and shuffling; otherwise the frame's order, no augmentation.
        seed: seed of the generator (shuffling and augmentation).
        channels_last: deliver channels_last images.
        drop_last: drop the last partial batch.
        prefetch: host batches gathered ahead on a background thread.

    Returns:
        A :class:`DeviceLoader` yielding ``(float32 (B, 3, img_size, img_size), int64 (B,))`` on ``device``.

    Raises:
        ConfigError: no prepared cache matches the split.
    """
    frame = index.split(split)
    found = open_cache(index.data_dir, index.dataset, img_size, frame)
    if found is None:
        raise ConfigError(
            f"no up-to-date {img_size} px cache of {index.dataset} in {index.data_dir}; run "
            f"`medattn data prepare --dataset {index.dataset} --data-dir {index.data_dir} --img-size {img_size}`."
        )
    cache, rows = found
    batches = CacheBatchLoader(
        cache.array,
        rows,
        frame["label"].to_numpy(np.int64),
        batch_size=batch_size,
        device=device,
        shuffle=train,
        generator=torch.Generator().manual_seed(seed),
        drop_last=drop_last,
        prefetch=prefetch,
    )
    return DeviceLoader(batches, BatchAugment(train=train, channels_last=channels_last))


def cache_matches(index: DataIndex, img_size: int, splits: tuple[str, ...] = ("train", "val")) -> bool:
    """Whether a prepared cache at ``img_size`` covers every image of ``splits``."""
    return all(open_cache(index.data_dir, index.dataset, img_size, index.split(s)) is not None for s in splits)


def wants_channels_last(device: torch.device, amp: bool, *, vit: bool) -> bool:
    """channels_last pays off for the CNNs under bf16 on CUDA; the ViT and CPU runs keep NCHW.

    Args:
        device: the training device.
        amp: bf16 autocast is on (``--amp``).
        vit: the model is a vision transformer (``medattn.models.is_vit``; the caller decides,
            because the data layer does not import the models).
    """
    return device.type == "cuda" and amp and not vit


@dataclass(frozen=True)
class FastPath:
    """What :func:`fast_loaders` chose for a training run.

    Attributes:
        pipeline: ``gpu`` or ``cpu`` (the resolved ``--data-pipeline``).
        channels_last: the model and its inputs should use ``torch.channels_last`` (the caller
            converts the model).
        cudnn_benchmark: fixed input shapes on CUDA: the caller may enable cuDNN autotuning.
    """

    pipeline: str
    channels_last: bool
    cudnn_benchmark: bool = False


def fast_loaders(
    index: DataIndex, cfg, device: torch.device, *, channels_last: bool, distributed: bool = False
) -> tuple[FastPath, tuple | None]:
    """Resolve ``--data-pipeline`` for the train stage and build the fast loaders when it applies.

    Nothing global changes here: the model is not touched and torch's flags are not set. The
    returned :class:`FastPath` says what the caller should apply (channels_last model, cuDNN
    autotuning) on the fast path.

    Args:
        index: the loaded data set.
        cfg: the run's ``TrainConfig``.
        device: the training device.
        channels_last: the caller's :func:`wants_channels_last` decision for this model; used
            only on the fast path.
        distributed: a DDP run; its loaders are sharded DataLoaders, so ``auto`` keeps the PIL
            path and ``gpu`` is refused.

    Returns:
        ``(FastPath, (train_loader, val_loader))`` on the fast path, ``(FastPath, None)`` when the
        PIL loaders should be used.

    Raises:
        ConfigError: ``--data-pipeline gpu`` cannot be honoured (no cache, resize mode, DDP).
    """
    d = cfg.data
    if distributed:
        if d.data_pipeline == "gpu":
            raise ConfigError("--data-pipeline gpu is not available under torchrun (DDP) yet; use auto or cpu.")
        return FastPath("cpu", False), None
    cache_ok = d.resize == "direct_resize" and cache_matches(index, d.img_size)
    pipeline = resolve_pipeline(d.data_pipeline, device, cache_ok=cache_ok, resize=d.resize)
    if pipeline == "cpu":
        return FastPath("cpu", False), None
    common = dict(
        img_size=d.img_size,
        batch_size=cfg.optim.batch_size,
        device=device,
        seed=cfg.optim.seed,
        channels_last=channels_last,
    )
    return FastPath("gpu", channels_last, cudnn_benchmark=device.type == "cuda"), (
        build_device_loader(index, "train", train=True, **common),
        build_device_loader(index, "val", train=False, **common),
    )

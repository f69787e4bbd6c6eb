"""PyTorch dataset and loader over a :class:`DataIndex` split (files or the prepared cache)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from medattn import lazy
from medattn.data.base import DataIndex
from medattn.data.cache import ImageCache, open_cache
from medattn.data.io import DEFAULT_DECODE, DecodeSettings, decode_image
from medattn.data.transforms import build_transform

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help


class ImageDataset(Dataset):
    """Images and labels of one split.

    Args:
        frame: rows with ``path`` and ``label`` (and ``image_id`` when a cache is given).
        transform: PIL image → float tensor ``(3, H, W)`` (see :func:`build_transform`).
        cache: optional ``(ImageCache, rows)`` from :func:`medattn.data.cache.open_cache`; when
            given, images come from the uint8 cache instead of the files.
        decode_size: the side ``transform`` resizes to: files are decoded at reduced resolution
            with at least that many pixels per side (:func:`medattn.data.io.decode_image`), as the
            cache is; ``None`` decodes them fully.
        settings: decoder settings of the file path.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        cache: tuple[ImageCache, np.ndarray] | None = None,
        decode_size: int | None = None,
        settings: DecodeSettings = DEFAULT_DECODE,
    ) -> None:
        self.paths = frame["path"].astype(str).tolist()
        self.labels = frame["label"].astype(np.int64).tolist()
        self.transform = transform
        self.cache = cache
        self.decode_size = decode_size
        self.settings = settings

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        """The RGB PIL image of row ``i`` (from the cache when there is one)."""
        if self.cache is not None:
            cache, rows = self.cache
            return Image.fromarray(np.asarray(cache.array[rows[i]]))
        return decode_image(self.paths[i], self.decode_size, self.settings)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Returns ``(image (3, H, W) float32, label)``; raises ``DataError`` naming a corrupt file."""
        return self.transform(self.load(i)), self.labels[i]


def build_loader(
    index: DataIndex,
    split: str,
    *,
    img_size: int,
    resize: str = "direct_resize",
    batch_size: int = 32,
    train: bool = False,
    num_workers: int = 0,
    seed: int = 42,
    use_cache: bool = True,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over one split.

    Args:
        index: the loaded data set.
        split: ``train``, ``val``/``validation`` or ``test``.
        img_size: image side after the transform.
        resize: ``direct_resize`` or ``resizeshortest_randomcrop``.
        batch_size: images per batch.
        train: paper augmentation and shuffling (by a ``torch.Generator`` seeded with ``seed``);
            otherwise no augmentation and the frame's order.
        num_workers: DataLoader worker processes.
        seed: seed of the shuffling generator (workers derive their augmentation seeds from it).
        use_cache: read the prepared cache when one matches; ``False`` always decodes the files
            (the throughput benchmark measures that path).
        drop_last: drop the last, smaller batch.
        pin_memory: page-locked batches, for faster copies to a GPU.

    Returns:
        A loader yielding ``(images (B, 3, img_size, img_size) float32, labels (B,) int64)``.
        It reads the prepared uint8 cache when one matches (``direct_resize`` only) and the
        image files otherwise, decoded at reduced resolution (at least ``img_size`` per side)
        with the cache's decoder, so both give the same pixels.
    """
    frame = index.split(split)
    cached = use_cache and resize == "direct_resize"
    cache = open_cache(index.data_dir, index.dataset, img_size, frame) if cached else None
    dataset = ImageDataset(frame, build_transform(img_size, resize, train=train), cache=cache, decode_size=img_size)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
        pin_memory=pin_memory,
    )

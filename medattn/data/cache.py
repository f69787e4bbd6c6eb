"""Decode-and-resize-once cache (``medattn data prepare``).

``prepare_cache`` decodes every image of a data set once, converts it to RGB, resizes it directly
to ``img_size × img_size`` (bilinear, exactly what the ``direct_resize`` transform does) and stores
all of them in one uint8 array ``(N, img_size, img_size, 3)`` saved as ``.npy``, so loaders can
memory-map it instead of decoding JPEG/PNG files every epoch. Layout::

    <data_dir>/.medattn_cache/<dataset>-<img_size>px/images.npy    uint8 (N, H, W, 3)
    <data_dir>/.medattn_cache/<dataset>-<img_size>px/manifest.csv  image_id,path (row i = images[i])

The cache is looked up by image id; it is used only when every requested image is in the
manifest with the same source path, otherwise the loader reads the files (a stale cache is never
used). Only ``direct_resize`` can use it: ``resizeshortest_randomcrop`` needs the full
shortest-side image for its random crop.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from medattn.data.base import load_index
from medattn.data.io import read_image

CACHE_DIRNAME = ".medattn_cache"
log = logging.getLogger(__name__)


def cache_dir(data_dir: Path | str, dataset: str, img_size: int) -> Path:
    """Folder of the cache of ``dataset`` at ``img_size`` under ``data_dir``."""
    return Path(data_dir) / CACHE_DIRNAME / f"{dataset}-{img_size}px"


def resize_for_cache(image: Image.Image, img_size: int) -> np.ndarray:
    """RGB ``image`` resized to ``(img_size, img_size, 3)`` uint8, as ``direct_resize`` does."""
    return np.asarray(image.resize((img_size, img_size), Image.BILINEAR), dtype=np.uint8)


class ImageCache:
    """A prepared cache, memory-mapped lazily (and re-opened in each DataLoader worker).

    Args:
        directory: the cache folder (holding ``images.npy`` and ``manifest.csv``).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        manifest = pd.read_csv(self.directory / "manifest.csv", dtype=str, keep_default_na=False)
        self.ids = manifest["image_id"].tolist()
        self.paths = manifest["path"].tolist()
        self._row = {i: n for n, i in enumerate(self.ids)}
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        # A memmap must not travel to worker processes; each one re-opens the file.
        return {**self.__dict__, "_array": None}

    @property
    def array(self) -> np.ndarray:
        """The uint8 images, shape ``(N, H, W, 3)`` (memory-mapped, read-only)."""
        if self._array is None:
            self._array = np.load(self.directory / "images.npy", mmap_mode="r")
        return self._array

    def rows(self, frame: pd.DataFrame) -> np.ndarray | None:
        """Cache row of each image of ``frame``, or ``None`` if any is missing or its path changed."""
        rows = []
        for image_id, path in zip(frame["image_id"], frame["path"], strict=True):
            n = self._row.get(str(image_id))
            if n is None or self.paths[n] != str(path):
                return None
            rows.append(n)
        return np.asarray(rows, dtype=np.int64)


def open_cache(data_dir: Path | str, dataset: str, img_size: int, frame: pd.DataFrame) -> tuple[ImageCache, np.ndarray] | None:
    """The cache and the rows for ``frame`` if a prepared, up-to-date cache exists, else ``None``."""
    directory = cache_dir(data_dir, dataset, img_size)
    if not (directory / "images.npy").is_file() or not (directory / "manifest.csv").is_file():
        return None
    cache = ImageCache(directory)
    rows = cache.rows(frame)
    if rows is None:
        log.warning("cache %s does not match the data set (ids or paths differ); reading image files instead", directory)
        return None
    return cache, rows


def prepare_cache(dataset: str, data_dir: Path | str, *, img_size: int = 224, **load_index_kwargs) -> Path:
    """Decode and resize every image of a data set once into a uint8 cache.

    Args:
        dataset: data set name (aliases accepted).
        data_dir: the data folder; the cache goes to ``<data_dir>/.medattn_cache/``.
        img_size: side of the cached images (train with the same ``--img-size``).
        **load_index_kwargs: passed to :func:`load_index` (e.g. ``uncertain="zeros"`` to include
            the uncertain MIMIC-CXR images).

    Returns:
        The cache folder.

    Raises:
        DataError: the data set cannot be loaded or an image cannot be decoded.
    """
    index = load_index(dataset, data_dir, **load_index_kwargs)
    frame = index.frame
    directory = cache_dir(index.data_dir, index.dataset, img_size)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "images.npy.partial"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(frame), img_size, img_size, 3))
    for n, path in enumerate(tqdm(frame["path"], desc=f"prepare {index.dataset} {img_size}px", unit="img")):
        arr[n] = resize_for_cache(read_image(path), img_size)
    arr.flush()
    del arr
    # Write the data first and rename last, so an interrupted run never leaves a cache that looks valid.
    frame[["image_id", "path"]].to_csv(directory / "manifest.csv.partial", index=False)
    os.replace(tmp, directory / "images.npy")
    os.replace(directory / "manifest.csv.partial", directory / "manifest.csv")
    return directory

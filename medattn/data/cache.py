"""Decode-and-resize-once cache (``medattn data prepare``): parallel, in order, resumable.

``prepare_cache`` decodes every image of a data set once with the reduced-resolution decoder of
:mod:`medattn.data.io`, resizes it directly to ``img_size × img_size`` (bilinear, exactly what the
``direct_resize`` transform does) and stores all of them in one uint8 array
``(N, img_size, img_size, 3)`` saved as ``.npy``, so loaders memory-map it instead of decoding
JPEG/PNG files every epoch. Layout::

    <data_dir>/.medattn_cache/<dataset>-<img_size>px/images.npy    uint8 (N, H, W, 3)
    <data_dir>/.medattn_cache/<dataset>-<img_size>px/manifest.csv  image_id,path (row i = images[i])
    <data_dir>/.medattn_cache/<dataset>-<img_size>px/cache.json    format, size, decoder settings

**Parallel and bounded.** Images are decoded in chunks by a pool of ``workers`` processes (default:
every CPU this process may use); at most ``2 × workers`` chunks are in flight and the parent
writes each finished chunk into the memory-mapped output in data set order, so memory does not
grow with the data set. A tqdm bar shows the rate and the ETA.

**Resumable.** While it runs, the output is ``images.npy.partial`` and ``progress.json`` records
how many leading rows are written (after they are flushed to disk; once per
:data:`CHECKPOINT_S` seconds at most, and whenever the run stops on an error or Ctrl-C). A prepare that is killed and run again with the same data set,
size and decoder settings continues after those rows; anything else starts over. Decoding is
deterministic, so the finished cache is byte-identical to one made in a single pass (and a
prepare of a finished cache with the same ``cache.json`` does nothing). The files
are renamed into place last and ``cache.json`` is written after them, so an interrupted run never
leaves a cache that looks valid.

**Never used silently when it does not fit.** The cache is looked up by image id; it is used only
when every requested image is in the manifest with the same source path and ``cache.json``
records the decoder settings the loader uses. Otherwise the loader logs one warning per cache
folder and reason, naming the command that rebuilds it, and reads the image files instead (the
fast GPU path refuses with that command). Only ``direct_resize`` can use the cache:
``resizeshortest_randomcrop`` needs the full shortest-side image for its random crop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from medattn import lazy
from medattn.data.base import load_index
from medattn.data.io import DEFAULT_DECODE, FULL_DECODE, DecodeSettings, decode_image
from medattn.errors import ConfigError

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help

CACHE_DIRNAME = ".medattn_cache"
CACHE_FORMAT = 2
IMAGES_NAME = "images.npy"
MANIFEST_NAME = "manifest.csv"
META_NAME = "cache.json"
PROGRESS_NAME = "progress.json"
PARTIAL_SUFFIX = ".partial"
CHECKPOINT_S = 1.0
"""Least seconds between two progress records (each one flushes the written rows to disk)."""

log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()


def cache_dir(data_dir: Path | str, dataset: str, img_size: int) -> Path:
    """Folder of the cache of ``dataset`` at ``img_size`` under ``data_dir``."""
    return Path(data_dir) / CACHE_DIRNAME / f"{dataset}-{img_size}px"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resize_for_cache(image: Image.Image, img_size: int) -> np.ndarray:
    """RGB ``image`` resized to ``(img_size, img_size, 3)`` uint8, as ``direct_resize`` does."""
    return np.asarray(image.resize((img_size, img_size), Image.BILINEAR), dtype=np.uint8)


def decode_resized(path: str | Path, img_size: int, settings: DecodeSettings = DEFAULT_DECODE) -> np.ndarray:
    """One cache row: ``path`` decoded with ``settings``, resized to ``(img_size, img_size, 3)`` uint8."""
    return resize_for_cache(decode_image(path, img_size, settings), img_size)


def compare_to_full(path: str | Path, img_size: int, settings: DecodeSettings = DEFAULT_DECODE) -> tuple[float, float]:
    """Mean and max absolute difference (grey levels) of reduced against full decoding of ``path``.

    Both are followed by the same bilinear resize to ``img_size × img_size``.
    """
    reduced = decode_resized(path, img_size, settings).astype(np.int16)
    full = decode_resized(path, img_size, FULL_DECODE).astype(np.int16)
    diff = np.abs(reduced - full)
    return float(diff.mean()), float(diff.max())


def cache_metadata(frame: pd.DataFrame, img_size: int, settings: DecodeSettings) -> dict:
    """What ``cache.json`` records: format, shape, decoder settings and a digest of ids and paths."""
    digest = hashlib.sha256()
    for image_id, path in zip(frame["image_id"], frame["path"], strict=True):
        digest.update(f"{image_id}\0{path}\n".encode())
    return {
        "format": CACHE_FORMAT,
        "img_size": int(img_size),
        "images": len(frame),
        "decoder": settings.as_dict(),
        "index_sha256": digest.hexdigest(),
    }


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` atomically (a reader sees the old or the new file, never half of one)."""
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _warn_once(directory: Path, reason: str, message: str) -> None:
    key = (str(directory), reason)
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


class ImageCache:
    """A prepared cache, memory-mapped lazily (and re-opened in each DataLoader worker).

    Args:
        directory: the cache folder (holding ``images.npy``, ``manifest.csv`` and ``cache.json``).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        manifest = pd.read_csv(self.directory / MANIFEST_NAME, dtype=str, keep_default_na=False)
        self.ids = manifest["image_id"].tolist()
        self.paths = manifest["path"].tolist()
        self.meta = _read_json(self.directory / META_NAME) or {}
        self._row = {i: n for n, i in enumerate(self.ids)}
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        # A memmap must not travel to worker processes; each one re-opens the file.
        return {**self.__dict__, "_array": None}

    @property
    def array(self) -> np.ndarray:
        """The uint8 images, shape ``(N, H, W, 3)`` (memory-mapped, read-only)."""
        if self._array is None:
            self._array = np.load(self.directory / IMAGES_NAME, mmap_mode="r")
        return self._array

    @property
    def decoder(self) -> dict | None:
        """The decoder settings the cache was made with (``None`` for a cache older than them)."""
        return self.meta.get("decoder") if self.meta.get("format") == CACHE_FORMAT else None

    def rows(self, frame: pd.DataFrame) -> np.ndarray | None:
        """Cache row of each image of ``frame``, or ``None`` if any is missing or its path changed."""
        rows = []
        for image_id, path in zip(frame["image_id"], frame["path"], strict=True):
            n = self._row.get(str(image_id))
            if n is None or self.paths[n] != str(path):
                return None
            rows.append(n)
        return np.asarray(rows, dtype=np.int64)


def open_cache(
    data_dir: Path | str, dataset: str, img_size: int, frame: pd.DataFrame, settings: DecodeSettings = DEFAULT_DECODE
) -> tuple[ImageCache, np.ndarray] | None:
    """The cache and the rows for ``frame`` if a prepared, up-to-date cache exists, else ``None``.

    A cache made with other decoder settings (or by a medattn that did not record them) or whose
    ids or paths differ is not used: one warning per folder and reason says so and how to rebuild it.
    """
    directory = cache_dir(data_dir, dataset, img_size)
    if not (directory / IMAGES_NAME).is_file() or not (directory / MANIFEST_NAME).is_file():
        return None
    cache = ImageCache(directory)
    rebuild = f"`medattn data prepare --dataset {dataset} --data-dir {data_dir} --img-size {img_size}`"
    if cache.decoder != settings.as_dict():
        _warn_once(
            directory,
            "decoder",
            (
                f"cache {directory} was made with decoder settings {cache.decoder} but this medattn decodes with "
                f"{settings.as_dict()}; reading the image files instead (rebuild the cache with {rebuild})"
            ),
        )
        return None
    rows = cache.rows(frame)
    if rows is None:
        _warn_once(
            directory,
            "stale",
            (
                f"cache {directory} does not match the data set (ids or paths differ); reading the image files "
                f"instead (rebuild the cache with {rebuild})"
            ),
        )
        return None
    return cache, rows


def decode_chunk(paths: Sequence[str], img_size: int, settings: DecodeSettings) -> np.ndarray:
    """Cache rows of ``paths``: uint8 ``(len(paths), img_size, img_size, 3)`` (runs in a worker process)."""
    out = np.empty((len(paths), img_size, img_size, 3), dtype=np.uint8)
    for k, path in enumerate(paths):
        out[k] = decode_resized(path, img_size, settings)
    return out


def decode_in_order(
    paths: Sequence[str],
    img_size: int,
    settings: DecodeSettings = DEFAULT_DECODE,
    *,
    workers: int = 1,
    chunk_size: int = 4,
) -> Iterator[np.ndarray]:
    """Yield the cache rows of ``paths`` chunk by chunk, in order, decoded on ``workers`` processes.

    At most ``2 × workers`` chunks are decoded ahead of the consumer, so memory stays bounded.
    ``workers=1`` decodes in this process. Workers are forked (as torch's DataLoader workers are on
    Linux), so they start in milliseconds without re-importing medattn.

    Raises:
        ImageReadError: an image cannot be decoded (the pool is stopped first).
    """
    # Small sets get smaller chunks, so every worker has several to do.
    chunk_size = max(1, min(chunk_size, len(paths) // (4 * workers)))
    chunks = (list(paths[i : i + chunk_size]) for i in range(0, len(paths), chunk_size))
    if workers == 1:
        for chunk in chunks:
            yield decode_chunk(chunk, img_size, settings)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    # Ctrl-C reaches the whole process group: the parent stops the pool and records its progress,
    # the workers ignore it instead of each printing a traceback.
    with context.Pool(workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        pending = deque(pool.apply_async(decode_chunk, (c, img_size, settings)) for c in islice(chunks, 2 * workers))
        while pending:
            block = pending.popleft().get()
            for chunk in islice(chunks, 1):
                pending.append(pool.apply_async(decode_chunk, (chunk, img_size, settings)))
            yield block


def _resume_point(directory: Path, meta: dict) -> int:
    """Rows already written by an interrupted prepare of the same cache (0 when there is none)."""
    progress = _read_json(directory / PROGRESS_NAME)
    partial = directory / (IMAGES_NAME + PARTIAL_SUFFIX)
    if progress is None or not partial.is_file() or {k: progress.get(k) for k in meta} != meta:
        return 0
    try:
        arr = np.load(partial, mmap_mode="r")
    except (OSError, ValueError):
        return 0
    if arr.shape != (meta["images"], meta["img_size"], meta["img_size"], 3) or arr.dtype != np.uint8:
        return 0
    return min(int(progress.get("done", 0)), meta["images"])


def _write_rows(
    directory: Path,
    paths: Sequence[str],
    meta: dict,
    settings: DecodeSettings,
    workers: int,
    chunk_size: int,
    desc: str,
    progress: bool,
) -> None:
    """Fill ``images.npy.partial`` from the resume point on, recording progress as it goes."""
    n, size = meta["images"], meta["img_size"]
    start = _resume_point(directory, meta)
    partial = directory / (IMAGES_NAME + PARTIAL_SUFFIX)
    if start:
        log.info("resuming the prepare of %s after %d of %d images", directory, start, n)
        arr = np.load(partial, mmap_mode="r+")
    else:
        arr = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    done, last = start, time.monotonic()
    workers = max(1, min(workers, n - start))
    try:
        with tqdm(total=n, initial=start, desc=desc, unit="img", disable=not progress, smoothing=0.1) as bar:
            for block in decode_in_order(paths[start:], size, settings, workers=workers, chunk_size=chunk_size):
                arr[done : done + len(block)] = block
                done += len(block)
                bar.update(len(block))
                if time.monotonic() - last >= CHECKPOINT_S:
                    _record(arr, directory, meta, done)
                    last = time.monotonic()
    finally:
        # Also on an undecodable image or Ctrl-C: the next run continues after the rows written.
        _record(arr, directory, meta, done)
        del arr


def _record(arr: np.ndarray, directory: Path, meta: dict, done: int) -> None:
    """Flush the written rows to disk, then record in ``progress.json`` that the first ``done`` are complete."""
    arr.flush()
    _write_json(directory / PROGRESS_NAME, {**meta, "done": done})


def _publish(directory: Path, frame: pd.DataFrame, meta: dict) -> None:
    """Rename the finished files into place; ``cache.json`` last, so a half-renamed cache is never used."""
    (directory / META_NAME).unlink(missing_ok=True)
    manifest = directory / (MANIFEST_NAME + PARTIAL_SUFFIX)
    frame[["image_id", "path"]].to_csv(manifest, index=False)
    os.replace(directory / (IMAGES_NAME + PARTIAL_SUFFIX), directory / IMAGES_NAME)
    os.replace(manifest, directory / MANIFEST_NAME)
    _write_json(directory / META_NAME, meta)
    (directory / PROGRESS_NAME).unlink(missing_ok=True)


def prepare_cache(
    dataset: str,
    data_dir: Path | str,
    *,
    img_size: int = 224,
    workers: int | None = None,
    settings: DecodeSettings = DEFAULT_DECODE,
    chunk_size: int = 4,
    progress: bool = True,
    **load_index_kwargs,
) -> Path:
    """Decode and resize every image of a data set once into a uint8 cache (parallel, resumable).

    Args:
        dataset: data set name (aliases accepted).
        data_dir: the data folder; the cache goes to ``<data_dir>/.medattn_cache/``.
        img_size: side of the cached images (train with the same ``--img-size``).
        workers: decoding processes; ``None`` uses every CPU this process may run on.
        settings: decoder settings (loaders use only caches made with :data:`DEFAULT_DECODE`).
        chunk_size: images per task handed to a worker.
        progress: show a tqdm progress bar (rate and ETA) on stderr.
        **load_index_kwargs: passed to :func:`load_index` (e.g. ``uncertain="zeros"`` to include
            the uncertain MIMIC-CXR images); ``duplicates`` is ``ignore`` unless given, so the
            cache holds every image and no fingerprints are computed.

    Returns:
        The cache folder.

    Raises:
        ConfigError: ``workers`` or ``chunk_size`` below 1.
        DataError: the data set cannot be loaded or an image cannot be decoded (the rows written
            so far are kept; run it again after fixing the file to continue).
    """
    workers = available_cpus() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers must be 1 or more (got {workers}); leave it out to use every CPU.")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be 1 or more (got {chunk_size}).")
    # Every image goes into the cache, whatever a run's duplicates policy: no fingerprinting here.
    index = load_index(dataset, data_dir, **{"duplicates": "ignore", **load_index_kwargs})
    frame = index.frame
    directory = cache_dir(index.data_dir, index.dataset, img_size)
    directory.mkdir(parents=True, exist_ok=True)
    meta = cache_metadata(frame, img_size, settings)
    if _read_json(directory / META_NAME) == meta and (directory / IMAGES_NAME).is_file():
        log.info("cache %s is already prepared for these images and decoder settings", directory)
        return directory
    desc = f"prepare {index.dataset} {img_size}px"
    _write_rows(directory, frame["path"].tolist(), meta, settings, workers, chunk_size, desc, progress)
    _publish(directory, frame, meta)
    return directory

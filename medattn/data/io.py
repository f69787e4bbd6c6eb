"""The one image decoder of the cache and the file path: reduced-resolution decoding, then RGB.

A 4000×6000 dermoscopy JPEG resized to 224 px does not need its 24 million pixels decoded.
:func:`decode_image` is told the side the caller resizes to next (``target``) and decodes only
what that needs:

* **JPEG**: DCT-domain downscaling (Pillow's ``draft``, libjpeg's ``scale_denom``) to the smallest
  of the scales 1/1, 1/2, 1/4, 1/8 whose result is still ≥ ``target`` on both sides (never below).
* **PNG** and every other format: decoded fully (PNG has no reduced decoding), then box-reduced
  with ``Image.reduce`` by the largest integer factor that keeps both sides ≥
  ``png_reduce_gap × target`` (3 ×: the bilinear resize that follows still shrinks by 3 × or
  more, which Pillow documents as indistinguishable from a direct resize in most cases).

The resize itself stays where it was (``resize_for_cache`` in the cache, the ``direct_resize`` /
``resizeshortest_randomcrop`` transforms on the file path), so a cached image and the same image
read from its file are the same pixels. Both reductions keep each side ≥ ``target``, so the
shortest-side resize of ``resizeshortest_randomcrop`` never upsamples either.

Effect against full decoding, both followed by the same bilinear resize to 224 × 224, in grey
levels (0-255) over every pixel and channel: the mean over the images of their mean absolute
difference, and the largest difference of any pixel. Measured by
:func:`medattn.data.prepare_bench.measure_prepare` (``python -m medattn.data.prepare_bench``) on
its synthetic photographs (smooth structure, a lesion-like blob, 1-6 px wide lines, sensor noise):

=======================  ======================  ======  ===========  ==========
layout (width × height)  reduction               images  mean |diff|  max |diff|
=======================  ======================  ======  ===========  ==========
6000×4000 RGB JPEG       DCT 1/8 (750×500)       16      0.24         8
2500×3000 grey JPEG      DCT 1/8 (313×375)       32      0.65         41
3000×2000 RGB PNG        reduce 2 (1500×1000)    12      0.17         3
=======================  ======================  ======  ===========  ==========

The largest differences sit on the thin bright lines of the greyscale images (wires, hairs): a
1/8 DCT decode averages 8 × 8 blocks exactly, a full decode + bilinear resize weighs them with a
triangle; the means are below one grey level everywhere. (The issue's own measurement of a
4000×6000 JPEG: mean 0.7.)

:data:`DOCUMENTED_DIFFERENCE` holds bounds above these that the tests enforce. The settings are
recorded in every cache (:meth:`DecodeSettings.as_dict`) and a cache made with other settings is
never used silently (:func:`medattn.data.cache.open_cache`).

**Pixel budget.** Every image medattn decodes (a data set's file in ``data check``, in a prepare
worker, in a data-loader worker, the duplicate finder's thumbnails, a mask, and the bytes posted to
the served model) is opened by :func:`open_image`, which refuses one whose header declares more
than :data:`PIXEL_BUDGET` pixels before a single pixel is decoded: a PNG of a few hundred KB can
declare 13000 × 13000 pixels and take gigabytes once decoded (a decompression bomb). Pillow's own
``DecompressionBombWarning`` is turned into an error there as well. The largest real images of
the three data sets are about 24 Mpx (6000 × 4000 dermoscopy), so 50 Mpx leaves room for any
genuine photograph or radiograph.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from medattn.data.transforms import to_rgb
from medattn.errors import DataError

# What PIL raises on unreadable, corrupt or truncated files (truncated PNG chunks raise SyntaxError).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

PIXEL_BUDGET = 50_000_000
"""Most pixels (width × height) medattn decodes from one image: larger ones are refused unread."""

# Modes whose channels ``Image.reduce`` may average before the RGB conversion with the same result
# as after it (a palette image is converted first: averaging palette indices is meaningless).
_REDUCE_FIRST_MODES = frozenset({"L", "RGB", "RGBA"})


class ImageReadError(DataError):
    """An image that cannot be decoded.

    torch's DataLoader re-raises a worker's exception as ``type(exc)(message)`` with the worker's
    traceback in the message; this class recovers the original one-sentence message from it so
    the CLI still prints a single ``Error:`` line.
    """

    def __init__(self, message: str) -> None:
        text = str(message)
        if text.startswith("Caught ") and "Traceback" in text:
            marker = f"{type(self).__name__}: "
            last = [line for line in text.splitlines() if marker in line]
            text = last[-1].split(marker, 1)[1] if last else text
        super().__init__(text)


class ImageTooLargeError(ImageReadError):
    """An image whose declared size is above :data:`PIXEL_BUDGET` (refused before decoding)."""


def _describe(source: str | Path | BinaryIO) -> str:
    return f"image {source}" if isinstance(source, (str, Path)) else "the image bytes"


def open_image(source: str | Path | BinaryIO) -> Image.Image:
    """Open an image (header only, nothing decoded yet), refusing it when it exceeds :data:`PIXEL_BUDGET`.

    Args:
        source: a file path or a binary file object.

    Returns:
        The opened (lazy) PIL image; the caller closes it.

    Raises:
        ImageTooLargeError: the header declares more pixels than the budget.
        ImageReadError: the file is missing or not an image.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            im = Image.open(source)
    except Image.DecompressionBombError:
        raise ImageTooLargeError(
            f"{_describe(source)} declares more pixels than Pillow's decompression-bomb limit, far above "
            f"medattn's pixel budget of {PIXEL_BUDGET / 1e6:.0f} Mpx; it is refused unread: replace the file or "
            "remove its row."
        ) from None
    except DECODE_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageReadError(
            f"cannot decode {_describe(source)} ({reason}); replace the file or remove its row from the labels."
        ) from None
    width, height = im.size
    bomb_warning = any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)
    if width * height > PIXEL_BUDGET or bomb_warning:  # Pillow's warning is an error here too
        im.close()
        raise ImageTooLargeError(
            f"{_describe(source)} declares {width}×{height} pixels ({width * height / 1e6:.0f} Mpx), above "
            f"medattn's pixel budget of {PIXEL_BUDGET / 1e6:.0f} Mpx (a decompression bomb, or a scan to "
            "downsample first); it is refused unread: replace the file or remove its row."
        )
    for warning in caught:  # anything else Pillow warned about is passed on as it was
        if not issubclass(warning.category, Image.DecompressionBombWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return im


@dataclass(frozen=True)
class DecodeSettings:
    """How images are decoded before the resize (recorded in every cache's ``cache.json``).

    Attributes:
        jpeg_draft: decode JPEGs with DCT-domain downscaling to the smallest scale (1/2, 1/4, 1/8)
            that keeps both sides ≥ the target; ``False`` decodes them fully.
        png_reduce_gap: box-reduce other formats by the largest integer factor that keeps both
            sides ≥ ``png_reduce_gap × target``; ``None`` keeps them at full resolution.
        version: bumped whenever the decoding code changes its pixels, so older caches are refused.
    """

    jpeg_draft: bool = True
    png_reduce_gap: float | None = 3.0
    version: int = 1

    def as_dict(self) -> dict:
        """The settings as a JSON-ready dict (what a cache records)."""
        return asdict(self)


DEFAULT_DECODE = DecodeSettings()
FULL_DECODE = DecodeSettings(jpeg_draft=False, png_reduce_gap=None)

# Upper bounds (grey levels: mean, max absolute difference) of the measurements in the module
# docstring; tests/data/test_data_decode.py holds the decoder to them on freshly written images.
DOCUMENTED_DIFFERENCE: dict[str, tuple[float, float]] = {
    "jpeg_rgb": (0.5, 16.0),
    "jpeg_grey": (1.0, 48.0),
    "png": (0.25, 6.0),
}


def reduce_factor(size: tuple[int, int], target: int, gap: float) -> int:
    """Largest integer ``k`` such that both sides of ``size`` divided by ``k`` stay ≥ ``gap × target`` (at least 1)."""
    return max(1, int(min(size) // (gap * target)))


def _reduced(im: Image.Image, target: int, settings: DecodeSettings) -> Image.Image:
    """Load ``im`` (an opened, not yet loaded file) at the reduced resolution ``settings`` allow."""
    if settings.jpeg_draft and im.format == "JPEG":
        im.draft(im.mode, (target, target))
    im.load()
    if settings.png_reduce_gap is None or im.format == "JPEG":
        return im
    factor = reduce_factor(im.size, target, settings.png_reduce_gap)
    if factor == 1:
        return im
    return (im if im.mode in _REDUCE_FIRST_MODES else to_rgb(im)).reduce(factor)


def decode_image(
    path: str | Path | BinaryIO, target: int | None = None, settings: DecodeSettings = DEFAULT_DECODE
) -> Image.Image:
    """Decode ``path`` to 8-bit RGB with at least ``target`` pixels per side (where the file has them).

    Args:
        path: a JPEG, PNG or any other format Pillow reads.
        target: the side the caller resizes to next; ``None`` decodes at full resolution.
        settings: the reductions allowed.

    Returns:
        An RGB PIL image whose sides are each ≥ ``min(target, original side)``.

    Raises:
        ImageTooLargeError: the image declares more than :data:`PIXEL_BUDGET` pixels (nothing decoded).
        ImageReadError: the file is missing, corrupt or truncated.
    """
    try:
        with open_image(path) as im:
            if target is None:
                im.load()
                return to_rgb(im)
            return to_rgb(_reduced(im, target, settings))
    except DECODE_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageReadError(
            f"cannot decode {_describe(path)} ({reason}); replace the file or remove its row from the labels."
        ) from None


def read_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully and convert it to RGB (:func:`decode_image` without a target).

    Raises:
        ImageReadError: the file is missing, corrupt or truncated.
    """
    return decode_image(path)

"""Reading one image file into RGB, with a :class:`DataError` that names the file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from medattn.data.transforms import to_rgb
from medattn.errors import DataError

# What PIL raises on unreadable, corrupt or truncated files (truncated PNG chunks raise SyntaxError).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


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


def read_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully and convert it to RGB.

    Raises:
        ImageReadError: the file is missing, corrupt or truncated.
    """
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except DECODE_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageReadError(
            f"cannot decode image {path} ({reason}); replace the file or remove its row from the labels."
        ) from None

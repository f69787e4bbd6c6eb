"""Where and how reproducibly a stage runs: the device, the seeds, torch's global flags.

Nothing here runs at import (importing medattn must not change torch's global state); stages call
these at run time.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from medattn.errors import ConfigError


def resolve_device(device: str = "auto", gpu_id: int | None = None) -> torch.device:
    """``auto`` → ``cuda`` if available else ``cpu``; ``--gpu-id N`` → ``cuda:N``.

    Raises:
        ConfigError: a CUDA device was asked for on a machine without one, or the name is invalid.
    """
    if gpu_id is not None:
        device = f"cuda:{gpu_id}"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device name; use auto, cpu or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} was asked for but this machine has no CUDA GPU; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"GPU {dev.index} does not exist (this machine has {torch.cuda.device_count()}); pick a smaller --gpu-id."
            )
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (called by the stages at run time, never at import)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def torch_flags() -> Iterator[None]:
    """Restore torch's global backend flags (cuDNN autotuning, TF32) on exit.

    A stage that turns them on for speed (training's GPU pipeline, ``bench``) runs inside this,
    so that the caller's process is left as it was.
    """
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = (
            saved[:3]
        )
        torch.set_float32_matmul_precision(saved[3])

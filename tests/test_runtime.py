"""medattn.runtime: the device a stage runs on, its seeds, and torch's global flags left as found."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from medattn.errors import ConfigError
from medattn.runtime import resolve_device, seed_everything, torch_flags


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="is not a device name; use auto, cpu or cuda:N"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_sentence():
    with pytest.raises(
        ConfigError, match=r"^--device cuda was asked for but this machine has no CUDA GPU; use --device cpu\.$"
    ):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="cuda:1"):
        resolve_device("auto", gpu_id=1)


def test_seed_everything_fixes_every_generator():
    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    seed_everything(8)
    assert torch.rand(1).item() != first[2]


def test_torch_flags_are_restored_even_after_an_error():
    before = (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    with pytest.raises(RuntimeError), torch_flags():
        torch.backends.cudnn.benchmark = not before[0]
        torch.backends.cuda.matmul.allow_tf32 = not before[1]
        torch.backends.cudnn.allow_tf32 = not before[2]
        torch.set_float32_matmul_precision("medium" if before[3] != "medium" else "high")
        raise RuntimeError("stage failed")
    after = (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    assert after == before

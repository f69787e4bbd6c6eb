"""The fast path's choices: ``fast_loaders`` reports channels_last and cuDNN autotuning
instead of applying them, and the channels_last decision takes the model kind from the caller."""

from __future__ import annotations

import pytest
import torch

from medattn.config import build_train_config
from medattn.data import load_index, prepare_cache, write_synthetic
from medattn.data.gpu import fast_loaders, wants_channels_last


@pytest.mark.parametrize(
    ("device", "amp", "vit", "expected"),
    [
        ("cuda", True, False, True),
        ("cuda", True, True, False),
        ("cuda", False, False, False),
        ("cpu", True, False, False),
    ],
)
def test_wants_channels_last(device: str, amp: bool, vit: bool, expected: bool) -> None:
    assert wants_channels_last(torch.device(device), amp, vit=vit) is expected


def test_fast_loaders_reports_and_changes_no_global_state(tmp_path) -> None:
    root = write_synthetic(tmp_path / "demo", n=24, img_size=40, seed=3)
    prepare_cache("demo", root, img_size=32, workers=1, progress=False)
    index = load_index("demo", root)
    cfg = build_train_config({"data_dir": str(root), "img_size": 32, "batch_size": 4, "data_pipeline": "gpu"})
    before = torch.backends.cudnn.benchmark
    for channels_last in (True, False):
        fast, (train, val) = fast_loaders(index, cfg, torch.device("cpu"), channels_last=channels_last)
        assert (fast.pipeline, fast.channels_last, fast.cudnn_benchmark) == ("gpu", channels_last, False)
        images, _ = next(iter(train))
        assert images.shape == (4, 3, 32, 32)
        assert images.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert torch.backends.cudnn.benchmark == before
    plain = build_train_config({"data_dir": str(root), "img_size": 32, "data_pipeline": "cpu"})
    fast, pair = fast_loaders(index, plain, torch.device("cpu"), channels_last=True)
    assert (fast.pipeline, fast.channels_last, pair) == ("cpu", False, None)

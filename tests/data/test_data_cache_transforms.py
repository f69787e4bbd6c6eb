"""Transforms, the loader, and the uint8 cache (tensors equal those read from the files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medattn.cli import app
from medattn.data import IMAGENET_STD, ImageDataset, build_loader, build_transform, load_index, prepare_cache
from medattn.errors import ConfigError


@pytest.mark.parametrize("mode", ["L", "RGBA", "RGB", "I;16"])
@pytest.mark.parametrize("resize", ["direct_resize", "resizeshortest_randomcrop"])
@pytest.mark.parametrize("train", [False, True])
def test_transform_gives_three_channels(mode: str, resize: str, train: bool) -> None:
    image = Image.new(mode, (50, 37))
    out = build_transform(32, resize, train=train)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


def test_transform_normalises_and_keeps_gray_gray() -> None:
    gray = Image.fromarray(np.full((20, 30), 128, dtype=np.uint8))
    out = build_transform(16)(gray)
    raw = out * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor((0.485, 0.456, 0.406))[:, None, None]
    assert torch.allclose(raw, torch.full_like(raw, 128 / 255), atol=1e-5)


def test_unknown_resize_mode() -> None:
    with pytest.raises(ConfigError, match="did you mean 'direct_resize'"):
        build_transform(32, "direct_resiz")


def test_loader_batches_and_order(demo_dir: Path) -> None:
    index = load_index("demo", demo_dir)
    loader = build_loader(index, "test", img_size=32, batch_size=5)
    labels = torch.cat([y for _, y in loader])
    assert labels.tolist() == index.split("test")["label"].tolist()
    x, y = next(iter(build_loader(index, "train", img_size=32, batch_size=8, train=True, seed=1)))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64

    # shuffling is a function of the seed
    def order(seed: int) -> torch.Tensor:
        return torch.cat(
            [y for _, y in build_loader(index, "train", img_size=32, batch_size=64, train=True, seed=seed)]
        )

    assert torch.equal(order(7), order(7))


def test_cache_equals_files_and_stale_cache_is_ignored(demo_dir: Path) -> None:
    index = load_index("demo", demo_dir)
    from_files = torch.cat([x for x, _ in build_loader(index, "val", img_size=32, batch_size=64)])
    result = CliRunner().invoke(
        app, ["data", "prepare", "--dataset", "demo", "--data-dir", str(demo_dir), "--img-size", "32"]
    )
    assert result.exit_code == 0, result.output
    cache_dir = demo_dir / ".medattn_cache" / "demo-32px"
    assert str(cache_dir) in result.stdout
    array = np.load(cache_dir / "images.npy", mmap_mode="r")
    assert array.shape == (len(index.frame), 32, 32, 3) and array.dtype == np.uint8

    loader = build_loader(index, "val", img_size=32, batch_size=64)
    assert loader.dataset.cache is not None
    from_cache = torch.cat([x for x, _ in loader])
    step = 1 / 255 / min(IMAGENET_STD)
    assert torch.allclose(from_cache, from_files, atol=2 * step)

    # another size has no cache; a manifest whose ids differ is stale and never used
    assert build_loader(index, "val", img_size=40).dataset.cache is None
    manifest = pd.read_csv(cache_dir / "manifest.csv")
    manifest.loc[:, "image_id"] = manifest["image_id"] + "_old"
    manifest.to_csv(cache_dir / "manifest.csv", index=False)
    assert build_loader(index, "val", img_size=32).dataset.cache is None


def test_cache_with_low_data_subset(demo_dir: Path) -> None:
    prepare_cache("demo", demo_dir, img_size=24)
    low = load_index("demo", demo_dir, low_data_regimen=True, perc_train=0.5)
    loader = build_loader(low, "train", img_size=24, batch_size=4)
    assert loader.dataset.cache is not None and len(loader.dataset) == len(low.split("train"))


def test_image_dataset_item(demo_dir: Path) -> None:
    frame = load_index("demo", demo_dir).split("train")
    ds = ImageDataset(frame, build_transform(28))
    x, y = ds[0]
    assert x.shape == (3, 28, 28) and y == int(frame["label"][0])

"""The fast input path (medattn.data.gpu): cache batches, batched augmentation, train integration."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from medattn.data import build_loader, load_index, prepare_cache, write_synthetic
from medattn.data.gpu import (
    AffineParams,
    BatchAugment,
    CacheBatchLoader,
    affine_theta,
    build_device_loader,
    resolve_pipeline,
    sample_params,
)
from medattn.data.loader import ImageDataset
from medattn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from medattn.errors import ConfigError

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _smooth(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """uint8 (B, 3, H, W) smooth random images (few nearest-neighbour ties)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand((b, 3, 5, 6), generator=g)
    return (
        (torch.nn.functional.interpolate(small, (h, w), mode="bicubic", align_corners=False).clamp(0, 1) * 255)
        .round()
        .to(torch.uint8)
    )


def test_params_follow_the_documented_distribution():
    g = torch.Generator().manual_seed(0)
    p = sample_params(20000, 224, 224, g)
    assert p.angle.abs().max() <= 10.0 and p.angle.min() < -9.9 and p.angle.max() > 9.9
    assert p.tx.abs().max() <= round(0.05 * 224) and p.ty.abs().max() <= round(0.1 * 224)
    assert torch.equal(p.tx, p.tx.round()) and torch.equal(p.ty, p.ty.round())  # whole pixels, as torchvision
    assert p.scale.min() >= 0.95 and p.scale.max() <= 1.05
    assert abs(p.flip.float().mean().item() - 0.5) < 0.015
    assert abs(p.angle.mean().item()) < 0.2 and abs(p.tx.float().mean().item()) < 0.2


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_apply_matches_torchvision_affine_then_flip(mode):
    """The batched grid equals torchvision's own affine + hflip for each sample's parameters."""
    x = _smooth(6, 40, 56)
    g = torch.Generator().manual_seed(3)
    aug = BatchAugment(train=True, mode=mode, channels_last=False)
    p = aug.sample(6, 40, 56, g)
    out = aug.apply(x, p)
    interp = TF.InterpolationMode.NEAREST if mode == "nearest" else TF.InterpolationMode.BILINEAR
    for i in range(6):
        ref = TF.affine(
            x[i].float(),
            angle=float(p.angle[i]),
            translate=[int(p.tx[i]), int(p.ty[i])],
            scale=float(p.scale[i]),
            shear=[0.0, 0.0],
            interpolation=interp,
            fill=None,
        )
        if p.flip[i]:
            ref = TF.horizontal_flip(ref)
        ref = (ref[None] / 255.0 - MEAN) / STD
        close = (out[i : i + 1] - ref).abs() < 0.05
        assert close.float().mean() > 0.99, (i, close.float().mean())


def _bar_angle(img: torch.Tensor) -> float:
    """Angle (degrees, counter-clockwise) of the principal axis of the bright pixels of (H, W)."""
    ys, xs = torch.nonzero(img > 0.5, as_tuple=True)
    xs, ys = xs.double() - xs.double().mean(), ys.double() - ys.double().mean()
    cov = torch.stack(
        [torch.stack([(xs * xs).mean(), (xs * ys).mean()]), torch.stack([(xs * ys).mean(), (ys * ys).mean()])]
    )
    evals, evecs = torch.linalg.eigh(cov)
    vx, vy = evecs[:, -1]
    ang = math.degrees(math.atan2(-float(vy), float(vx)))  # image y points down
    return (ang + 90) % 180 - 90


def test_measured_rotation_translation_scale_are_bounded():
    """Measured on synthetic images: a horizontal bar stays within ±10° (+ pixel error), its centre
    moves at most the translation bound and its length scales within [0.95, 1.05] (+ pixel error)."""
    h = w = 96
    img = torch.zeros((64, 3, h, w), dtype=torch.uint8)
    img[:, :, 46:50, 18:78] = 255
    out = BatchAugment(train=True, mode="bilinear", channels_last=False)(img, torch.Generator().manual_seed(1))
    bright = (out * STD + MEAN)[:, 0]
    angles = []
    for i in range(64):
        a = _bar_angle(bright[i])
        angles.append(a)
        ys, xs = torch.nonzero(bright[i] > 0.5, as_tuple=True)
        assert abs(xs.float().mean() - 47.5) <= 0.05 * w + 2 and abs(ys.float().mean() - 47.5) <= 0.1 * h + 6
        length = (xs.max() - xs.min()).item() / math.cos(math.radians(a))
        assert 60 * 0.95 - 4 <= length <= 60 * 1.05 + 4
    angles = torch.tensor(angles)
    assert angles.abs().max() <= 11.0 and angles.abs().max() > 5.0


def test_flip_rate_measured_on_images():
    img = torch.zeros((2000, 3, 8, 8), dtype=torch.uint8)
    img[:, :, :, :2] = 255  # bright left edge; stays left unless flipped
    aug = BatchAugment(train=True, channels_last=False, degrees=0, translate=(0, 0), scale=(1, 1))
    out = aug(img, torch.Generator().manual_seed(0))
    flipped = out[:, 0, 4, -1] > out[:, 0, 4, 0]
    assert abs(flipped.float().mean().item() - 0.5) < 0.04


def test_deterministic_for_a_seed_and_channels_last():
    x = _smooth(4, 32, 32)
    aug = BatchAugment(train=True)
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == (4, 3, 32, 32)
    assert a.is_contiguous(memory_format=torch.channels_last)
    # (B, H, W, 3) input gives the same result
    assert torch.equal(aug(x.permute(0, 2, 3, 1).contiguous(), torch.Generator().manual_seed(7)), a)


def test_eval_is_plain_normalisation():
    x = _smooth(2, 16, 16)
    out = BatchAugment(train=False, channels_last=False)(x)
    torch.testing.assert_close(out, (x.float() / 255 - MEAN) / STD, atol=1e-5, rtol=1e-5)


def test_identity_params_give_identity():
    x = _smooth(3, 20, 30)
    z = torch.zeros(3, dtype=torch.float64)
    p = AffineParams(angle=z, tx=z, ty=z, scale=z + 1, flip=torch.zeros(3, dtype=torch.bool))
    assert torch.allclose(affine_theta(p, 20, 30), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))
    out = BatchAugment(train=True, channels_last=False).apply(x, p)
    torch.testing.assert_close(out, (x.float() / 255 - MEAN) / STD, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_labels_stay_aligned_through_loader_and_augmentation(prefetch):
    """Each image's value encodes its label; after shuffling and augmentation the centre pixel still
    decodes to the label delivered with it."""
    n = 50
    values = (np.arange(n) * 5).astype(np.uint8)
    images = np.broadcast_to(values[:, None, None, None], (n, 24, 24, 3)).copy()
    rows = np.random.default_rng(0).permutation(n)  # samples point at shuffled cache rows
    labels = values[rows].astype(np.int64)
    loader = CacheBatchLoader(
        images, rows, labels, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0), prefetch=prefetch
    )
    aug = BatchAugment(train=True)
    seen = []
    for x, y in loader:
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 24, 24)
        out = aug(x, loader.generator)
        centre = (out[:, 0, 12, 12] * STD[0, 0, 0, 0] + MEAN[0, 0, 0, 0]) * 255
        assert torch.equal(centre.round().long(), y)
        seen += y.tolist()
    assert sorted(seen) == sorted(labels.tolist()) and len(loader) == 7


def test_pipeline_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_pipeline("auto", cpu, cache_ok=True, resize="direct_resize") == "cpu"
    assert resolve_pipeline("auto", cuda, cache_ok=True, resize="direct_resize") == "gpu"
    assert resolve_pipeline("auto", cuda, cache_ok=False, resize="direct_resize") == "cpu"
    assert resolve_pipeline("gpu", cpu, cache_ok=True, resize="direct_resize") == "gpu"
    with pytest.raises(ConfigError, match="medattn data prepare"):
        resolve_pipeline("gpu", cpu, cache_ok=False, resize="direct_resize")
    with pytest.raises(ConfigError, match="direct_resize"):
        resolve_pipeline("gpu", cpu, cache_ok=True, resize="resizeshortest_randomcrop")


@pytest.fixture(scope="module")
def cached_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("cached") / "demo_data"
    write_synthetic(root, n=40, img_size=48, seed=1)
    prepare_cache("demo", root, img_size=32)
    return root


def test_cache_and_files_give_the_same_tensors_before_augmentation(cached_demo):
    index = load_index("demo", cached_demo)
    fast = build_device_loader(index, "val", img_size=32, batch_size=16, device=torch.device("cpu"), train=False)
    # the PIL path from the image files: a different (uncached) size folder is not possible, so
    # bypass the cache explicitly
    files = torch.utils.data.DataLoader(
        ImageDataset(index.split("val"), build_transform(32, train=False)), batch_size=16
    )
    cached_pil = build_loader(index, "val", img_size=32, batch_size=16)
    n = 0
    for (a, ya), (b, yb), (c, yc) in zip(fast, files, cached_pil, strict=True):
        assert torch.equal(ya, yb) and torch.equal(ya, yc)
        # one uint8 step of resize rounding at most
        assert (a - b).abs().max() <= 1.0 / 255 / min(IMAGENET_STD) + 1e-4
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)
        n += len(ya)
    assert n == len(index.split("val"))


def test_train_with_forced_fast_path_on_cpu(mlflow_store, cached_demo, demo_dir, train_tiny):
    fast = train_tiny(data_dir=str(cached_demo), data_pipeline="gpu")
    slow = train_tiny(data_dir=str(demo_dir), data_pipeline="cpu")
    client = mlflow.MlflowClient()
    keys = lambda rid: set(client.get_run(rid).data.metrics)  # noqa: E731
    assert keys(fast.run_id) == keys(slow.run_id)
    assert set(fast.history) == set(slow.history)
    assert client.get_run(fast.run_id).data.tags["medattn.data_pipeline"] == "gpu"
    assert client.get_run(slow.run_id).data.tags["medattn.data_pipeline"] == "cpu"
    assert client.get_run(fast.run_id).data.params["data_pipeline"] == "gpu"
    with pytest.raises(ConfigError, match="medattn data prepare"):
        train_tiny(data_dir=str(demo_dir), data_pipeline="gpu")

"""Image transforms of the paper's pipeline (torchvision ``transforms.v2`` on PIL images).

Resize modes: ``direct_resize`` (to ``s × s``, aspect ratio not kept) and
``resizeshortest_randomcrop`` (shortest side to ``s``, then a random ``s × s`` crop when training
or the centre crop otherwise). Training adds the paper's augmentation: RandomAffine(±10°,
translate (0.05, 0.1), scale (0.95, 1.05)) and a horizontal flip with p = 0.5. Every image is
converted to RGB first (grayscale radiographs, RGBA PNGs) and ImageNet-normalised last.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from medattn.registry import Registry

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

RESIZE_MODES: Registry[Callable[[int, bool], list]] = Registry.for_kind("resize mode")


@RESIZE_MODES.register("direct_resize")
def _direct_resize(size: int, train: bool) -> list:
    # torchvision loads on first use (its import pulls in torch._dynamo, seconds): the command line
    # reads the data set names without it
    from torchvision.transforms import v2

    return [v2.Resize((size, size), interpolation=v2.InterpolationMode.BILINEAR)]


@RESIZE_MODES.register("resizeshortest_randomcrop")
def _resizeshortest_randomcrop(size: int, train: bool) -> list:
    # torchvision loads on first use (its import pulls in torch._dynamo, seconds): the command line
    # reads the data set names without it
    from torchvision.transforms import v2

    crop = v2.RandomCrop(size) if train else v2.CenterCrop(size)
    return [v2.Resize(size, interpolation=v2.InterpolationMode.BILINEAR), crop]


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    16/32-bit grayscale (``I;16``, ``I``) is rescaled to 8 bits by its bit depth first, because
    PIL's plain ``convert("RGB")`` would clip it to white. Alpha channels are dropped.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def build_transform(
    img_size: int, resize: str = "direct_resize", train: bool = False
) -> Callable[[Image.Image], torch.Tensor]:
    """The full image pipeline.

    Args:
        img_size: output side ``s`` in pixels.
        resize: ``direct_resize`` or ``resizeshortest_randomcrop``.
        train: add the paper's augmentation (and a random instead of a centre crop).

    Returns:
        A callable mapping a PIL image (any mode) to a float tensor ``(3, s, s)``, ImageNet-normalised.
    """
    # torchvision loads on first use (its import pulls in torch._dynamo, seconds): the command line
    # reads the data set names without it
    from torchvision.transforms import v2

    ops: list = [v2.Lambda(to_rgb), *RESIZE_MODES.get(resize)(img_size, train)]
    if train:
        ops += [
            v2.RandomAffine(degrees=10, translate=(0.05, 0.1), scale=(0.95, 1.05)),
            v2.RandomHorizontalFlip(p=0.5),
        ]
    ops += [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(ops)

"""Data layer: the four data sets (APTOS 2019, ISIC 2020, MIMIC-CXR, the synthetic demo set), splits,
transforms, loaders, cache and checks.

``aptos2019``, ``isic2020``, ``mimic-cxr`` and ``demo`` are registered in :data:`DATASETS` by their
modules, which the first look-up of the ``dataset`` registry imports (:mod:`medattn.registry`: every
module of this package that registers something).

Importing this package is cheap: each name below loads its module (pandas, PIL, torch) on first use
(:func:`__getattr__`), so that :mod:`medattn.data.ids` and the configs' checks serve the command
line's ``--help`` without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from medattn import registry

if TYPE_CHECKING:
    from medattn.data.base import DatasetSpec

#: Public name -> (module of this package, name there); loaded on first use by :func:`__getattr__`.
_LAZY_NAMES: dict[str, tuple[str, str]] = {
    **{name: ("base", name) for name in ("DATASETS", "DataIndex", "DatasetSpec", "canonical_split", "load_index")},
    "prepare_cache": ("cache", "prepare_cache"),
    "CheckReport": ("checks", "CheckReport"),
    "check_data": ("checks", "check_data"),
    "DUPLICATE_MAX_DISTANCE": ("duplicates", "MAX_DISTANCE"),
    "DUPLICATE_POLICIES": ("duplicates", "POLICIES"),
    "duplicate_counts": ("duplicates", "duplicate_counts"),
    **{name: ("io", name) for name in ("DecodeSettings", "ImageReadError", "decode_image", "read_image")},
    "ImageDataset": ("loader", "ImageDataset"),
    "build_loader": ("loader", "build_loader"),
    "load_mask": ("synthetic", "load_mask"),
    "write_synthetic": ("synthetic", "write_synthetic"),
    **{name: ("transforms", name) for name in ("IMAGENET_MEAN", "IMAGENET_STD", "RESIZE_MODES", "build_transform")},
}


def __getattr__(name: str) -> Any:
    """A name of :data:`_LAZY_NAMES`: import its module, keep the name here, return it."""
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _LAZY_NAMES[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily loaded ones included."""
    return sorted(set(globals()) | set(_LAZY_NAMES))


def get_dataset(name: str) -> DatasetSpec:
    """The registered :class:`DatasetSpec` for ``name`` (aliases accepted; "did you mean" on a typo)."""
    return registry.lookup("dataset").get(name)


__all__ = [
    "DATASETS",
    "DUPLICATE_MAX_DISTANCE",
    "DUPLICATE_POLICIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESIZE_MODES",
    "CheckReport",
    "DataIndex",
    "DatasetSpec",
    "DecodeSettings",
    "ImageDataset",
    "ImageReadError",
    "build_loader",
    "build_transform",
    "canonical_split",
    "check_data",
    "decode_image",
    "duplicate_counts",
    "get_dataset",
    "load_index",
    "load_mask",
    "prepare_cache",
    "read_image",
    "write_synthetic",
]

"""Data layer: the four data sets of SPEC §2, splits, transforms, loaders, cache and checks.

Importing this package registers ``aptos2019``, ``isic2020``, ``mimic-cxr`` and ``demo`` in
:data:`DATASETS`.
"""

from medattn.data import aptos, isic, mimic_cxr, synthetic  # noqa: F401  (register the data sets)
from medattn.data.base import DATASETS, DataIndex, DatasetSpec, canonical_split, load_index
from medattn.data.cache import prepare_cache
from medattn.data.checks import CheckReport, check_data
from medattn.data.io import ImageReadError, read_image
from medattn.data.loader import ImageDataset, build_loader
from medattn.data.synthetic import load_mask, write_synthetic
from medattn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RESIZE_MODES, build_transform


def get_dataset(name: str) -> DatasetSpec:
    """The registered :class:`DatasetSpec` for ``name`` (aliases accepted; "did you mean" on a typo)."""
    return DATASETS.get(name)


__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESIZE_MODES",
    "CheckReport",
    "DataIndex",
    "DatasetSpec",
    "ImageDataset",
    "ImageReadError",
    "build_loader",
    "build_transform",
    "canonical_split",
    "check_data",
    "get_dataset",
    "load_index",
    "load_mask",
    "prepare_cache",
    "read_image",
    "write_synthetic",
]

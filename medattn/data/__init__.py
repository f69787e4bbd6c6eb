"""Data layer: the four data sets (APTOS 2019, ISIC 2020, MIMIC-CXR, the synthetic demo set), splits,
transforms, loaders, cache and checks.

Importing this package registers ``aptos2019``, ``isic2020``, ``mimic-cxr`` and ``demo`` in
:data:`DATASETS`.
"""

from medattn.data import aptos, isic, mimic_cxr, synthetic  # noqa: F401  (register the data sets)
from medattn.data.base import DATASETS, DataIndex, DatasetSpec, canonical_split, load_index
from medattn.data.cache import prepare_cache
from medattn.data.checks import CheckReport, check_data
from medattn.data.duplicates import MAX_DISTANCE as DUPLICATE_MAX_DISTANCE
from medattn.data.duplicates import POLICIES as DUPLICATE_POLICIES
from medattn.data.duplicates import duplicate_counts
from medattn.data.io import DecodeSettings, ImageReadError, decode_image, read_image
from medattn.data.loader import ImageDataset, build_loader
from medattn.data.synthetic import load_mask, write_synthetic
from medattn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RESIZE_MODES, build_transform


def get_dataset(name: str) -> DatasetSpec:
    """The registered :class:`DatasetSpec` for ``name`` (aliases accepted; "did you mean" on a typo)."""
    return DATASETS.get(name)


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

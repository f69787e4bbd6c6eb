"""Fixtures writing small data folders in the real on-disk formats (see medattn.data.testing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medattn.data import write_synthetic
from medattn.data.testing import write_fake_aptos, write_fake_isic, write_fake_mimic_folders, write_fake_mimic_jpg


@pytest.fixture
def aptos_dir(tmp_path: Path) -> Path:
    return write_fake_aptos(tmp_path / "aptos", n=40)


@pytest.fixture
def isic_dir(tmp_path: Path) -> Path:
    return write_fake_isic(tmp_path / "isic", patients=12, per_patient=3)


@pytest.fixture
def mimic_jpg_dir(tmp_path: Path) -> Path:
    return write_fake_mimic_jpg(tmp_path / "mimic", subjects=12)


@pytest.fixture
def mimic_folders_dir(tmp_path: Path) -> Path:
    return write_fake_mimic_folders(tmp_path / "mimic_ap", per_split=(20, 8, 8))


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    return write_synthetic(tmp_path / "demo", n=60, img_size=48, seed=0, version=2)  # masks iff label 1

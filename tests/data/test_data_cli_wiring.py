"""``medattn data check --duplicates/--duplicates-out`` and ``data prepare --workers``
through the command line, on tiny folders in the real layouts.

The APTOS folder gets one planted near-duplicate: an image file copied over another image that
the splits made without duplicate handling put in another split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from medattn.data import load_index, write_synthetic
from medattn.data.cache import cache_dir
from medattn.data.duplicates import fingerprint_store
from medattn.data.testing import write_fake_aptos


def plant_copy(root: Path) -> frozenset[str]:
    """Copy one APTOS image over another of the same label in a different split (``duplicates=ignore``);
    the pair's ids."""
    frame = load_index("aptos2019", root, duplicates="ignore").frame
    a = frame[frame["split"] == "train"].iloc[0]
    b = frame[(frame["split"] == "test") & (frame["label"] == a["label"])].iloc[0]
    shutil.copyfile(a["path"], b["path"])
    return frozenset((a["image_id"], b["image_id"]))


@pytest.fixture
def aptos_with_copy(tmp_path: Path) -> tuple[Path, frozenset[str]]:
    root = write_fake_aptos(tmp_path / "aptos", n=40, seed=5)
    return root, plant_copy(root)


def test_data_check_writes_the_groups_and_reports_them(aptos_with_copy, tmp_path, cli) -> None:
    root, pair = aptos_with_copy
    out = tmp_path / "out" / "groups.csv"
    res = cli(["data", "check", "--dataset", "aptos2019", "--data-dir", root, "--duplicates-out", out])
    assert "Note: 1 near-duplicate group(s) (2 images); crossing the splits made without duplicate handling" in (
        res.output
    )
    groups = pd.read_csv(out, dtype={"image_id": str})
    assert frozenset(groups["image_id"]) == pair
    assert groups["split_before"].nunique() == 2  # the copy crossed the splits before grouping
    assert groups["split"].nunique() == 1  # --duplicates group (the default) keeps it in one split


def test_data_check_drop_counts_one_image_less(aptos_with_copy, cli) -> None:
    root, _ = aptos_with_copy
    total = {}
    for policy in ("group", "drop", "ignore"):
        res = cli(["data", "check", "--dataset", "aptos2019", "--data-dir", root, "--duplicates", policy])
        total[policy] = int(res.output.split("Checked ")[1].split()[0])
    assert total == {"group": 40, "drop": 39, "ignore": 40}


def test_data_check_refuses_an_unknown_policy(aptos_with_copy, cli, one_error_line) -> None:
    root, _ = aptos_with_copy
    res = cli(["data", "check", "--dataset", "aptos2019", "--data-dir", root, "--duplicates", "grup"], exit_code=2)
    one_error_line(res, "grup", "group, drop, ignore")


def test_data_prepare_workers_and_no_fingerprints(tmp_path, cli, one_error_line) -> None:
    root = write_synthetic(tmp_path / "demo", n=24, img_size=40, seed=2)
    res = cli(["data", "prepare", "--dataset", "demo", "--data-dir", root, "--img-size", "32", "--workers", "1"])
    folder = cache_dir(root.resolve(), "demo", 32)
    assert str(folder) in res.output
    assert (folder / "images.npy").is_file() and (folder / "cache.json").is_file()
    # prepare keeps every image and does not search for near-duplicates (no fingerprints stored)
    assert len(pd.read_csv(folder / "manifest.csv")) == 24
    assert not fingerprint_store(root.resolve(), "demo").exists()
    bad = cli(["data", "prepare", "--dataset", "demo", "--data-dir", root, "--workers", "0"], exit_code=2)
    one_error_line(bad, "--workers must be 1 or more")

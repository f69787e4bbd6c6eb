"""Near-duplicate groups and patient leakage in hand-made layouts.

The folders are written by the real-format writers of :mod:`medattn.data.testing`; their noise
images are then replaced by smooth random pictures (photograph-like: most energy at low spatial
frequencies), and near-duplicates are planted: the same picture re-encoded at another JPEG quality,
resized, or cropped by a few per cent, under a different image id (and a different patient). Each
planted pair straddles two splits of the splits made without duplicate handling, so every test here
fails without the feature.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medattn.data import check_data, duplicates, load_index, prepare_cache
from medattn.data.duplicates import (
    MAX_DISTANCE,
    components,
    compute_fingerprints,
    duplicate_counts,
    fingerprint_store,
    near_duplicate_pairs,
    split_units,
)
from medattn.data.testing import write_fake_aptos, write_fake_isic, write_fake_mimic_folders
from medattn.errors import DataError, MedattnError


def _smooth_picture(rng: np.random.Generator, size: tuple[int, int] = (120, 90)) -> Image.Image:
    """A photograph-like RGB picture: bicubic upsampling of a coarse random grid plus sensor noise."""
    coarse = rng.standard_normal((6, 8, 3)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(coarse[..., c]).resize(size, Image.BICUBIC)) for c in range(3)]
    arr = 128 + 45 * np.stack(planes, axis=-1) + rng.normal(0, 4, (size[1], size[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _reencode(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(im: Image.Image, frac: float) -> Image.Image:
    w, h = im.size
    dx, dy = round(w * frac), round(h * frac)
    return im.crop((dx, dy, w - dx, h - dy))


# What a planted copy is: the same picture re-encoded, resized, cropped by a few per cent.
VARIANTS = {
    "jpeg q50": lambda im: _reencode(im, 50),
    "resized 60 %": lambda im: im.resize((round(im.size[0] * 0.6), round(im.size[1] * 0.6)), Image.LANCZOS),
    "cropped 3 % (1.5 % per side)": lambda im: _crop(im, 0.015),
    "cropped 2 % + jpeg q70": lambda im: _reencode(_crop(im, 0.01), 70),
}


def _save(im: Image.Image, path: Path) -> None:
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=92)
    else:
        im.save(path)


def _repaint(frame: pd.DataFrame, seed: int) -> dict[str, Image.Image]:
    """Replace every image of ``frame`` by a distinct smooth picture; returns them by image id."""
    rng = np.random.default_rng(seed)
    pictures = {}
    for image_id, path in zip(frame["image_id"], frame["path"], strict=True):
        pictures[image_id] = _smooth_picture(rng)
        _save(pictures[image_id], Path(path))
    return pictures


def _plant(dataset: str, root: Path, n_groups: int, *, conflicting: int = 0, seed: int = 0) -> list[frozenset[str]]:
    """Plant ``n_groups`` near-duplicate pairs whose images lie in different splits today.

    The first ``conflicting`` pairs join images with different labels, the others images with the
    same label. Each copy is one of :data:`VARIANTS` of its original.
    """
    before = load_index(dataset, root, duplicates="ignore").frame
    pictures = _repaint(before, seed)
    rng = np.random.default_rng(seed + 1)
    used: set[str] = set()
    planted = []
    variants = list(VARIANTS.values())
    for k in range(n_groups):
        want_conflict = k < conflicting
        for _ in range(10_000):
            a, b = before.iloc[rng.choice(len(before), 2, replace=False)].itertuples()
            if {a.image_id, b.image_id} & used or a.split == b.split or a.patient_id == b.patient_id:
                continue
            if (a.label != b.label) == want_conflict:
                break
        used |= {a.image_id, b.image_id}
        _save(variants[k % len(variants)](pictures[a.image_id]), Path(b.path))
        planted.append(frozenset((a.image_id, b.image_id)))
    return planted


def _groups(table: pd.DataFrame) -> set[frozenset[str]]:
    return {frozenset(part["image_id"]) for _, part in table.groupby("group")}


@pytest.fixture
def isic_planted(tmp_path: Path) -> tuple[Path, list[frozenset[str]]]:
    root = write_fake_isic(tmp_path / "isic", patients=15, per_patient=3, seed=3)
    return root, _plant("isic2020", root, 4, conflicting=1, seed=3)


@pytest.fixture
def aptos_planted(tmp_path: Path) -> tuple[Path, list[frozenset[str]]]:
    root = write_fake_aptos(tmp_path / "aptos", n=48, seed=4)
    return root, _plant("aptos2019", root, 4, conflicting=1, seed=4)


@pytest.mark.parametrize("layout", ["isic_planted", "aptos_planted"])
def test_check_finds_exactly_the_planted_groups(layout: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    root, planted = request.getfixturevalue(layout)
    dataset = "isic2020" if layout.startswith("isic") else "aptos2019"
    out = tmp_path / "groups.csv"
    report = check_data(dataset, root, decode=False, duplicates_out=out)
    assert report.ok, report.problems
    assert _groups(report.duplicate_groups) == set(planted)
    written = pd.read_csv(out, dtype={"image_id": str, "patient_id": str})
    assert _groups(written) == set(planted)
    assert len(written) == 8
    # Every planted pair straddled two of today's splits; one pair carries conflicting labels.
    text = "\n".join(report.notes)
    assert (
        "4 near-duplicate group(s) (8 images); crossing the splits made without duplicate handling "
        "(--duplicates ignore): 4; with conflicting labels: 1." in text
    )
    assert written.groupby("group")["split_before"].nunique().eq(2).all()
    assert written.groupby("group")["conflicting"].any().sum() == 1


@pytest.mark.parametrize("layout", ["isic_planted", "aptos_planted"])
def test_group_policy_keeps_every_group_in_one_split(layout: str, request: pytest.FixtureRequest) -> None:
    root, planted = request.getfixturevalue(layout)
    dataset = "isic2020" if layout.startswith("isic") else "aptos2019"
    index = load_index(dataset, root)  # duplicates="group" is the default
    split_of = dict(zip(index.frame["image_id"], index.frame["split"], strict=True))
    for group in planted:
        assert len({split_of[i] for i in group}) == 1, group
    # Groups join patients: every patient still lies in one split.
    assert index.frame.groupby("patient_id")["split"].nunique().max() == 1
    assert len(index.frame) == len(load_index(dataset, root, duplicates="ignore").frame)
    assert index.duplicates == "group"
    counts = duplicate_counts(index.duplicate_groups)
    assert counts["duplicate_groups"] == 4 and counts["duplicate_groups_crossing"] == 4
    assert counts["duplicate_images_dropped"] == 0


@pytest.mark.parametrize("layout", ["isic_planted", "aptos_planted"])
def test_drop_policy_leaves_one_image_per_group(layout: str, request: pytest.FixtureRequest) -> None:
    root, planted = request.getfixturevalue(layout)
    dataset = "isic2020" if layout.startswith("isic") else "aptos2019"
    index = load_index(dataset, root, duplicates="drop")
    ids = set(index.frame["image_id"])
    table = index.duplicate_groups
    conflicting = _groups(table[table["conflicting"]])
    assert len(conflicting) == 1
    for group in planted:
        assert len(group & ids) == (0 if group in conflicting else 1), group
    assert len(index.frame) == len(load_index(dataset, root, duplicates="ignore").frame) - 3 - 2
    assert any(
        "dropped 1 near-duplicate group(s) whole (2 images) because their labels conflict" in n for n in index.notes
    )
    assert duplicate_counts(table)["duplicate_images_dropped"] == 5


def test_without_duplicates_the_splits_are_unchanged(isic_dir: Path, aptos_dir: Path) -> None:
    for name, root in (("isic2020", isic_dir), ("aptos2019", aptos_dir)):
        grouped, plain = load_index(name, root), load_index(name, root, duplicates="ignore")
        assert grouped.frame.equals(plain.frame)
        assert grouped.duplicate_groups.empty


def test_low_data_regimen_keeps_or_drops_whole_groups(tmp_path: Path) -> None:
    root = write_fake_aptos(tmp_path / "aptos", n=120, seed=5)
    before = load_index("aptos2019", root, duplicates="ignore").frame
    pictures = _repaint(before, seed=5)
    train = before[before["split"] == "train"].reset_index(drop=True)
    # Ten groups of three same-label copies of a train picture (all of them land in one split).
    groups = []
    for g in range(10):
        members = train[train["label"] == g % 2].iloc[3 * (g // 2) : 3 * (g // 2) + 3]
        source = members.iloc[0]
        for k, row in enumerate(members.iloc[1:].itertuples()):
            _save(list(VARIANTS.values())[(g + k) % len(VARIANTS)](pictures[source.image_id]), Path(row.path))
        groups.append(set(members["image_id"]))
    low = load_index("aptos2019", root, low_data_regimen=True, perc_train=0.5)
    kept = set(low.frame["image_id"])
    assert {len(g & kept) for g in groups} <= {0, 3}
    assert 0 < sum(len(g & kept) == 3 for g in groups) < 10
    assert set(low.duplicate_groups.loc[low.duplicate_groups["split"] != "", "image_id"]) <= kept


def test_known_duplicate_list_of_the_release_is_read(isic_dir: Path) -> None:
    # Noise images: no near-duplicates by fingerprint; ISIC 2020 ships a list with these columns.
    pd.DataFrame({"image_name_1": ["ISIC_0000001"], "image_name_2": ["ISIC_0000031.jpg"]}).to_csv(
        isic_dir / "ISIC_2020_Training_Duplicates.csv", index=False
    )
    index = load_index("isic2020", isic_dir)
    table = index.duplicate_groups
    assert _groups(table) == {frozenset({"ISIC_0000001", "ISIC_0000031"})}
    assert set(table["source"]) == {"list"}
    assert index.frame.set_index("image_id").loc[["ISIC_0000001", "ISIC_0000031"], "split"].nunique() == 1
    pd.DataFrame({"a": ["x"], "b": ["y"]}).to_csv(isic_dir / "duplicates.csv", index=False)
    with pytest.raises(DataError, match=r"duplicates\.csv has no two image-id columns"):
        load_index("isic2020", isic_dir)


def test_unknown_policy_is_a_config_error(isic_dir: Path) -> None:
    with pytest.raises(MedattnError, match="unknown duplicates policy 'grup'; choose one of group, drop, ignore"):
        load_index("isic2020", isic_dir, duplicates="grup")


def test_fingerprints_are_stored_and_read_from_the_uint8_cache(aptos_planted, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = aptos_planted
    frame = load_index("aptos2019", root).frame
    store = fingerprint_store(root, "aptos2019")
    first = compute_fingerprints(frame, root, "aptos2019")
    assert store.is_file() and np.isfinite(first).all()

    def no_files(path):
        raise AssertionError(f"decoded {path} although a fingerprint was available")

    monkeypatch.setattr(duplicates, "thumbnail_from_file", no_files)
    np.testing.assert_array_equal(compute_fingerprints(frame, root, "aptos2019"), first)  # from the store
    monkeypatch.undo()
    store.write_bytes(b"PK\x03\x04 damaged")  # a damaged store is recomputed, not an error
    np.testing.assert_array_equal(compute_fingerprints(frame, root, "aptos2019"), first)
    prepare_cache("aptos2019", root, img_size=64)
    store.unlink()
    monkeypatch.setattr(duplicates, "thumbnail_from_file", no_files)
    from_cache = compute_fingerprints(frame, root, "aptos2019")  # from the uint8 cache
    assert np.linalg.norm(from_cache - first, axis=1).max() < 0.05


def test_pair_search_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((300, 64))
    x = np.concatenate([centres, centres[:100] + 0.012 * rng.standard_normal((100, 64))])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    x[5] = np.nan
    d = np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=-1)
    i, j = np.nonzero(np.triu(d <= MAX_DISTANCE, 1))
    expected = np.stack([i, j], axis=1)
    assert len(expected) == 99
    np.testing.assert_array_equal(near_duplicate_pairs(x), expected)


def test_groups_are_transitive_and_join_patients() -> None:
    comp = components(6, np.array([[0, 1], [1, 2], [4, 5]]))
    assert comp[0] == comp[1] == comp[2] != comp[3] and comp[4] == comp[5] != comp[0]
    # Images 0 (patient B) and 2 (patient D) are near-duplicates; patient B also owns image 1.
    units = split_units(["B", "B", "D", "E"], np.array([1, 0, 1, 0]))
    assert units.tolist() == ["B", "B", "B", "E"]


def test_layout_splits_move_a_crossing_group_into_one_split(tmp_path: Path) -> None:
    # MIMIC's original layout fixes the split by folder; a copy of a train image sits in test.
    root = write_fake_mimic_folders(tmp_path / "mimic", per_split=(20, 8, 8))
    before = load_index("mimic-cxr", root, duplicates="ignore").frame
    train, test = before[before["split"] == "train"].iloc[0], before[before["split"] == "test"].iloc[0]
    picture = _smooth_picture(np.random.default_rng(6)).convert("L")
    _save(picture, Path(train.path))
    _save(VARIANTS["cropped 3 % (1.5 % per side)"](picture), Path(test.path))
    index = load_index("mimic-cxr", root)
    split = index.frame.set_index("image_id")["split"]
    # The group joins both images' patients (two images each): two in train, two in test, a tie,
    # which goes to train; all four images move there.
    patients = {train.patient_id, test.patient_id}
    moved = index.frame[index.frame["patient_id"].isin(patients)]
    assert split[train.image_id] == split[test.image_id] == "train"
    assert len(moved) == 4 and set(moved["split"]) == {"train"}
    assert any("moved 2 image(s) of 1 near-duplicate group(s)" in n for n in index.notes)


def test_patient_in_two_splits_of_a_layout_stops_loading(tmp_path: Path) -> None:
    # 21 train images, two per patient: patient 11000010 has one image in train and one in val.
    root = write_fake_mimic_folders(tmp_path / "mimic", per_split=(21, 7, 8))
    with pytest.raises(DataError) as err:
        load_index("mimic-cxr", root)
    assert (
        str(err.value) == "patient 11000010 has images in train and val; the split must keep each patient in one split."
    )
    assert err.value.exit_code == 2
    report = check_data("mimic-cxr", root, decode=False)
    assert (
        "patient 11000010 has images in train and val; the split must keep each patient in one split."
        in report.problems
    )

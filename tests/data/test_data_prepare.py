"""The reduced-resolution decoder, the parallel resumable prepare, decoder settings in the cache."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from medattn.data import build_loader, load_index, prepare_cache
from medattn.data import cache as cache_mod
from medattn.data.cache import cache_dir, compare_to_full, decode_in_order, open_cache
from medattn.data.gpu import cache_matches
from medattn.data.io import DOCUMENTED_DIFFERENCE, FULL_DECODE, ImageReadError, decode_image
from medattn.data.prepare_bench import Layout, measure_prepare, synthetic_photo, write_layout
from medattn.errors import ConfigError

CACHE_FILES = ("images.npy", "manifest.csv", "cache.json")

# The real source sizes at the real target (224 px): the difference depends on the ratio of the
# DCT-reduced size to the target, so the test keeps the geometry the table documents.
REAL_LAYOUTS = {
    "jpeg_rgb": ((6000, 4000), "RGB", "JPEG"),
    "jpeg_grey": ((2500, 3000), "L", "JPEG"),
    "png": ((3000, 2000), "RGB", "PNG"),
}


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "_warned", set())


@pytest.fixture
def isic_big(tmp_path: Path) -> Path:
    """ISIC layout with 24 photographs of 240×160, so a 32 px prepare uses DCT scale 1/4."""
    write_layout(tmp_path / "isic", Layout("isic2020", (240, 160), "RGB", "JPEG", 12))
    return tmp_path / "isic"


@pytest.mark.parametrize("kind", list(REAL_LAYOUTS))
def test_reduced_decoder_within_documented_difference(tmp_path: Path, kind: str) -> None:
    size, mode, fmt = REAL_LAYOUTS[kind]
    path = tmp_path / f"image.{fmt.lower()}"
    synthetic_photo(np.random.default_rng(1), size, mode).save(
        path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1})
    )
    reduced = decode_image(path, 224)
    # never below the target, and really reduced: 1/8 for the JPEGs, reduce(2) for the PNG
    assert min(reduced.size) >= 224 and reduced.mode == "RGB"
    expected = (-(-size[0] // 8), -(-size[1] // 8)) if fmt == "JPEG" else (size[0] // 2, size[1] // 2)
    assert reduced.size == expected
    assert decode_image(path, 224, FULL_DECODE).size == size
    mean, peak = compare_to_full(path, 224)
    bound_mean, bound_max = DOCUMENTED_DIFFERENCE[kind]
    assert 0 < mean <= bound_mean and peak <= bound_max


def test_reduced_decoder_never_goes_below_the_target(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    synthetic_photo(np.random.default_rng(0), (500, 300), "RGB").save(path, quality=90)
    assert decode_image(path, 150).size == (250, 150)  # 1/2: 1/4 would give 75 px < 150
    assert decode_image(path, 151).size == (500, 300)  # no scale keeps 300 // s >= 151 but s = 1
    assert decode_image(path, 37).size == (63, 38)  # 1/8, rounded up


def test_file_path_decodes_reduced_and_equals_the_cache(isic_big: Path) -> None:
    index = load_index("isic2020", isic_big)
    files = build_loader(index, "val", img_size=32, batch_size=64)
    assert files.dataset.cache is None and files.dataset.decode_size == 32
    from_files = torch.cat([x for x, _ in files])
    prepare_cache("isic2020", isic_big, img_size=32, workers=2, progress=False)
    cached = build_loader(index, "val", img_size=32, batch_size=64)
    assert cached.dataset.cache is not None
    assert torch.allclose(torch.cat([x for x, _ in cached]), from_files, atol=1e-6)


def test_parallel_prepare_equals_serial_and_shows_rate(isic_big: Path, capsys: pytest.CaptureFixture) -> None:
    folder = prepare_cache("isic2020", isic_big, img_size=32, workers=1, progress=False)
    serial = {name: (folder / name).read_bytes() for name in CACHE_FILES}
    for name in CACHE_FILES:
        (folder / name).unlink()
    prepare_cache("isic2020", isic_big, img_size=32, workers=3, chunk_size=2, progress=True)
    assert {name: (folder / name).read_bytes() for name in CACHE_FILES} == serial
    assert not (folder / "progress.json").exists() and not (folder / "images.npy.partial").exists()
    bar = capsys.readouterr().err
    assert "24/24" in bar and "img/s" in bar  # tqdm: count, rate (and ETA while running)


def test_decode_in_order_keeps_order_with_bounded_window(isic_big: Path) -> None:
    paths = load_index("isic2020", isic_big).frame["path"].tolist()
    blocks = list(decode_in_order(paths, 16, workers=2, chunk_size=3))
    assert sum(len(b) for b in blocks) == len(paths)
    ref = np.concatenate([cache_mod.decode_resized(p, 16)[None] for p in paths])
    assert np.array_equal(np.concatenate(blocks), ref)


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import medattn.data.cache as c

    c.CHECKPOINT_S = 0.0
    record = c._record

    def record_then_die(arr, directory, meta, done):
        record(arr, directory, meta, done)
        if done >= 10:  # killed like `kill -9` of the whole job, workers included
            os.killpg(0, signal.SIGKILL)

    c._record = record_then_die
    c.prepare_cache("isic2020", sys.argv[1], img_size=32, workers=2, chunk_size=2, progress=False)
    """
)


def test_killed_prepare_resumes_to_a_byte_identical_cache(isic_big: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = prepare_cache("isic2020", isic_big, img_size=32, workers=2, progress=False)
    one_pass = {name: (folder / name).read_bytes() for name in CACHE_FILES}
    for name in CACHE_FILES:
        (folder / name).unlink()

    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(isic_big)], start_new_session=True, timeout=120)
    assert proc.returncode == -9
    progress = cache_mod._read_json(folder / "progress.json")
    assert 10 <= progress["done"] < 24 and not (folder / "cache.json").exists()
    assert open_cache(isic_big, "isic2020", 32, load_index("isic2020", isic_big).frame) is None

    decoded: list[str] = []
    real = cache_mod.decode_resized
    monkeypatch.setattr(cache_mod, "decode_resized", lambda p, *a: decoded.append(p) or real(p, *a))
    prepare_cache("isic2020", isic_big, img_size=32, workers=1, progress=False)
    assert len(decoded) == 24 - progress["done"]  # only the images not yet written
    assert {name: (folder / name).read_bytes() for name in CACHE_FILES} == one_pass


def test_interrupted_prepare_with_other_settings_starts_over(isic_big: Path) -> None:
    frame = load_index("isic2020", isic_big).frame
    broken = frame["path"].iloc[13]
    good = Path(broken).read_bytes()
    Path(broken).write_bytes(good[: len(good) // 3])
    with pytest.raises(ImageReadError, match="cannot decode image"):
        prepare_cache("isic2020", isic_big, img_size=32, workers=1, chunk_size=4, progress=False)
    folder = cache_dir(isic_big, "isic2020", 32)
    assert cache_mod._read_json(folder / "progress.json")["done"] == 12  # the chunks before the bad file
    Path(broken).write_bytes(good)
    assert cache_mod._resume_point(folder, cache_mod.cache_metadata(frame, 32, FULL_DECODE)) == 0
    assert cache_mod._resume_point(folder, cache_mod.cache_metadata(frame, 32, cache_mod.DEFAULT_DECODE)) == 12


def test_cache_with_other_decoder_settings_is_not_used_and_said_once(
    isic_big: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = prepare_cache("isic2020", isic_big, img_size=32, workers=1, settings=FULL_DECODE, progress=False)
    assert cache_mod._read_json(folder / "cache.json")["decoder"] == FULL_DECODE.as_dict()
    index = load_index("isic2020", isic_big)
    with caplog.at_level(logging.WARNING, logger="medattn.data.cache"):
        loaders = [build_loader(index, split, img_size=32) for split in ("train", "val", "test")]
        assert not cache_matches(index, 32)
    assert all(loader.dataset.cache is None for loader in loaders)
    said = [r.getMessage() for r in caplog.records if "decoder settings" in r.getMessage()]
    assert len(said) == 1 and "medattn data prepare" in said[0] and "jpeg_draft': False" in said[0]

    # a cache from before the settings were recorded is refused the same way
    (folder / "cache.json").unlink()
    assert open_cache(isic_big, "isic2020", 32, index.frame) is None
    # re-preparing with the loader's settings makes it usable again
    prepare_cache("isic2020", isic_big, img_size=32, workers=1, progress=False)
    assert build_loader(index, "val", img_size=32).dataset.cache is not None


def test_prepare_refuses_zero_workers(isic_big: Path) -> None:
    with pytest.raises(ConfigError, match="--workers must be 1 or more"):
        prepare_cache("isic2020", isic_big, img_size=32, workers=0)


def test_measure_prepare_small(tmp_path: Path) -> None:
    layouts = {
        "isic_jpeg": Layout("isic2020", (240, 160), "RGB", "JPEG", 8),
        "aptos_png": Layout("aptos2019", (200, 120), "RGB", "PNG", 12),
    }
    result = measure_prepare(tmp_path, img_size=16, workers=2, layouts=layouts)
    isic = result["layouts"]["isic_jpeg"]
    assert result["prepare_img_s"] == isic["prepare_img_s"] > 0 and result["serial_full_decode_img_s"] > 0
    assert set(isic["scaling_img_s"]) == {"1", "2"} and isic["images"] == 16
    assert isic["files_img_s"] > 0 and isic["files_full_img_s"] > 0 and 0 < isic["mean_abs_diff"] < 20
    assert result["layouts"]["aptos_png"]["images"] == 12
    assert (cache_dir(tmp_path / "isic_jpeg", "isic2020", 16) / "cache.json").is_file()

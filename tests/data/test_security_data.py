"""A data folder from someone else cannot run code, reach files outside itself or exhaust memory.

Each test rebuilds an attack on a data folder: a pickle whose unpickling runs a payload, MIMIC ids
that point outside the folder (``../``, absolute, backslash, NUL), and a decompression bomb (a PNG
of ~170 KB declaring 13000 × 13000 pixels). Each is refused by ``medattn data check`` with exit code
2 and a sentence naming the file or id; the bomb before any pixel is decoded.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medattn.data import build_loader, decode_image, load_index, write_synthetic
from medattn.data.ids import id_problem, safe_name
from medattn.data.io import PIXEL_BUDGET, ImageTooLargeError, open_image
from medattn.data.testing import write_png_bomb

BOMB_SIDE = 13000  # write_png_bomb's default: 169 Mpx, above the budget, below Pillow's own error (179 Mpx)
RSS_MARGIN_KB = 200 * 1024


# ---- pickle -------------------------------------------------------------------------------------
class _Payload:
    """Unpickles by running code that leaves a marker file, then returns a valid annotation array."""

    def __init__(self, marker: Path, entries: list) -> None:
        self.marker, self.entries = marker, entries

    def __reduce__(self):
        code = (
            f"__import__('pathlib').Path({str(self.marker)!r}).touch() or "
            f"__import__('numpy').asarray({self.entries!r}, dtype=object)"
        )
        return eval, (code,)


def test_a_pickle_payload_does_not_run_and_the_file_is_refused(mimic_folders_dir, tmp_path, cli, one_error_line):
    ann = mimic_folders_dir / "Train_images_AP_resized" / "Annotations.pickle"
    entries = pickle.loads(ann.read_bytes()).tolist()
    marker = tmp_path / "payload-ran"
    ann.write_bytes(pickle.dumps(_Payload(marker, entries)))
    for args in (["data", "check"], ["data", "prepare", "--img-size", "16"]):
        result = cli([*args, "--dataset", "mimic-cxr", "--data-dir", mimic_folders_dir], exit_code=2)
        line = one_error_line(result, str(ann), "builtins.eval", "could run code")
        assert line.count(".") <= 8  # one sentence, not a trace
        assert not marker.exists()


def test_a_legitimate_original_layout_still_reads(mimic_folders_dir):
    index = load_index("mimic-cxr", mimic_folders_dir)
    assert len(index.frame) == 36 and index.frame["image_id"].str.count("/").eq(3).all()
    # the same annotations as numpy 1.x wrote them (numpy.core, protocol 2) and with numpy scalars
    ann = mimic_folders_dir / "Val_images_AP_resized" / "Annotations.pickle"
    arr = pickle.loads(ann.read_bytes())
    old = pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old
    ann.write_bytes(old)
    test_ann = mimic_folders_dir / "Test_images_AP_resized" / "Annotations.pickle"
    unicode = np.array(pickle.loads(test_ann.read_bytes()).tolist(), dtype=str)  # a unicode array, protocol 5
    test_ann.write_bytes(pickle.dumps(unicode, protocol=5))
    again = load_index("mimic-cxr", mimic_folders_dir)
    pd.testing.assert_frame_equal(again.frame, index.frame)


# ---- ids that leave the folder ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "relative", "reason"),
    [
        ("../../X", True, "'..'"),
        ("/etc/passwd", True, "absolute"),
        ("C:/x", True, "absolute"),
        ("a\\..\\b", True, "backslash"),
        ("a\0b", True, "NUL"),
        ("p10/p1/s2/img", False, "'/'"),
        ("p10//img", True, "empty"),
        ("", False, "empty"),
    ],
)
def test_id_problems(value, relative, reason):
    assert reason in id_problem(value, relative_path=relative)


def test_good_ids_and_safe_names():
    assert id_problem("p10/p10000032/s5/img1", relative_path=True) is None
    assert id_problem("ISIC_0052212") is None
    assert safe_name("ISIC_0052212") == "ISIC_0052212"
    names = {safe_name(i) for i in ("../../X", "..-..-X", "p10/p1/s2/img", "p10_p1_s2_img", "/abs", "a\0b")}
    assert len(names) == 6
    for name in names:
        assert "/" not in name and "\\" not in name and "\0" not in name and not name.startswith(".")


def _outside_rows(mimic_jpg_dir: Path) -> dict[str, str]:
    """Point two used images of the MIMIC-CXR-JPG tables at files outside the data folder; new id per old id."""
    used = load_index("mimic-cxr", mimic_jpg_dir).frame
    outside = mimic_jpg_dir.parent / "outside"
    outside.mkdir()
    new = {
        used["image_id"].iloc[0]: "../../../../../outside/escaped",  # files/p1X/p<sid>/s<study>/ + one more
        used["image_id"].iloc[1]: str(outside / "absolute"),
        used["image_id"].iloc[2]: "sub\\..\\..\\escaped",
    }
    for old, path in zip(new, used["path"].iloc[:3], strict=True):
        Image.open(path).save(outside / f"{Path(new[old]).name}.jpg")
    for stem in ("metadata", "split"):
        csv = mimic_jpg_dir / f"mimic-cxr-2.0.0-{stem}.csv"
        frame = pd.read_csv(csv, dtype=str)
        frame["dicom_id"] = frame["dicom_id"].replace(new)
        frame.to_csv(csv, index=False)
    return new


def test_ids_that_leave_the_data_folder_are_named_by_data_check(mimic_jpg_dir, tmp_path, cli):
    new = _outside_rows(mimic_jpg_dir)
    before = sorted(p for p in tmp_path.rglob("*") if mimic_jpg_dir not in p.parents)
    result = cli(["data", "check", "--dataset", "mimic-cxr", "--data-dir", mimic_jpg_dir], exit_code=2)
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    for bad in new.values():
        assert any(repr(bad) in ln and "outside the data folder" in ln for ln in errors), (bad, result.output)
    assert "Traceback" not in result.output
    after = sorted(p for p in tmp_path.rglob("*") if mimic_jpg_dir not in p.parents)
    assert after == before  # nothing written outside the data folder


def test_training_refuses_the_same_ids(mimic_jpg_dir, cli, one_error_line):
    _outside_rows(mimic_jpg_dir)
    result = cli(["data", "prepare", "--dataset", "mimic-cxr", "--data-dir", mimic_jpg_dir, "--img-size", "16"], 2)
    one_error_line(result, "outside the data folder", "data check")


# ---- decompression bombs ------------------------------------------------------------------------
def test_the_pixel_budget_refuses_a_bomb_before_decoding(tmp_path):
    bomb = write_png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 400_000 and BOMB_SIDE**2 > PIXEL_BUDGET
    for decode in (lambda: decode_image(bomb, 224), lambda: decode_image(bomb), lambda: open_image(bomb)):
        with pytest.raises(ImageTooLargeError, match=f"{BOMB_SIDE}×{BOMB_SIDE}.*pixel budget of 50 Mpx"):
            decode()
    with pytest.raises(ImageTooLargeError, match="the image bytes declares"):
        decode_image(io.BytesIO(bomb.read_bytes()), 32)
    small = tmp_path / "ok.png"
    Image.new("RGB", (300, 200)).save(small)
    assert decode_image(small).size == (300, 200)


# The clean folder is checked first, then the bombed one, in one fresh process: the peak RSS after
# the first check is the baseline, and the bombed check may raise it by RSS_MARGIN_KB at most.
_CHECK = """
import json, resource, sys
from medattn.data import check_data
out = []
for folder in sys.argv[1:]:
    report = check_data("demo", folder)
    out.append({"rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "problems": report.problems})
print(json.dumps(out))
"""


def test_data_check_names_a_bomb_without_decoding_it(tmp_path):
    clean = write_synthetic(tmp_path / "clean", n=12, img_size=32, seed=0)
    bombed = write_synthetic(tmp_path / "bombed", n=12, img_size=32, seed=0)
    victim = sorted((bombed / "images").glob("*.png"))[3]
    write_png_bomb(victim)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK, str(clean), str(bombed)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    base, attacked = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not base["problems"]
    assert [p for p in attacked["problems"] if str(victim) in p and "pixel budget" in p], attacked["problems"]
    assert attacked["rss_kb"] - base["rss_kb"] <= RSS_MARGIN_KB, (attacked["rss_kb"], base["rss_kb"])


@pytest.mark.parametrize(
    ("dataset", "fixture", "csv", "column"),
    [
        ("aptos2019", "aptos_dir", "train.csv", "id_code"),
        ("isic2020", "isic_dir", "train.csv", "image_name"),
        ("demo", "demo_dir", "labels.csv", "image_id"),
    ],
)
def test_every_data_set_names_ids_that_leave_its_folder(request, cli, dataset, fixture, csv, column):
    folder = request.getfixturevalue(fixture)
    table = pd.read_csv(folder / csv, dtype=str)
    table.loc[0, column], table.loc[1, column] = "../../outside", "/etc/hostname"
    table.to_csv(folder / csv, index=False)
    result = cli(["data", "check", "--dataset", dataset, "--data-dir", folder], exit_code=2)
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    for bad in ("../../outside", "/etc/hostname"):
        named = [ln for ln in errors if repr(bad) in ln]
        assert len(named) == 1 and "outside the data folder" in named[0], result.output
    assert not [ln for ln in errors if "does not exist" in ln and "outside" in ln]


def test_prepare_workers_and_loader_workers_refuse_the_bomb_too(tmp_path, cli, one_error_line):
    folder = write_synthetic(tmp_path / "demo", n=12, img_size=32, seed=0)
    victim = sorted((folder / "images").glob("*.png"))[0]
    write_png_bomb(victim)
    result = cli(
        ["data", "prepare", "--dataset", "demo", "--data-dir", folder, "--img-size", "16", "--workers", "2"], 2
    )
    one_error_line(result, str(victim), "pixel budget of 50 Mpx")
    index = load_index("demo", folder, duplicates="ignore")
    split = index.frame.loc[index.frame["path"] == str(victim), "split"].iloc[0]
    loader = build_loader(index, split, img_size=16, batch_size=4, num_workers=1)
    with pytest.raises(ImageTooLargeError, match="pixel budget of 50 Mpx"):
        list(loader)

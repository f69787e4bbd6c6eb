"""Bad inputs through the CLI: one ``Error:`` sentence naming the file or value, exit code 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medattn.cli import app
from medattn.data import DataIndex, build_loader, check_data, load_index
from medattn.errors import DataError

runner = CliRunner()


@pytest.fixture
def fails(cli, one_error_line) -> Callable[..., str]:
    """``fails(args, *needles)``: the command exits 2 with one ``Error:`` line holding every needle."""
    return lambda args, *needles: one_error_line(cli(args, exit_code=2), *needles)


def test_missing_folder(tmp_path: Path, fails: Callable[..., str]) -> None:
    missing = tmp_path / "nope"
    fails(["data", "prepare", "--dataset", "aptos2019", "--data-dir", str(missing)], str(missing), "does not exist")


def test_csv_missing_column(aptos_dir: Path, fails: Callable[..., str]) -> None:
    csv = aptos_dir / "train.csv"
    pd.read_csv(csv).rename(columns={"diagnosis": "grade"}).to_csv(csv, index=False)
    fails(["data", "prepare", "--dataset", "APTOS", "--data_dir", str(aptos_dir)], str(csv), "'diagnosis'")


def test_label_outside_task(aptos_dir: Path, fails: Callable[..., str]) -> None:
    csv = aptos_dir / "train.csv"
    frame = pd.read_csv(csv, dtype={"id_code": str})
    frame.loc[3, "diagnosis"] = 7
    frame.to_csv(csv, index=False)
    fails(
        ["data", "prepare", "--dataset", "aptos2019", "--data-dir", str(aptos_dir)],
        str(csv),
        "7",
        frame.loc[3, "id_code"],
    )


def test_missing_image(isic_dir: Path, fails: Callable[..., str]) -> None:
    victim = next((isic_dir / "jpeg" / "train").glob("*.jpg"))
    victim.unlink()
    fails(["data", "prepare", "--dataset", "isic2020", "--data-dir", str(isic_dir)], str(victim))


def test_corrupt_image(aptos_dir: Path, fails: Callable[..., str]) -> None:
    victim = sorted((aptos_dir / "train_images").glob("*.png"))[5]
    victim.write_bytes(b"this is not a png at all" * 10)
    fails(["data", "prepare", "--dataset", "aptos2019", "--data-dir", str(aptos_dir), "--img-size", "16"], str(victim))


def test_truncated_image(isic_dir: Path, fails: Callable[..., str]) -> None:
    victim = sorted((isic_dir / "jpeg" / "train").glob("*.jpg"))[2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    fails(
        ["data", "prepare", "--dataset", "isic2020", "--data-dir", str(isic_dir), "--imgsize", "16"],
        str(victim),
        "truncated",
    )


def test_empty_split_after_subsampling(aptos_dir: Path, fails: Callable[..., str]) -> None:
    args = [
        "data",
        "check",
        "--dataset",
        "aptos2019",
        "--data-dir",
        str(aptos_dir),
        "--low-data-regimen",
        "--perc-train",
        "0.01",
    ]
    fails(args, "0.01", "train split empty")
    with pytest.raises(DataError, match="train split empty"):
        load_index("aptos2019", aptos_dir, low_data_regimen=True, perc_train=0.01)


def test_unknown_dataset_name(tmp_path: Path, fails: Callable[..., str]) -> None:
    fails(
        ["data", "check", "--dataset", "isic202", "--data-dir", str(tmp_path)], "'isic202'", "did you mean 'isic2020'"
    )


def test_check_reports_every_problem_at_once(isic_dir: Path) -> None:
    images = sorted((isic_dir / "jpeg" / "train").glob("*.jpg"))
    images[0].write_bytes(b"garbage")
    images[4].write_bytes(images[4].read_bytes()[:200])
    images[7].unlink()
    csv = isic_dir / "train.csv"
    frame = pd.read_csv(csv)
    frame.loc[10, "target"] = 3
    frame.to_csv(csv, index=False)
    report = check_data("isic2020", isic_dir)
    assert not report.ok
    text = "\n".join(report.problems)
    for needle in (images[0].name, images[4].name, images[7].name, "target 3"):
        assert needle in text, text
    assert len(report.problems) == 4
    assert report.summary["images"].sum() == 36 - 2  # the missing and the mislabelled image

    result = runner.invoke(app, ["data", "check", "--dataset", "isic2020", "--data-dir", str(isic_dir)])
    assert result.exit_code == 2
    assert sum(line.startswith("Error:") for line in result.output.splitlines()) == 4
    assert "Traceback" not in result.output


def test_check_finds_patient_in_two_splits(mimic_jpg_dir: Path) -> None:
    split_csv = mimic_jpg_dir / "mimic-cxr-2.0.0-split.csv"
    frame = pd.read_csv(split_csv, dtype=str)
    frame.loc[0, "split"] = "test"  # subject 0 is otherwise all train
    frame.to_csv(split_csv, index=False)
    report = check_data("mimic-cxr", mimic_jpg_dir)
    assert any("10000032" in p and "train and test" in p for p in report.problems), report.problems


def test_clean_check_exits_zero(demo_dir: Path) -> None:
    result = runner.invoke(app, ["data", "check", "--dataset", "demo", "--data-dir", str(demo_dir)])
    assert result.exit_code == 0, result.output
    assert "positives" in result.output and "no problems" in result.output


def test_corrupt_image_from_loader_worker(demo_dir: Path) -> None:
    index: DataIndex = load_index("demo", demo_dir)
    victim = Path(index.split("val")["path"][1])
    victim.write_bytes(b"broken")
    loader = build_loader(index, "val", img_size=32, batch_size=4, num_workers=1)
    with pytest.raises(DataError) as info:
        for _ in loader:
            pass
    message = str(info.value)
    assert message.startswith("cannot decode image") and str(victim) in message
    assert "Traceback" not in message and "\n" not in message

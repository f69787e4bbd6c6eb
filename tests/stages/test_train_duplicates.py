"""A training run logs its near-duplicate handling: the ``duplicates`` param, the groups
as ``splits/duplicate_groups.csv`` and their counts as metrics; ``search --duplicates`` reaches the
trials; a run logged before the option existed is rebuilt with ``ignore``."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from medattn import api, tracking
from medattn.config import TrainConfig, config_from_flat
from medattn.data import load_index
from medattn.data.testing import write_fake_aptos
from medattn.errors import MedattnError


@pytest.fixture
def aptos_with_copy(tmp_path: Path) -> tuple[Path, frozenset[str]]:
    """40 APTOS images; one copied over another of the same label in another split (``ignore``)."""
    root = write_fake_aptos(tmp_path / "aptos", n=40, seed=5)
    frame = load_index("aptos2019", root, duplicates="ignore").frame
    a = frame[frame["split"] == "train"].iloc[0]
    b = frame[(frame["split"] == "test") & (frame["label"] == a["label"])].iloc[0]
    shutil.copyfile(a["path"], b["path"])
    return root, frozenset((a["image_id"], b["image_id"]))


def _manifests(run_id: str) -> dict[str, set[str]]:
    return {
        s: set(
            pd.read_csv(tracking.download(run_id, f"{tracking.SPLITS_DIR}/{s}.csv", "downloads"), dtype=str)["image_id"]
        )
        for s in ("train", "val", "test")
    }


@pytest.mark.slow
def test_train_logs_policy_groups_and_counts(mlflow_store, aptos_with_copy, cli, tiny_args, train_tiny) -> None:
    root, pair = aptos_with_copy
    base = ["train", "--dataset", "aptos2019", "--data-dir", root, "--pretrained", "none", "--epochs", "1"]
    run_id = cli([*base, *tiny_args]).run_id  # --duplicates group is the default
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.params["duplicates"] == "group"
    groups = pd.read_csv(tracking.download(run_id, tracking.DUPLICATE_GROUPS, "downloads"), dtype={"image_id": str})
    assert frozenset(groups["image_id"]) == pair and groups["split"].nunique() == 1
    m = run.data.metrics
    assert (m["duplicate_groups"], m["duplicate_images"], m["duplicate_groups_crossing"]) == (1, 2, 1)
    assert m["duplicate_images_dropped"] == 0
    assert sum(pair <= ids for ids in _manifests(run_id).values()) == 1  # the pair lies in one split

    dropped = train_tiny(dataset="aptos2019", data_dir=str(root), pretrained="none", duplicates="drop")
    run = mlflow.MlflowClient().get_run(dropped.run_id)
    assert run.data.params["duplicates"] == "drop" and run.data.metrics["duplicate_images_dropped"] == 1
    assert sum(len(pair & ids) for ids in _manifests(dropped.run_id).values()) == 1  # one image of the pair kept


def test_train_and_search_options_reach_the_config(monkeypatch, cli, one_error_line) -> None:
    seen = {}

    def fake_search(cfg, **_):
        seen["search"] = cfg
        raise MedattnError("stopped by the test.")

    monkeypatch.setattr(api, "search_workers", fake_search)  # the command's one entry point, any --workers
    cli(["search", "--dataset", "demo", "--duplicates", "drop"], exit_code=2)
    assert seen["search"].train_overrides == {"duplicates": "drop"}
    cli(["search", "--dataset", "demo"], exit_code=2)
    assert seen["search"].train_overrides == {}
    res = cli(["train", "--dataset", "demo", "--duplicates", "pairs"], exit_code=2)
    one_error_line(res, "--duplicates", "pairs")


def test_runs_logged_before_the_option_rebuild_with_ignore() -> None:
    old = {k: v for k, v in TrainConfig().flat().items() if k != "duplicates"}
    assert config_from_flat(old).data.duplicates == "ignore"
    assert config_from_flat(TrainConfig().flat()).data.duplicates == "group"
    assert config_from_flat({**old, "duplicates": "drop"}).data.duplicates == "drop"

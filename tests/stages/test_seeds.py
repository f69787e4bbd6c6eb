"""``--seeds 0,1,2`` on grid and demo: every cell trained once per seed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from medattn.errors import ConfigError
from medattn.stages import demo as demo_stage
from medattn.stages import grid
from medattn.stages.demo import DemoConfig

GRID_YAML = """\
dataset: demo
img_size: 32
seed: 42
grid:
  model: [resnet50, se_resnet50]
"""


def test_grid_cells_repeat_every_cell_per_seed(tmp_path: Path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID_YAML)
    cells = grid.grid_cells(path, seeds=(0, 1, 2))
    assert [(c.model.model, c.optim.seed) for c in cells] == [
        ("resnet50", 0), ("resnet50", 1), ("resnet50", 2), ("se_resnet50", 0), ("se_resnet50", 1), ("se_resnet50", 2)
    ]  # fmt: skip
    assert [c.optim.seed for c in grid.grid_cells(path)] == [42, 42]


@pytest.mark.parametrize(("text", "seeds"), [("0,1,2", (0, 1, 2)), (" 3 ", (3,)), ("", None), (None, None)])
def test_parse_seeds(text, seeds):
    assert grid.parse_seeds(text) == seeds


@pytest.mark.parametrize(("text", "needle"), [("0,a", "comma-separated integers"), ("1,1", "twice")])
def test_parse_seeds_rejects_bad_input(text, needle):
    with pytest.raises(ConfigError, match=needle):
        grid.parse_seeds(text)


def test_demo_trains_and_tests_every_variant_per_seed_and_prints_the_verdicts(mlflow_store, tmp_path, monkeypatch):
    trained = []

    def fake_train(cfg, **kw):
        trained.append((cfg.model.model, cfg.optim.seed))
        return SimpleNamespace(
            run_id=f"t-{len(trained)}", best_epoch=0, best_metrics={}, config=cfg.flat(), model_uri=None
        )

    def fake_test(cfg, **kw):
        return SimpleNamespace(run_id=f"x-{cfg.run_id}", metrics={"test_auc": 0.9})

    compared = SimpleNamespace(run_id="c", verdicts=["SE on ResNet-50: ΔAUC +0.010 [−0.020, +0.040], p = 0.5 — x"])
    monkeypatch.setattr(demo_stage, "train", fake_train)
    monkeypatch.setattr(demo_stage, "test", fake_test)
    monkeypatch.setattr(demo_stage, "compare", lambda cfg: compared)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "labels.csv").write_text("id,label\n")  # no synthesis
    lines = []
    cfg = DemoConfig(
        data_dir=str(tmp_path / "d"), models=("resnet50", "se_resnet50"), explain_images=0, promote=False, epochs=1
    )
    res = demo_stage.demo(cfg, echo=lines.append, progress=False, seeds=(0, 1), report_out=None)
    assert trained == [("resnet50", 0), ("resnet50", 1), ("se_resnet50", 0), ("se_resnet50", 1)]
    assert list(res.table["seed"]) == [0, 1, 0, 1]
    assert res.train_runs == {"resnet50": "t-1", "se_resnet50": "t-3"}  # the first seed's runs
    assert lines[-1] == compared.verdicts[0] and res.verdicts == compared.verdicts
    assert isinstance(res.table, pd.DataFrame)

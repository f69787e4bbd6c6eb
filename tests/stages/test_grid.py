"""The ``grid`` stage: one training config per cell of a YAML grid, trained in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from medattn.errors import ConfigError
from medattn.stages import grid

GRID_YAML = """\
dataset: demo
img_size: 32
epochs: 3
head: flatten
grid:
  model: [resnet50, DeiT-T]
  perc_train: [0.5, 1.0]
"""


@pytest.fixture
def grid_file(tmp_path: Path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID_YAML)
    return path


def test_cells_are_the_product_of_the_axes(grid_file):
    cells = grid.grid_cells(grid_file, {"data_dir": "/data"})
    got = [(c.model.model, c.data.perc_train, c.model.head, c.data.low_data_regimen) for c in cells]
    assert got == [
        ("resnet50", 0.5, "flatten", True),
        ("resnet50", 1.0, "flatten", False),
        ("deit_tiny", 0.5, "pool", True),  # DeiT classifies from its CLS token: no flatten head
        ("deit_tiny", 1.0, "pool", False),
    ]
    assert {(c.data.data_dir, c.data.img_size, c.optim.epochs) for c in cells} == {("/data", 32, 3)}


def test_an_override_pins_its_axis(grid_file):
    cells = grid.grid_cells(grid_file, {"model": "resnet50", "epochs": 1, "perc_train": None})
    assert [(c.model.model, c.data.perc_train, c.optim.epochs) for c in cells] == [
        ("resnet50", 0.5, 1),
        ("resnet50", 1.0, 1),
    ]


@pytest.mark.parametrize(
    ("text", "needle"),
    [("dataset: demo\n", "has no 'grid' mapping"), ("grid:\n  model: resnet50\n", "must be a non-empty list")],
)
def test_bad_grid_files(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        grid.grid_cells(path)


def test_grid_trains_every_cell_in_order(grid_file, monkeypatch):
    trained = []
    monkeypatch.setattr(grid, "train", lambda cfg, progress=True: trained.append(cfg) or f"run-{len(trained)}")
    lines = []
    results = grid.grid(grid_file, {"data_dir": "/data"}, echo=lines.append, progress=False)
    assert results == ["run-1", "run-2", "run-3", "run-4"]
    assert [c.flat() for c in trained] == [c.flat() for c in grid.grid_cells(grid_file, {"data_dir": "/data"})]
    assert lines[0] == "[1/4] resnet50, perc_train=0.5" and lines[-1] == "[4/4] deit_tiny, perc_train=1"


def test_grid_dry_run_lists_the_cells(grid_file, cli):
    out = cli(["grid", "--config", grid_file, "--data-dir", "/data", "--dry-run"]).output.strip().splitlines()
    assert out == [
        "demo  resnet50  perc_train=0.5  epochs=3",
        "demo  resnet50  perc_train=1  epochs=3",
        "demo  deit_tiny  perc_train=0.5  epochs=3",
        "demo  deit_tiny  perc_train=1  epochs=3",
        "4 cells",
    ]

"""The ``grid`` stage: one training config per cell of a YAML grid, trained in order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from medattn import tracking
from medattn.errors import ConfigError
from medattn.stages import cells, compare, compare_paper, grid, slurm

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


def test_grid_runs_every_missing_cell_in_order(grid_file, mlflow_store, monkeypatch):
    ran = []
    monkeypatch.setattr(grid, "run_cell", lambda task: ran.append(task) or None)
    lines = []
    grid.grid(grid_file, {"data_dir": "/data"}, echo=lines.append, progress=False)
    keys = [cells.cell_key(c) for c in grid.grid_cells(grid_file, {"data_dir": "/data"})]
    assert [cells.cell_key(t.config) for t in ran] == keys
    assert {t.config.tracking.tracking_uri for t in ran} == {mlflow_store}  # pinned for other processes
    assert lines[0] == "0 of 4 cells finished."
    assert lines[1] == f"[1/4] {keys[0]}: training" and lines[4] == f"[4/4] {keys[3]}: training"
    assert keys[0].startswith("demo/resnet50/p0.5/s42/") and keys[3].startswith("demo/deit_tiny/p1/s42/")


def test_grid_dry_run_lists_the_cells(grid_file, cli):
    out = cli(["grid", "--config", grid_file, "--data-dir", "/data", "--dry-run"]).output.strip().splitlines()
    assert out == [
        "demo  resnet50  perc_train=0.5  epochs=3",
        "demo  resnet50  perc_train=1  epochs=3",
        "demo  deit_tiny  perc_train=0.5  epochs=3",
        "demo  deit_tiny  perc_train=1  epochs=3",
        "4 cells",
    ]


# ---- cells: identity, liveness, bad input ------------------------------------------------------
def test_cell_key_names_the_cell_and_digests_what_changes_the_result(grid_file):
    cell = grid.grid_cells(grid_file, {"data_dir": "/data"})[0]
    key = cells.cell_key(cell)
    assert key.startswith("demo/resnet50/p0.5/s42/") and len(key.rsplit("/", 1)[1]) == 12
    where = grid.grid_cells(
        grid_file, {"data_dir": "/elsewhere", "device": "cpu", "tracking_uri": "sqlite:///x.db", "num_workers": 3}
    )[0]
    assert cells.cell_key(where) == key  # where and how fast it runs is not part of the cell
    for change in ({"lr": 0.5}, {"epochs": 7}, {"img_size": 48}, {"class_weights": True}):
        assert cells.cell_key(grid.grid_cells(grid_file, {"data_dir": "/data", **change})[0]) != key, change
    assert cells.cell_key(grid.with_seed(cell, 3)).startswith("demo/resnet50/p0.5/s3/")
    assert cells.grid_tag(grid_file).startswith("grid.yaml@")


def test_a_running_run_is_alive_only_while_its_process_or_job_is():
    me = cells.process_tags()
    assert cells.run_alive(me, None) is True
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert cells.run_alive({**me, tracking.TAG_PID: gone.stdout.strip()}, None) is False
    reused = {**me, tracking.TAG_PID_STARTED: str(float(me[tracking.TAG_PID_STARTED]) - 100)}
    assert cells.run_alive(reused, None) is False  # same pid, another (older) process: it died
    assert cells.run_alive({**me, tracking.TAG_HOST: "another-node"}, None) is True  # cannot tell from here
    job = cells.process_tags("17_2")
    assert cells.run_alive(job, {"17_2": "RUNNING"}) is True
    assert cells.run_alive(job, {"17_3": "PENDING"}) is False  # squeue no longer lists it
    assert cells.run_alive(job, {"17_2": "RUNNING"}, own_job="17_2") is False  # this job's own earlier attempt
    assert cells.run_alive(job, None) is True  # squeue unavailable: never declared dead


@pytest.mark.parametrize(
    ("text", "minutes"), [("90", 90), ("01:30:00", 90), ("2-00:00:00", 2880), ("1-12", 2160), ("0:30", 1)]
)
def test_slurm_time_limits(text, minutes):
    assert slurm.time_minutes(text) == minutes


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--launcher", "pbs"], ["--launcher must be one of local, slurm", "'pbs'"]),
        (["--jobs", "0"], ["--jobs must be at least 1"]),
        (["--partition", "gpu", "--time", "60"], ["--partition, --time only apply to Slurm jobs", "--launcher slurm"]),
        (["--no-wait"], ["--no-wait only applies to Slurm jobs"]),
        (["--launcher", "slurm", "--slurm", "constraint"], ["--slurm takes KEY=VALUE"]),
        (["--launcher", "slurm", "--time", "soon"], ["--time 'soon' is not a Slurm time limit"]),
    ],
)
def test_bad_grid_options(grid_file, mlflow_store, cli, one_error_line, runs_in_store, args, needles):
    res = cli(["grid", "--config", grid_file, "--data-dir", "/data", *args], exit_code=2)
    one_error_line(res, *needles)
    assert runs_in_store() == {}


def test_slurm_without_sbatch_submits_nothing(
    grid_file, mlflow_store, cli, one_error_line, runs_in_store, tmp_path, monkeypatch
):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    res = cli(["grid", "--config", grid_file, "--data-dir", "/data", "--launcher", "slurm"], exit_code=2)
    one_error_line(res, "sbatch and squeue are not on PATH", "--launcher local")
    assert runs_in_store() == {} and not (tmp_path / "slurm-logs").exists()


def test_paper_table_has_mean_sd_over_seeds_and_paired_deltas():
    summary = compare_paper.seed_summary(
        [_fake_test_run(m, p, s, auc) for m, p, s, auc in [
            ("resnet50", "0.5", "r0", 0.70), ("resnet50", "0.5", "r1", 0.80), ("se_resnet50", "1.0", "r2", 0.9)
        ]],
        {"r0": "0", "r1": "1", "r2": "0"},
    )  # fmt: skip
    assert summary[["model", "perc_train", "n_seeds"]].values.tolist() == [
        ["resnet50", 0.5, 2],
        ["se_resnet50", 1.0, 1],
    ]
    assert summary["mean"].tolist() == pytest.approx([0.75, 0.9])
    assert summary["sd"].iloc[0] == pytest.approx(0.0707107, abs=1e-6)
    paired = {"demo": compare.pd.DataFrame([{
        "variant": "se_resnet50", "backbone": "resnet50", "perc_train": 1.0, "delta_auc": 0.05,
        "ci_low": 0.01, "ci_high": 0.09, "p_value": 0.01,
    }])}  # fmt: skip
    text = compare_paper.paper_markdown(summary, paired)
    assert "| demo | resnet50 | 0.750 ± 0.071 (2) |  |" in text
    assert "| demo | se_resnet50 |  | 0.900 (1) |" in text
    assert "| demo | se_resnet50 | resnet50 |  | +0.050 [+0.010, +0.090]* |" in text


def _fake_test_run(model: str, perc: str, source: str, auc: float):
    tags = {tracking.TAG_DATASET: "demo", tracking.TAG_MODEL: model, tracking.TAG_PERC_TRAIN: perc,
            tracking.TAG_SOURCE_RUN: source}  # fmt: skip
    return SimpleNamespace(
        data=SimpleNamespace(tags=tags, metrics={"test_auc": auc}), info=SimpleNamespace(run_id="t" + source)
    )


def test_a_requeued_slurm_job_runs_the_same_call_again():
    job = slurm.Requeueable(divmod)
    assert job(7, 2) == (3, 1)
    again = job.checkpoint(7, 2)  # what submitit resubmits before a time limit or a preemption
    assert again.function is job and again.args == (7, 2)

"""A grid that survives: a 2 × 2 grid (two models × two training fractions) on the demo data is
killed (``kill -9`` of its process group) while its second cell trains, then run again: the first
cell is not retrained, the second finishes in its original run from its ``last.pt``, and the store
ends with exactly one FINISHED training run (and one FINISHED test run) per cell. A third run
trains nothing. ``--jobs 2`` runs two cells at once in their own processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest

from medattn import tracking
from medattn.stages import cells, grid

pytestmark = pytest.mark.slow
WAIT_S = 240.0

GRID_YAML = """\
dataset: demo
img_size: 32
epochs: {epochs}
batch_size: 16
lr: 1.0e-3
system_metrics: false
pretrained: none
grid:
  model: [densenet121, se_densenet121]
  perc_train: [0.5, 1.0]
"""


def _grid_file(tmp_path: Path, epochs: int) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID_YAML.format(epochs=epochs))
    return path


def _runs(kind: str) -> list:
    return tracking.search_runs(None, f"tags.`{tracking.TAG_KIND}` = '{kind}'")


def _artifact(run_id: str, path: str) -> Path:
    uri = mlflow.MlflowClient().get_run(run_id).info.artifact_uri
    return Path(unquote(urlparse(uri).path)) / path


def _wait_for_checkpoint(proc: subprocess.Popen, key: str, log: Path) -> str:
    """The run of cell ``key`` once its first epoch is checkpointed and logged; its id."""
    client = mlflow.MlflowClient()
    deadline, run_id = time.monotonic() + WAIT_S, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the grid ended early:\n{log.read_text()[-3000:]}"
        if run_id is None:
            found = tracking.search_runs(None, f"tags.`{tracking.TAG_CELL}` = '{key}'")
            run_id = found[0].info.run_id if found else None
        if run_id and _artifact(run_id, tracking.LAST_CKPT).is_file():
            if client.get_metric_history(run_id, "val_loss"):
                return run_id
        time.sleep(0.05)
    pytest.fail(f"cell {key} wrote no checkpoint within {WAIT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _one_finished_run_per_cell(keys: list[str]) -> dict[str, str]:
    """Exactly one FINISHED training run per cell (and no other training run); ``{key: run id}``."""
    train = _runs("train")
    assert sorted(r.data.tags[tracking.TAG_CELL] for r in train) == sorted(keys)
    assert {r.info.status for r in train} == {"FINISHED"}
    tests = [r for r in _runs("test") if r.info.status == "FINISHED"]
    assert sorted(r.data.tags[tracking.TAG_SOURCE_RUN] for r in tests) == sorted(r.info.run_id for r in train)
    return {r.data.tags[tracking.TAG_CELL]: r.info.run_id for r in train}


def test_kill_9_mid_cell_then_grid_again_finishes_every_cell_once(mlflow_store, demo_dir, tmp_path, cli, runs_in_store):
    path = _grid_file(tmp_path, epochs=3)
    keys = [cells.cell_key(c) for c in grid.grid_cells(path, {"data_dir": str(demo_dir)})]
    args = ["grid", "--config", path, "--data-dir", demo_dir, "--quiet"]
    log = tmp_path / "killed.log"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "medattn", *map(str, args)], stdout=out, stderr=out, env=env, start_new_session=True
        )
    try:
        killed = _wait_for_checkpoint(proc, keys[1], log)
        os.killpg(proc.pid, signal.SIGKILL)  # the grid's whole process group, mid-cell
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    first = {r.data.tags[tracking.TAG_CELL]: r for r in _runs("train")}
    assert first[keys[0]].info.status == "FINISHED" and first[keys[1]].info.status == "RUNNING"
    assert set(first) == set(keys[:2])

    status = cli([*args[:-1], "--status"]).output
    assert [keys[1], "KILLED", killed] in [ln.split() for ln in status.splitlines()]  # noticed and marked
    assert "1 of 4 cells finished." in status

    out = cli(args).output
    assert "1 of 4 cells finished; skipping them." in out
    assert f"{keys[1]}: continuing its KILLED run {killed} from its last checkpoint" in out
    assert "4 of 4 cells finished." in out and "ΔAUC of each attention variant" in out
    runs = _one_finished_run_per_cell(keys)
    assert runs[keys[0]] == first[keys[0]].info.run_id  # cell 1 was not retrained
    assert runs[keys[1]] == killed  # cell 2 finished in its original run...
    resumed = mlflow.MlflowClient().get_run(killed)
    assert resumed.data.tags[tracking.TAG_RESUMED_TO] == "3"  # ...continued from its checkpoint
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(killed, "val_loss")]
    assert sorted(steps) == [0, 1, 2]  # every epoch logged once
    assert resumed.data.tags[tracking.TAG_PID] == str(os.getpid())  # the process that continued it
    assert "RUNNING" not in runs_in_store().values()

    before = runs_in_store()
    again = cli(args).output
    assert again.splitlines()[0] == "4 of 4 cells finished."
    assert runs_in_store() == before  # no new run


def test_jobs_2_trains_two_cells_at_once(mlflow_store, demo_dir, tmp_path, cli):
    path = _grid_file(tmp_path, epochs=2)
    keys = [cells.cell_key(c) for c in grid.grid_cells(path, {"data_dir": str(demo_dir)})]
    out = cli(["grid", "--config", path, "--data-dir", demo_dir, "--jobs", "2", "--quiet"]).output
    assert out.count("on 1 CPU thread: training") == 4  # two cores split between two processes
    assert "4 of 4 cells finished." in out
    runs = _one_finished_run_per_cell(keys)
    spans = [(r.info.start_time, r.info.end_time) for r in _runs("train")]
    overlapping = [(a, b) for a in spans for b in spans if a != b and a[0] < b[1] and b[0] < a[1]]
    assert overlapping, spans  # two cells trained at the same time
    pids = {mlflow.MlflowClient().get_run(r).data.tags[tracking.TAG_PID] for r in runs.values()}
    assert len(pids) == 4 and str(os.getpid()) not in pids  # each cell in a process of its own

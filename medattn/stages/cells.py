"""Grid cells with an identity: the stable key of what a cell trains, the process that trains it,
and the state of its runs in the tracking store (finished, running, dead, missing).

A cell is one training config of a grid (:func:`medattn.stages.grid.grid_cells`). Its key
(:func:`cell_key`) names the data set, model, training fraction and seed, and a digest of every
other setting that changes the result; settings about where or how fast it runs (device, tracking
URI, data folder, loader workers, experiment and run names, system metrics, checkpoint frequency,
registration) are left out, so the same cell is found again from another machine or data mount.

Every training and test run of a cell carries the tags ``medattn.cell`` and ``medattn.grid``,
and the process that runs it: ``medattn.host`` + ``medattn.pid`` (+ the process's start time) for a
local process, ``medattn.slurm_job_id`` for a Slurm job. A run is *dead* when it is FAILED or
KILLED, or RUNNING while that process is gone (the pid no longer exists or belongs to a newer
process; the Slurm job is no longer in ``squeue``); :func:`inspect_cell` marks such a RUNNING run
KILLED. A run on another host cannot be checked from here and counts as alive.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from medattn import tracking
from medattn.config import TrainConfig
from medattn.stages import slurm

#: Settings left out of a cell's digest: where and how fast it runs, not what it learns.
NOT_IN_KEY = frozenset(
    {
        "device",
        "tracking_uri",
        "data_dir",
        "num_workers",
        "experiment",
        "run_name",
        "system_metrics",
        "save_freq",
        "register",
        "resume",
        "ckpt",
    }
)

#: Cell states, in the order the status table explains them.
FINISHED = "FINISHED"  # trained, and tested when the grid tests
TRAINED = "TRAINED"  # trained, its test still to run
RUNNING = "RUNNING"  # a live process (or Slurm job) trains or tests it
PENDING = "PENDING"  # a Slurm job for it is queued, no run yet
KILLED = "KILLED"  # its run died: continued from its last checkpoint by the next grid
FAILED = "FAILED"  # its run failed: continued (and probably failing the same way) by the next grid
MISSING = "MISSING"  # no run yet


def cell_key(cfg: TrainConfig) -> str:
    """``<dataset>/<model>/p<fraction>/s<seed>/<digest>``: the stable identity of one grid cell.

    The digest (12 hex digits of SHA-256) covers every setting of :meth:`TrainConfig.flat` and the
    effective ``pretrained`` except :data:`NOT_IN_KEY`.
    """
    flat = {**cfg.flat(), "pretrained": cfg.pretrained}
    kept = {k: v for k, v in sorted(flat.items()) if k not in NOT_IN_KEY}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{cfg.data.dataset}/{cfg.model.model}/p{cfg.data.perc_train:g}/s{cfg.optim.seed}/{digest}"


def grid_tag(config_file: str | Path) -> str:
    """``<file name>@<12 hex digits of its text's SHA-256>``: which grid file (and version) a run came from."""
    path = Path(config_file)
    return f"{path.name}@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def process_tags(slurm_job: str | None = None) -> dict[str, str]:
    """The tags naming the process that runs a cell now (:func:`run_alive` reads them back)."""
    if slurm_job:
        return {tracking.TAG_SLURM_JOB: slurm_job, tracking.TAG_HOST: socket.gethostname()}
    me = psutil.Process()
    return {
        tracking.TAG_HOST: socket.gethostname(),
        tracking.TAG_PID: str(me.pid),
        tracking.TAG_PID_STARTED: f"{me.create_time():.2f}",
    }


def run_alive(tags: Mapping[str, str], queued: Mapping[str, str] | None, own_job: str | None = None) -> bool:
    """Whether the process a RUNNING run records is still there.

    Args:
        tags: the run's tags (:func:`process_tags`).
        queued: ``squeue``'s jobs (:func:`medattn.stages.slurm.queued_jobs`); ``None``: unknown.
        own_job: this process's Slurm job: a run recorded by it is a previous attempt of this very
            job (requeued after a time limit or preemption), so it is dead.
    """
    job = tags.get(tracking.TAG_SLURM_JOB)
    if job:
        if own_job is not None and job == own_job:
            return False
        alive = slurm.job_alive(job, queued)
        return True if alive is None else alive
    host, pid = tags.get(tracking.TAG_HOST), tags.get(tracking.TAG_PID)
    if not pid or host != socket.gethostname():
        return True  # another machine's process (or an untagged run): not ours to declare dead
    try:
        started = psutil.Process(int(pid)).create_time()
    except (psutil.NoSuchProcess, ValueError):
        return False
    recorded = tags.get(tracking.TAG_PID_STARTED)
    return recorded is None or abs(float(recorded) - started) < 1.0  # else the pid was reused


@dataclass(frozen=True)
class CellStatus:
    """Where one cell stands.

    Attributes:
        key: :func:`cell_key`.
        config: the cell's training config.
        state: one of FINISHED, TRAINED, RUNNING, PENDING, KILLED, FAILED, MISSING.
        run_id: its training run (the one to continue when dead); ``None`` when missing.
        test_run_id: its finished test run.
        test_auc: that run's ``test_auc``.
        job: the Slurm job that trains it (running or queued).
    """

    key: str
    config: TrainConfig
    state: str
    run_id: str | None = None
    test_run_id: str | None = None
    test_auc: float = math.nan
    job: str | None = None

    @property
    def done(self) -> bool:
        """Nothing left to do for this cell."""
        return self.state == FINISHED

    @property
    def busy(self) -> bool:
        """Another process or job is working on it: not to be started again."""
        return self.state in (RUNNING, PENDING)


def _runs(filter_string: str) -> list[Any]:
    return tracking.search_runs(None, filter_string)


def _kill_dead(run: Any, queued: Mapping[str, str] | None, own_job: str | None) -> Any:
    """A RUNNING run whose process is gone ends KILLED; returns the run's status now."""
    status = run.info.status
    if status == "RUNNING" and not run_alive(run.data.tags, queued, own_job):
        tracking.set_terminated(run.info.run_id, "KILLED")
        return "KILLED"
    return status


def inspect_cell(
    cfg: TrainConfig,
    *,
    test: bool,
    queued: Mapping[str, str] | None,
    own_job: str | None = None,
    pending: Mapping[str, str] | None = None,
) -> CellStatus:
    """The state of one cell from its runs; RUNNING runs whose process is gone are marked KILLED.

    Args:
        cfg: the cell's config.
        test: a cell is finished only once tested.
        queued: ``squeue``'s jobs (``None`` outside Slurm or when it cannot be asked).
        own_job: the Slurm job asking (its own earlier attempt counts as dead).
        pending: ``{cell key: Slurm job id}`` of jobs submitted for cells (queued ones make the cell PENDING).
    """
    key = cell_key(cfg)
    cell = f"tags.`{tracking.TAG_CELL}` = '{key}'"
    train_runs = _runs(f"{cell} and tags.`{tracking.TAG_KIND}` = 'train'")  # newest first
    statuses = {r.info.run_id: _kill_dead(r, queued, own_job) for r in train_runs}
    finished = [r for r in train_runs if statuses[r.info.run_id] == "FINISHED"]
    base = CellStatus(key, cfg, MISSING)
    if finished:
        run = finished[-1]  # the first one to finish is the cell's (a duplicate from a race is ignored)
        tested = _test_status(run.info.run_id, queued, own_job)
        if tested is not None and tested.state == FINISHED:
            return replace(tested, key=key, config=cfg, run_id=run.info.run_id)
        if tested is not None and tested.state == RUNNING:
            return replace(tested, key=key, config=cfg, run_id=run.info.run_id)
        return replace(base, state=TRAINED if test else FINISHED, run_id=run.info.run_id)
    live = [r for r in train_runs if statuses[r.info.run_id] == "RUNNING"]
    if live:
        return replace(
            base, state=RUNNING, run_id=live[0].info.run_id, job=live[0].data.tags.get(tracking.TAG_SLURM_JOB)
        )
    if train_runs:  # dead: the newest is continued
        run = train_runs[0]
        return replace(base, state=statuses[run.info.run_id], run_id=run.info.run_id)
    job = (pending or {}).get(key)
    if job and slurm.job_alive(job, queued) and job != own_job:
        return replace(base, state=PENDING, job=job)
    return base


def _test_status(train_run_id: str, queued, own_job) -> CellStatus | None:
    """The cell's test: FINISHED (with its AUC), RUNNING, or ``None`` (none, or only dead ones: marked KILLED)."""
    runs = _runs(
        f"tags.`{tracking.TAG_SOURCE_RUN}` = '{train_run_id}' and tags.`{tracking.TAG_KIND}` = 'test' "
        f"and tags.`{tracking.TAG_SPLIT}` = 'test'"
    )
    statuses = {r.info.run_id: _kill_dead(r, queued, own_job) for r in runs}
    done = [r for r in runs if statuses[r.info.run_id] == "FINISHED"]
    if done:
        run = done[0]
        auc = run.data.metrics.get("test_auc", math.nan)
        return CellStatus("", None, FINISHED, test_run_id=run.info.run_id, test_auc=auc)  # type: ignore[arg-type]
    if any(s == "RUNNING" for s in statuses.values()):
        return CellStatus("", None, RUNNING)  # type: ignore[arg-type]
    return None


def status_rows(cells: list[CellStatus]) -> list[dict[str, str]]:
    """The status table: cell, state, run id, test AUC (empty when untested)."""
    return [
        {
            "cell": c.key,
            "state": c.state + (f" (job {c.job})" if c.job and c.busy else ""),
            "run": c.run_id or "",
            "test_auc": "" if not math.isfinite(c.test_auc) else f"{c.test_auc:.3f}",
        }
        for c in cells
    ]


def format_table(rows: list[dict[str, str]]) -> str:
    """Rows of equal keys as aligned plain-text columns (header first)."""
    if not rows:
        return ""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols).rstrip()]
    lines += ["  ".join(r[c].ljust(width[c]) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)


def cpu_share(jobs: int) -> int:
    """Threads for each of ``jobs`` processes sharing this machine's cores (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))

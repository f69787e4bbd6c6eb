"""The ``grid`` stage: every cell of an experiment grid (models × training fractions [× seeds]) trained
and tested, resumably, one at a time, several at once, or as Slurm jobs; and the configs of
``train --seeds`` (one training run per seed, :func:`seed_configs`).

A grid is a plan over the tracking store, not a process: each run carries its cell's key
(:mod:`medattn.stages.cells`), so running the same grid again skips finished cells, continues a
dead cell in its own run from its ``last.pt`` and trains the missing ones. A cell is finished once
its training run is FINISHED and (with ``test``, the default) a test run of it is FINISHED.

Launchers:

* ``local`` with ``jobs=1``: the cells in turn, in this process;
* ``local`` with ``jobs=N``: N cells at once, each in a fresh process (``spawn``): with GPUs, each
  process sees one (``CUDA_VISIBLE_DEVICES``, round robin over the visible ones); on CPU the cores
  are split between them (``torch.set_num_threads``);
* ``slurm``: one Slurm job per cell through submitit, as one job array (``jobs`` caps how many run
  at once); :mod:`medattn.stages.slurm`. Submitted jobs are written to a small ledger next to
  submitit's logs (``<slurm-logs>/<grid file>.jobs.json``), so a queued cell is not submitted twice.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import multiprocessing
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medattn import tracking
from medattn.config import TrainConfig, build_train_config, load_yaml, parse_seeds, zero_init_applies
from medattn.errors import ConfigError, MedattnError
from medattn.models import canonical_model_name
from medattn.stages import cells as cells_mod
from medattn.stages import slurm
from medattn.stages.cells import CellStatus, grid_tag, inspect_cell
from medattn.stages.compare_paper import paper_table
from medattn.stages.evaluate import TestConfig
from medattn.stages.evaluate import test as test_stage
from medattn.stages.train import train


def with_seed(cfg: TrainConfig, seed: int) -> TrainConfig:
    """``cfg`` trained with another seed (everything else equal)."""
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, seed=int(seed)))


def seed_configs(cfg: TrainConfig, seeds: Sequence[int] | None) -> list[TrainConfig]:
    """The configs ``train --seeds 0,1,2`` trains, one run each: ``cfg`` once per seed.

    Args:
        cfg: the resolved training config; the seeds replace its seed (:func:`with_seed`).
        seeds: the seeds (:func:`~medattn.config.parse_seeds`); ``None`` or empty: ``[cfg]``.

    Raises:
        ConfigError: seeds with ``--resume`` (which continues one run with its seed), or several
            seeds under ``mlflow run``, which gives the process one run to log into.
    """
    seeds = parse_seeds(seeds)
    if not seeds:
        return [cfg]
    if cfg.resume:
        raise ConfigError("--resume continues one run with its own seed; leave --seeds out.")
    if len(seeds) > 1 and tracking.project_run_id():
        raise ConfigError(
            "--seeds with several seeds makes one run per seed, but `mlflow run` gives this process one run; "
            "give one seed per `mlflow run -e train`, or use the main (demo) entry point's seeds parameter."
        )
    return [with_seed(cfg, s) for s in seeds]


def grid_cells(
    config_file: str | Path, overrides: Mapping[str, Any] | None = None, *, seeds: Sequence[int] | None = None
) -> list[TrainConfig]:
    """The training configs of every cell of a YAML file's ``grid`` (model × perc_train × ...).

    Args:
        config_file: an ``experiments/*.yaml`` with a ``grid`` mapping of option → list of values.
        overrides: options applied to every cell (e.g. ``data_dir``); a gridded option given here
            pins that axis to the one value.
        seeds: train every cell once per seed (``--seeds 0,1,2``), seeds innermost;
            ``None``: the config's one seed.

    Raises:
        ConfigError: the file has no ``grid`` or a grid entry is not a non-empty list.
    """
    seeds = parse_seeds(seeds)
    raw = load_yaml(config_file)
    grid = raw.get("grid")
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"config file {str(config_file)!r} has no 'grid' mapping of option → list of values.")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    axes: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid entry {key!r} in {str(config_file)!r} must be a non-empty list.")
        axes[key.replace("-", "_")] = [overrides[key]] if key in overrides else values
    cells = []
    for combo in itertools.product(*axes.values()):
        cell = dict(zip(axes, combo, strict=True))
        model = cell.get("model", overrides.get("model", raw.get("model", "")))
        if canonical_model_name(model) == "deit_tiny":
            # the paper's flatten head belongs to the CNNs; DeiT classifies from its CLS token
            cell["head"] = "pool"
        if not zero_init_applies(canonical_model_name(model)):
            cell["zero_init_residual"] = False  # the option is for the ResNets among the cells
        cfg = build_train_config({**overrides, **cell}, config_file=config_file)
        cells += [with_seed(cfg, s) for s in seeds] if seeds else [cfg]
    return cells


# =============================================================================================
# options and results
# =============================================================================================
LAUNCHERS = ("local", "slurm")


@dataclass(frozen=True)
class GridOptions:
    """How ``medattn grid`` runs the cells.

    Attributes:
        launcher: ``local`` (processes on this machine) or ``slurm`` (jobs through submitit).
        jobs: cells at once: local processes (default 1), or the Slurm array's concurrency limit
            (default: no limit).
        slurm: the jobs' Slurm options (only with ``launcher="slurm"``).
        test: test each trained cell on the test split (a cell is finished once tested).
        wait: Slurm: wait for the jobs and report them (else return after submitting).
        status: only print where each cell stands (dead runs are still marked KILLED).
    """

    launcher: str = "local"
    jobs: int | None = None
    slurm: slurm.SlurmOptions = dataclasses.field(default_factory=slurm.SlurmOptions)
    test: bool = True
    wait: bool = True
    status: bool = False

    def __post_init__(self) -> None:
        """Bad combinations as one sentence each, before anything runs or is submitted."""
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}.")
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1 (cells at once), got {self.jobs}.")
        if self.launcher != "slurm":
            given = self.slurm.given() + ([] if self.wait else ["--no-wait"])
            if given:
                raise ConfigError(
                    f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} to Slurm jobs; "
                    "add --launcher slurm or leave them out."
                )


@dataclass(frozen=True)
class GridResult:
    """Outcome of :func:`grid`.

    Attributes:
        cells: every cell's state at the end (:class:`~medattn.stages.cells.CellStatus`), in grid order.
        tracking_uri: the store.
        jobs: Slurm job ids submitted by this call.
        errors: one sentence per cell that failed in this call.
        paper: the paper-style tables (:func:`medattn.stages.compare_paper.paper_markdown`) once every
            cell is finished and tested, else empty.
    """

    cells: list[CellStatus]
    tracking_uri: str
    jobs: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    paper: str = ""

    @property
    def n_finished(self) -> int:
        """Cells finished."""
        return sum(c.done for c in self.cells)

    def table(self) -> str:
        """The status table (cell, state, run id, test AUC)."""
        return cells_mod.format_table(cells_mod.status_rows(self.cells))


class GridIncomplete(MedattnError):
    """Some cells failed: the grid says which, and the next run of the same command continues them."""

    exit_code = 1


# =============================================================================================
# one cell (in this process, a child process or a Slurm job)
# =============================================================================================
@dataclass(frozen=True)
class CellTask:
    """What a process (or Slurm job) needs to run one cell; pickles."""

    config: TrainConfig
    grid: str
    test: bool
    launcher: str = "local"
    progress: bool = False
    cuda: str | None = None
    threads: int | None = None


def run_cell(task: CellTask) -> CellStatus:
    """Train (or continue) and test one cell, then return its state.

    The cell's state is read again first, so a cell another process finished meanwhile is left
    alone, a dead run is continued in place (its process tags replaced by this process's first),
    and a requeued Slurm job continues its own earlier attempt.
    """
    if task.cuda is not None:  # before CUDA is first used in this fresh process
        os.environ["CUDA_VISIBLE_DEVICES"] = task.cuda
    if task.threads:
        torch.set_num_threads(task.threads)
    cfg = task.config
    tracking.connect(cfg.tracking.tracking_uri)
    own_job = slurm.current_job_id() if task.launcher == "slurm" else None
    queued = slurm.queued_jobs() if own_job else None
    status = inspect_cell(cfg, test=task.test, queued=queued, own_job=own_job)
    if status.done or status.state == cells_mod.RUNNING:
        return status
    tags = {tracking.TAG_CELL: status.key, tracking.TAG_GRID: task.grid, **cells_mod.process_tags(own_job)}
    run_id = status.run_id
    if status.state != cells_mod.TRAINED:
        dead = status.run_id if status.state in (cells_mod.KILLED, cells_mod.FAILED) else None
        if dead:
            tracking.set_tags(tags, run_id=dead)
        run_id = train(cfg, extra_tags=tags, continue_run=dead, progress=task.progress).run_id
    if task.test:
        test_cfg = TestConfig(
            run_id=run_id,
            device=cfg.device,
            tracking_uri=cfg.tracking.tracking_uri,
            data_dir=cfg.data.data_dir,
            seed=cfg.optim.seed,
        )
        test_stage(test_cfg, extra_tags=tags, progress=task.progress)
    return inspect_cell(cfg, test=task.test, queued=None)


def _action(status: CellStatus) -> str:
    if status.state == cells_mod.TRAINED:
        return f"testing run {status.run_id}"
    if status.state in (cells_mod.KILLED, cells_mod.FAILED):
        return f"continuing its {status.state} run {status.run_id} from its last checkpoint"
    return "training"


# =============================================================================================
# the grid
# =============================================================================================
def _pinned(cfg: TrainConfig, uri: str) -> TrainConfig:
    """The cell as another process runs it: this store's URI and an absolute data folder."""
    return dataclasses.replace(
        cfg,
        tracking=dataclasses.replace(cfg.tracking, tracking_uri=uri),
        data=dataclasses.replace(cfg.data, data_dir=str(Path(cfg.data.data_dir).expanduser().resolve())),
    )


def ledger_path(config_file: str | Path, opts: slurm.SlurmOptions) -> Path:
    """``<slurm-logs>/<grid file name>.jobs.json``: the Slurm job submitted for each cell key."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(config_file).name)
    return Path(opts.log_folder).expanduser().resolve() / f"{name}.jobs.json"


def _read_ledger(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_ledger(path: Path, jobs: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ledger-")  # replaced atomically: never half-written
    with os.fdopen(fd, "w") as fh:
        json.dump({**_read_ledger(path), **jobs}, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def visible_gpus(device: str) -> list[str]:
    """The GPUs a local cell process may be given (``CUDA_VISIBLE_DEVICES`` order); none for a CPU device."""
    if device.startswith("cpu") or not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        return [g.strip() for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _store_note(uri: str) -> str | None:
    if uri.startswith("sqlite:"):
        return (
            f"The tracking store {uri} is a sqlite file, which works for Slurm jobs only when they all run on "
            "this host; on a real cluster use the team's MLflow server (docs/grid.md, --tracking-uri)."
        )
    return None


def grid(
    config_file: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    seeds: Sequence[int] | None = None,
    options: GridOptions | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> GridResult:
    """Run (or continue, or report) every cell of a grid file (:func:`grid_cells`).

    Finished cells are skipped (one line says how many), cells whose run died are continued in that
    run from its last checkpoint, missing cells are trained, and each trained cell is tested
    (``options.test``). The end prints the status table and, once every cell is finished and
    tested, the paper-style tables (:func:`medattn.stages.compare_paper.paper_markdown`).

    Raises:
        ConfigError: bad options or grid file, or no ``sbatch`` for the Slurm launcher (nothing runs).
        GridIncomplete: cells failed in this call (their runs are FAILED; the same command continues them).
    """
    options = options or GridOptions()
    if options.launcher == "slurm" and not options.status:
        slurm.require_sbatch()
    configs = grid_cells(config_file, overrides, seeds=seeds)
    uri = tracking.connect((overrides or {}).get("tracking_uri"))
    configs = [_pinned(c, uri) for c in configs]
    tag = grid_tag(config_file)
    ledger = ledger_path(config_file, options.slurm)
    # squeue only where Slurm jobs may be involved (a controller that does not answer costs its timeout)
    queued = slurm.queued_jobs() if options.launcher == "slurm" or ledger.exists() else None
    statuses = [inspect_cell(c, test=options.test, queued=queued, pending=_read_ledger(ledger)) for c in configs]
    if options.status:
        return _finish(statuses, uri, echo, options, [], [])
    todo = [s for s in statuses if not s.done and not s.busy]
    finished, busy = sum(s.done for s in statuses), [s for s in statuses if s.busy]
    echo(f"{finished} of {len(statuses)} cells finished" + ("; skipping them." if finished and todo else "."))
    if busy:
        echo(
            f"{len(busy)} cell{'s are' if len(busy) > 1 else ' is'} running or queued elsewhere; left to their process or job."
        )
    jobs: list[str] = []
    errors: list[str] = []
    if todo and options.launcher == "slurm":
        note = _store_note(uri)
        if note:
            echo(note)
        jobs, errors = _run_slurm(todo, tag, options, ledger, echo)
    elif todo and (options.jobs or 1) > 1:
        errors = _run_pool(todo, tag, options, echo)
    elif todo:
        errors = _run_here(todo, tag, options, echo, progress)
    queued = slurm.queued_jobs() if jobs else queued
    final = [inspect_cell(c, test=options.test, queued=queued, pending=_read_ledger(ledger)) for c in configs]
    if options.launcher == "slurm" and options.wait and any(s.busy for s in final):
        final = _wait_for_busy(final, configs, options, ledger, echo)
    return _finish(final, uri, echo, options, jobs, errors)


def _wait_for_busy(final, configs, options: GridOptions, ledger: Path, echo) -> list[CellStatus]:
    """Slurm: wait for the cells that jobs of an earlier ``grid`` call are running or queueing."""
    busy = sum(s.busy for s in final)
    echo(f"waiting for {busy} cell{'s' if busy != 1 else ''} that earlier Slurm jobs run or queue.")
    while any(s.busy for s in final):
        time.sleep(slurm.POLL_S)
        queued = slurm.queued_jobs()
        final = [inspect_cell(c, test=options.test, queued=queued, pending=_read_ledger(ledger)) for c in configs]
    return final


def _finish(statuses, uri, echo, options: GridOptions, jobs, errors) -> GridResult:
    result = GridResult(statuses, uri, jobs, errors)
    echo(result.table())
    echo(f"{result.n_finished} of {len(statuses)} cells finished.")
    if options.test and statuses and result.n_finished == len(statuses):
        runs = [tracking.get_run(s.test_run_id) for s in statuses if s.test_run_id]
        with tempfile.TemporaryDirectory(prefix="medattn-grid-") as tmp, tracking.quiet_artifact_downloads():
            paper = paper_table(runs, Path(tmp))
        if paper:
            echo("")
            echo(paper)
        result = dataclasses.replace(result, paper=paper)
    if errors:
        raise GridIncomplete(
            f"{len(errors)} of {len(statuses)} cells failed ({errors[0]}"
            + (f"; and {len(errors) - 1} more" if len(errors) > 1 else "")
            + "); run the same grid command again to continue them."
        )
    return result


def _task(status: CellStatus, tag: str, options: GridOptions, **kw: Any) -> CellTask:
    return CellTask(config=status.config, grid=tag, test=options.test, launcher=options.launcher, **kw)


def _run_here(todo: list[CellStatus], tag: str, options: GridOptions, echo, progress: bool) -> list[str]:
    """One cell after another in this process (a failed cell does not stop the others)."""
    errors = []
    for i, status in enumerate(todo):
        echo(f"[{i + 1}/{len(todo)}] {status.key}: {_action(status)}")
        try:
            run_cell(_task(status, tag, options, progress=progress))
        except Exception as exc:  # the run ended FAILED; the next grid continues it
            errors.append(_failure(status, exc))
            echo(f"[{i + 1}/{len(todo)}] {status.key}: failed: {errors[-1]}")
    return errors


def _failure(status: CellStatus, exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{status.key}: {text[:200]}"


def _run_pool(todo: list[CellStatus], tag: str, options: GridOptions, echo) -> list[str]:
    """``options.jobs`` cells at once, each in a fresh process with its own GPU or share of the cores."""
    jobs = int(options.jobs or 1)
    gpus = visible_gpus(todo[0].config.device)
    threads = None if gpus else cells_mod.cpu_share(jobs)
    free, waiting, running, errors, done = list(range(jobs)), list(todo), {}, [], 0
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or MLflow threads
    pools: dict[concurrent.futures.Future, concurrent.futures.ProcessPoolExecutor] = {}
    try:
        while waiting or running:
            while waiting and free:
                slot, status = free.pop(0), waiting.pop(0)
                cuda = gpus[slot % len(gpus)] if gpus else None
                # a fresh process per cell (its own CUDA_VISIBLE_DEVICES before CUDA starts)
                pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
                fut = pool.submit(run_cell, _task(status, tag, options, cuda=cuda, threads=threads))
                running[fut], pools[fut] = (slot, status), pool
                where = (
                    f" on GPU {cuda}" if cuda is not None else f" on {threads} CPU thread{'s' if threads != 1 else ''}"
                )
                echo(f"started {status.key}{where}: {_action(status)}")
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in finished:
                slot, status = running.pop(fut)
                pools.pop(fut).shutdown(wait=True)
                free.append(slot)
                done += 1
                try:
                    end = fut.result()
                    echo(f"[{done}/{len(todo)}] {status.key}: {end.state} (run {end.run_id})")
                except Exception as exc:  # noqa: BLE001 - reported per cell; the next grid continues it
                    errors.append(_failure(status, exc))
                    echo(f"[{done}/{len(todo)}] {status.key}: failed: {errors[-1]}")
    finally:
        for pool in pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
    return errors


def _run_slurm(
    todo: list[CellStatus], tag: str, options: GridOptions, ledger: Path, echo
) -> tuple[list[str], list[str]]:
    """One Slurm job per cell (one array); wait for them unless ``options.wait`` is off."""
    opts = options.slurm
    tasks = [_task(s, tag, options) for s in todo]
    jobs = slurm.submit_array(run_cell, tasks, opts, name="medattn-grid", concurrency=options.jobs)
    ids = [str(j.job_id) for j in jobs]
    _write_ledger(ledger, {s.key: j for s, j in zip(todo, ids, strict=True)})
    limit = f", at most {options.jobs} at once" if options.jobs else ""
    echo(
        f"submitted {len(jobs)} cell{'s' if len(jobs) != 1 else ''} as Slurm job array {ids[0].split('_')[0]}{limit}; "
        f"job logs under {Path(opts.log_folder).expanduser().resolve()}/<job id>/"
    )
    if not options.wait:
        echo("not waiting (--no-wait): follow the cells with the same grid command and --status.")
        return ids, []
    errors: list[str] = []
    count = iter(range(1, len(jobs) + 1))

    def on_end(i: int, end: slurm.JobEnd) -> None:
        n = next(count)
        if end.error is None:
            echo(f"[{n}/{len(jobs)}] {todo[i].key}: {end.result.state} (run {end.result.run_id}, job {end.job_id})")
        else:
            errors.append(f"{todo[i].key}: {end.error}")
            echo(f"[{n}/{len(jobs)}] {todo[i].key}: failed: {end.error}")

    slurm.wait(jobs, on_end=on_end)
    return ids, errors

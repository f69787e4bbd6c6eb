"""Slurm through submitit: the options of a cell's job, submission as one job array, and job states
from ``squeue``.

submitit (facebookincubator/submitit) writes the job script, pickles the call, submits it with
``sbatch``, requeues a job that reaches its time limit or is preempted (its callable is
:class:`Requeueable`: submitit checkpoints and resubmits it with the same arguments) and reads the
result back. What it does not do without Slurm accounting is follow job states: its watcher calls
``sacct``, which fails on a cluster without ``slurmdbd`` and logs a warning on every poll. So the
states here come from one ``squeue`` call per poll (:func:`queued_jobs`), and submitit's own
logging is quieted while medattn submits and waits (:func:`quiet_submitit`).

submitit is an optional dependency (``pip install 'medattn[cluster]'``); it is imported only when a
Slurm launcher is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medattn.errors import ConfigError, MedattnError

#: ``--slurm-logs`` default: submitit's folder (job scripts, pickled calls, stdout/stderr per job),
#: relative to the working directory, which every node must see; ``%j`` is the job id.
DEFAULT_LOG_FOLDER = "slurm-logs"
#: Seconds between two ``squeue`` polls while waiting for jobs.
POLL_S = 5.0
#: Slurm states of a job that is still queued or running (everything else has ended).
LIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)


@dataclass(frozen=True)
class SlurmOptions:
    """What every job of a grid cell (or search worker) asks Slurm for.

    Attributes:
        partition: ``--partition`` (``None``: the cluster's default).
        gpus_per_cell: GPUs of one job (``--gpus-per-node``).
        cpus_per_cell: CPUs of one job (``--cpus-per-task``; ``None``: Slurm's default).
        mem: memory of one job, Slurm's spelling (``16G``); ``None``: Slurm's default.
        time: time limit (``MINUTES``, ``HH:MM:SS`` or ``D-HH:MM:SS``); ``None``: the partition's.
        account: ``--account``.
        extra: any other sbatch option as ``(key, value)``, e.g. ``("constraint", "a100")``.
        log_folder: submitit's folder; ``%j`` is replaced by the job id.
    """

    partition: str | None = None
    gpus_per_cell: int = 0
    cpus_per_cell: int | None = None
    mem: str | None = None
    time: str | None = None
    account: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    log_folder: str = DEFAULT_LOG_FOLDER

    def __post_init__(self) -> None:
        """Check ranges and the time limit's spelling (one sentence per mistake)."""
        if self.gpus_per_cell < 0:
            raise ConfigError(f"--gpus-per-cell must be 0 or more, got {self.gpus_per_cell}.")
        if self.cpus_per_cell is not None and self.cpus_per_cell < 1:
            raise ConfigError(f"--cpus-per-cell must be at least 1, got {self.cpus_per_cell}.")
        if self.time is not None:
            time_minutes(self.time)

    def given(self) -> list[str]:
        """The options set away from their defaults, spelled as on the command line."""
        names = {
            "partition": "--partition",
            "gpus_per_cell": "--gpus-per-cell",
            "cpus_per_cell": "--cpus-per-cell",
            "mem": "--mem",
            "time": "--time",
            "account": "--account",
            "extra": "--slurm",
            "log_folder": "--slurm-logs",
        }
        default = SlurmOptions()
        return [flag for name, flag in names.items() if getattr(self, name) != getattr(default, name)]


def parse_extra(items: Sequence[str] | None) -> tuple[tuple[str, str], ...]:
    """``--slurm KEY=VALUE`` (repeatable) → ``((key, value), ...)``.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    out = []
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(f"--slurm takes KEY=VALUE (an sbatch option without its dashes), got {item!r}.")
        out.append((key, value.strip()))
    return tuple(out)


def time_minutes(text: str) -> int:
    """A Slurm time limit in whole minutes (at least 1): ``90``, ``01:30:00``, ``2-00:00:00``, ``30:00``.

    Raises:
        ConfigError: another spelling.
    """
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"--time {text!r} is not a Slurm time limit; give MINUTES, HH:MM:SS or D-HH:MM:SS.")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if b is None:  # MINUTES (or D-HH)
        minutes = (days or 0) * 1440 + (a * 60 if days is not None else a)
    elif c is None:  # MM:SS, or D-HH:MM
        minutes = (days * 1440 + a * 60 + b) if days is not None else a + (1 if b else 0)
    else:  # HH:MM:SS
        minutes = (days or 0) * 1440 + a * 60 + b + (1 if c else 0)
    return max(1, minutes)


def require_sbatch() -> None:
    """Check that Slurm's client commands and submitit are here before anything is submitted.

    Raises:
        ConfigError: no ``sbatch``/``squeue`` on PATH, or submitit not installed.
    """
    missing = [cmd for cmd in ("sbatch", "squeue") if shutil.which(cmd) is None]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on PATH, so nothing can be "
            "submitted to Slurm; run on a Slurm login node or use --launcher local."
        )
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the Slurm launcher needs submitit; install it with: pip install 'medattn[cluster]'."
        ) from None


@contextlib.contextmanager
def quiet_submitit() -> Iterator[None]:
    """submitit's logger and warnings silenced (its ``sacct`` warning on every poll, without accounting)."""
    log = logging.getLogger("submitit")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def queued_jobs() -> dict[str, str] | None:
    """Every job Slurm still knows, ``{job id: state}`` (array tasks as ``<job>_<index>``), from one
    ``squeue`` call; ``None`` when ``squeue`` is missing or fails (the controller is unreachable), so
    that an outage never makes a live job look gone."""
    if shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(
            ["squeue", "--noheader", "--array", "--format=%i|%T"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    jobs = {}
    for line in out.splitlines():
        job, _, state = line.strip().partition("|")
        if job:
            jobs[job] = state.strip().upper()
    return jobs


def job_alive(job_id: str, queued: Mapping[str, str] | None) -> bool | None:
    """Whether Slurm still runs (or queues) ``job_id``; ``None``: cannot tell (``queued`` is ``None``)."""
    if queued is None:
        return None
    return queued.get(job_id) in LIVE_STATES


def current_job_id() -> str | None:
    """This process's Slurm job id (``<job>_<index>`` for an array task), or ``None`` outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class Requeueable:
    """A call that submitit requeues when its job reaches its time limit or is preempted.

    submitit signals the job before Slurm stops it, calls :meth:`checkpoint` and requeues the job;
    the call then runs again with the same arguments. The calls medattn submits find their own work
    again (a grid cell continues its run from ``last.pt``; a search worker's trial is retried by the
    study), so resubmitting the arguments unchanged is the whole checkpoint.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        """Wrap ``fn`` (a module-level function, so that it pickles)."""
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the call."""
        return self.fn(*args, **kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's hook before a requeue: resubmit the same call."""
        import submitit  # optional (the cluster extra): only the Slurm launcher needs it

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def executor(opts: SlurmOptions, *, name: str, concurrency: int | None):
    """A submitit Slurm executor for ``opts``; ``concurrency`` caps the running tasks of an array."""
    import submitit  # optional (the cluster extra): only the Slurm launcher needs it

    params: dict[str, Any] = {
        "name": name,
        "slurm_array_parallelism": concurrency or 256,
        "slurm_additional_parameters": dict(opts.extra),
    }
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.gpus_per_cell:
        params["gpus_per_node"] = opts.gpus_per_cell
    if opts.cpus_per_cell:
        params["cpus_per_task"] = opts.cpus_per_cell
    if opts.mem:
        params["slurm_mem"] = opts.mem
    if opts.time:
        params["timeout_min"] = time_minutes(opts.time)
    if opts.account:
        params["slurm_account"] = opts.account
    folder = Path(opts.log_folder).expanduser().resolve() / "%j"
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(**params)
    return ex


def submit_array(
    fn: Callable[..., Any], args: Sequence[Any], opts: SlurmOptions, *, name: str, concurrency: int | None
) -> list[Any]:
    """Submit ``fn(a)`` for every ``a`` in ``args`` as one job array; the submitit jobs, in order.

    Raises:
        MedattnError: ``sbatch`` refused the array (its message, shortened to one sentence).
    """
    if not args:
        return []
    ex = executor(opts, name=name, concurrency=concurrency)
    with quiet_submitit():
        try:
            return list(ex.map_array(Requeueable(fn), list(args)))
        except Exception as exc:  # submitit raises its own FailedJobError / subprocess errors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise MedattnError(f"sbatch refused the jobs: {first[:200]}") from None


def job_log(job: Any) -> str:
    """The stderr file of a submitit job (where a failed job's traceback is)."""
    return str(job.paths.stderr)


@dataclass(frozen=True)
class JobEnd:
    """How one submitted job ended: its result, or why there is none."""

    job_id: str
    result: Any = None
    error: str | None = None


def wait(
    jobs: Sequence[Any],
    *,
    on_end: Callable[[int, JobEnd], None] | None = None,
    poll_s: float = POLL_S,
) -> list[JobEnd]:
    """Wait until every job has ended; ``on_end(i, end)`` as each one does.

    A job has ended when its result file exists, or when ``squeue`` no longer lists it (cancelled,
    killed, failed before it could write a result): no ``sacct`` is needed.
    """
    ends: dict[int, JobEnd] = {}
    while len(ends) < len(jobs):
        queued = queued_jobs()
        for i, job in enumerate(jobs):
            if i in ends:
                continue
            has_result = job.paths.result_pickle.exists()
            if not has_result and (queued is None or job_alive(str(job.job_id), queued)):
                continue
            ends[i] = _outcome(job, has_result)
            if on_end is not None:
                on_end(i, ends[i])
        if len(ends) < len(jobs):
            time.sleep(poll_s)
    return [ends[i] for i in range(len(jobs))]


def _outcome(job: Any, has_result: bool) -> JobEnd:
    job_id = str(job.job_id)
    if not has_result:
        return JobEnd(job_id, error=f"job {job_id} ended without a result (cancelled or killed); see {job_log(job)}")
    with quiet_submitit():
        try:
            return JobEnd(job_id, result=job.result())
        except Exception as exc:  # the job's own exception, re-raised by submitit with its traceback
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            return JobEnd(job_id, error=f"{lines[-1][:200] if lines else type(exc).__name__}; see {job_log(job)}")

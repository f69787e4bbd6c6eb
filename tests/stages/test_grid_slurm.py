"""The grid and the search on a real Slurm: Debian's ``slurm-wlm`` and ``munge`` started on this
machine as a one-node cluster (a private munge socket and key, free ports, ``proctrack/linuxproc``,
``task/none``, no accounting database), driven through submitit.

All Slurm tests live in this one file, so that ``pytest -n auto --dist loadfile`` runs them in one
worker against one cluster. They are skipped, with the reason, only where Slurm cannot run (the
daemons are not installed, or the tests do not run as root, which the one-node set-up needs).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from medattn import tracking
from medattn.stages import cells, grid, search_storage

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
WAIT_S = 300.0

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


def _why_no_slurm() -> str | None:
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"Slurm is not installed here ({', '.join(missing)} missing; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the one-node Slurm of these tests runs its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(d: Path) -> str:
    host = socket.gethostname().split(".")[0]
    return f"""\
ClusterName=medattn-test
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge.socket
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
KillWait=2
MinJobAge=2
NodeName={host} CPUs={os.cpu_count()} RealMemory=16000
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 15)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """munged, slurmctld and slurmd on this machine (one node, its CPUs); ``SLURM_CONF`` points at them."""
    reason = _why_no_slurm()
    if reason:
        pytest.skip(reason)
    d = Path("/tmp") / f"medattn-slurm-{os.getpid()}"  # short: a unix socket path is limited to 108 bytes
    shutil.rmtree(d, ignore_errors=True)
    for sub in ("state", "spool"):
        (d / sub).mkdir(parents=True)
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = d / "slurm.conf"
    conf.write_text(_conf(d))
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        subprocess.run(
            ["munged", "--force", f"--key-file={key}", f"--socket={d}/munge.socket", f"--pid-file={d}/munged.pid",
             f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed"],
            check=True,
        )  # fmt: skip
        subprocess.run(["slurmctld", "-f", str(conf)], check=True)
        subprocess.run(["slurmd", "-f", str(conf)], check=True)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, (d / "slurmctld.log").read_text()[-2000:]
            time.sleep(0.5)
        yield conf
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], capture_output=True)
        deadline = time.monotonic() + 30  # let every job step end and report before slurmd stops
        while time.monotonic() < deadline and subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout:
            time.sleep(0.5)
        time.sleep(1)
        for name in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            _stop(d / name)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(d, ignore_errors=True)


def _grid_file(tmp_path: Path, epochs: int) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID_YAML.format(epochs=epochs))
    return path


def _states(output: str, keys: list[str]) -> dict[str, str]:
    """``{cell key: state}`` from a status table."""
    rows = {ln.split()[0]: ln.split()[1] for ln in output.splitlines() if ln.split() and ln.split()[0] in keys}
    assert set(rows) == set(keys), output
    return rows


def _wait(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_grid_on_slurm_survives_scancel(slurm_cluster, mlflow_store, demo_dir, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # 6 epochs: the cancel must land while the second cell still trains (with 3, an idle machine
    # finished the training between its first checkpoint and the scancel)
    path = _grid_file(tmp_path, epochs=6)
    keys = [cells.cell_key(c) for c in grid.grid_cells(path, {"data_dir": str(demo_dir)})]
    args = ["grid", "--config", path, "--data-dir", demo_dir, "--quiet", "--launcher", "slurm"]
    out = cli([*args, "--jobs", "2", "--cpus-per-cell", "1", "--time", "30", "--no-wait"]).output
    assert "submitted 4 cells as Slurm job array" in out and "at most 2 at once" in out
    assert "sqlite file, which works for Slurm jobs only when they all run on this host" in out
    assert (tmp_path / "slurm-logs" / "grid.yaml.jobs.json").is_file()
    assert set(_states(out, keys).values()) <= {"PENDING", "RUNNING"}

    # the second cell's job, once its first epoch is checkpointed, is cancelled
    client = mlflow.MlflowClient()

    def checkpointed():
        runs = tracking.search_runs(None, f"tags.`{tracking.TAG_CELL}` = '{keys[1]}'")
        if runs and any(a.path.endswith("last.pt") for a in client.list_artifacts(runs[0].info.run_id, "checkpoints")):
            return runs[0]
        return None

    run = _wait(checkpointed, "the second cell's first checkpoint")
    job = run.data.tags[tracking.TAG_SLURM_JOB]
    subprocess.run(["scancel", job], check=True)
    _wait(
        lambda: job not in subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout,
        "scancel",
    )
    status = cli([*args, "--status"]).output
    assert _states(status, keys)[keys[1]] == "KILLED"  # Slurm lost the job: its run is dead
    assert client.get_run(run.info.run_id).info.status == "KILLED"

    out = cli(args).output  # continues the cancelled cell and waits for the others' jobs
    assert "submitted 1 cell as Slurm job array" in out  # only the cancelled cell; the others' jobs still run
    assert "Bypassing" not in out and "sacct" not in out  # no submitit poll warnings
    assert "4 of 4 cells finished." in out
    final = cli([*args, "--status"]).output
    assert set(_states(final, keys).values()) == {"FINISHED"}

    train = tracking.search_runs(None, f"tags.`{tracking.TAG_KIND}` = 'train'")
    assert sorted(r.data.tags[tracking.TAG_CELL] for r in train) == sorted(keys)  # one run per cell
    assert {r.info.status for r in train} == {"FINISHED"}
    by_cell = {r.data.tags[tracking.TAG_CELL]: r for r in train}
    assert by_cell[keys[1]].info.run_id == run.info.run_id  # resumed in its own run...
    assert by_cell[keys[1]].data.tags[tracking.TAG_SLURM_JOB] != job  # ...by a new job
    assert by_cell[keys[1]].data.tags[tracking.TAG_RESUMED_TO] == "6"
    assert all(r.data.tags[tracking.TAG_SLURM_JOB] for r in train)
    tests = [
        r for r in tracking.search_runs(None, f"tags.`{tracking.TAG_KIND}` = 'test'") if r.info.status == "FINISHED"
    ]
    assert sorted(r.data.tags[tracking.TAG_SOURCE_RUN] for r in tests) == sorted(r.info.run_id for r in train)
    assert all(r.data.tags.get(tracking.TAG_SLURM_JOB) for r in tests)
    logs = list((tmp_path / "slurm-logs").glob(f"{job}/*_log.err"))
    assert logs, "submitit's log of the cancelled job"


def test_search_on_slurm_shares_one_journal_study(
    slurm_cluster, mlflow_store, demo_dir, tmp_path, cli, monkeypatch, tiny_args
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    storage = f"journal:///{tmp_path / 'study.journal'}"
    out = cli(
        ["search", "--dataset", "demo", "--data-dir", demo_dir, "--img-size", "32", "--epochs", "1",
         "--batch-sizes", "8,16", "--n-trials", "4", "--storage", storage, "--study-name", "slurm",
         "--launcher", "slurm", "--workers", "2", "--quiet", "--model", "deit_tiny"]
    ).output  # fmt: skip
    assert "submitted 2 search workers as Slurm job array" in out
    assert "4 trials: 4 complete, 0 pruned, 0 failed; the study now holds 4." in out
    storage_obj = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))
    )
    trials = optuna.load_study(study_name="slurm", storage=storage_obj).get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and {t.state.name for t in trials} == {"COMPLETE"}
    runs = {t.user_attrs[search_storage.TRIAL_ATTR_RUN_ID] for t in trials}
    assert len(runs) == 4  # one MLflow run per trial, none shared
    jobs = {t.user_attrs[search_storage.TRIAL_ATTR_WORKER][tracking.TAG_SLURM_JOB] for t in trials}
    assert len(jobs) == 2  # two Slurm workers took part
    parents = tracking.search_runs(None, f"tags.`{tracking.TAG_KIND}` = 'search'")
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}

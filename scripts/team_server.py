"""A private team tracking stack on 127.0.0.1: PostgreSQL plus ``mlflow server``.

It initialises a throw-away PostgreSQL cluster in a temporary folder (Debian's server binaries,
``/usr/lib/postgresql/<version>/bin``; run as user ``postgres`` when started by root), listening on
127.0.0.1 only on a free port, creates the databases ``mlflow`` and ``optuna``, and starts
``mlflow server`` with the PostgreSQL backend store and a local artifact destination on another
free port. Everything is stopped again by :meth:`TeamServer.stop` (also on errors when used as a
context manager).

Usage::

    python scripts/team_server.py start [--root DIR]   # prints the URIs, keeps running in the background
    python scripts/team_server.py stop  [--root DIR]   # stops what `start` left in DIR
    python scripts/team_server.py run-checks           # start, train/test/promote + two search workers, stop

In Python::

    with TeamServer() as ts:
        env = {"MLFLOW_TRACKING_URI": ts.tracking_uri}   # http://127.0.0.1:PORT
        optuna_storage = ts.optuna_uri                   # postgresql+psycopg2://postgres@127.0.0.1:PORT/optuna
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
STATE_FILE = "team_server.json"
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "medattn-team-server"
START_TIMEOUT_S = 90.0


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``pg_ctl`` and ``initdb``, else ``None``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    for pg_ctl in reversed(found):
        folder = Path(pg_ctl).parent
        if (folder / "initdb").is_file():
            return folder
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Wait until ``url`` answers 200; RuntimeError naming the log when it does not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"the server exited with code {proc.returncode} before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{tail}")


class TeamServer:
    """PostgreSQL (databases ``mlflow`` and ``optuna``) and ``mlflow server``, on 127.0.0.1 only.

    Attributes:
        root: folder holding the cluster (``pgdata``), its socket, logs and ``artifacts``.
        pg_port: PostgreSQL's port.
        mlflow_port: the tracking server's port.
    """

    def __init__(self, root: str | Path | None = None, *, python: str | None = None) -> None:
        """Prepare (nothing starts yet).

        Args:
            root: working folder; a new temporary folder when ``None``.
            python: interpreter whose ``mlflow`` package serves (default: this one).
        """
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="medattn-team-"))
        self.python = python or sys.executable
        self.bin = postgres_bin_dir()
        self.pg_port = 0
        self.mlflow_port = 0
        self.mlflow_proc: subprocess.Popen | None = None
        self.mlflow_pid: int | None = None
        self.pg_root = self.root
        self._pg_started = False

    # ---- URIs ------------------------------------------------------------------------------
    @property
    def tracking_uri(self) -> str:
        """``http://127.0.0.1:PORT`` of the MLflow server."""
        return f"http://{HOST}:{self.mlflow_port}"

    def db_uri(self, database: str) -> str:
        """SQLAlchemy URL of one database of the cluster (user ``postgres``, trust auth on 127.0.0.1)."""
        return f"postgresql+psycopg2://postgres@{HOST}:{self.pg_port}/{database}"

    @property
    def optuna_uri(self) -> str:
        """Optuna storage URL (the ``optuna`` database)."""
        return self.db_uri("optuna")

    # ---- paths -----------------------------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        """The cluster's data directory."""
        return self.pg_root / "pgdata"

    @property
    def socket_dir(self) -> Path:
        """Unix socket directory (private, so no system-wide socket is touched)."""
        return self.pg_root / "socket"

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        """``cmd`` run as user ``postgres`` when we are root (PostgreSQL refuses to run as root)."""
        if os.geteuid() != 0:
            return cmd
        if shutil.which("runuser"):
            return ["runuser", "-u", "postgres", "--", *cmd]
        return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]

    def _run(self, cmd: list[str], timeout: float = 120) -> None:
        proc = subprocess.run(self._as_postgres(cmd), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> TeamServer:
        """initdb, start PostgreSQL, create the databases, start ``mlflow server`` and wait for ``/health``.

        Raises:
            RuntimeError: PostgreSQL's binaries are missing or a step fails (whatever started is stopped).
        """
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed; "
                               "apt-get install postgresql")
        try:
            self._start_postgres()
            self._start_mlflow()
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self

    def _start_postgres(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # user postgres must reach the cluster, and pytest's (or the caller's) folders may be
            # private to root: the cluster gets its own world-traversable temporary folder
            self.pg_root = Path(tempfile.mkdtemp(prefix="medattn-pg-"))
            os.chmod(self.pg_root, 0o755)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.socket_dir, "postgres", "postgres")
            self.pgdata.mkdir(exist_ok=True)
            shutil.chown(self.pgdata, "postgres", "postgres")
        self._run([str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                   "--encoding=UTF8", "--no-sync"])
        self.pg_port = free_port()
        opts = f"-c listen_addresses={HOST} -p {self.pg_port} -k {self.socket_dir} -c fsync=off"
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.pgdata / "server.log"),
                   "-o", opts, "-w", "-t", "60", "start"], timeout=90)
        self._pg_started = True
        for database in ("mlflow", "optuna"):
            self._run([str(self.bin / "createdb"), "-h", HOST, "-p", str(self.pg_port), "-U", "postgres", database])

    def _start_mlflow(self) -> None:
        self.mlflow_port = free_port()
        artifacts = self.root / "artifacts"
        artifacts.mkdir(exist_ok=True)
        log = self.root / "mlflow_server.log"
        cmd = [self.python, "-m", "mlflow", "server", "--backend-store-uri", self.db_uri("mlflow"),
               "--artifacts-destination", str(artifacts), "--host", HOST, "--port", str(self.mlflow_port),
               "--workers", "1"]
        with log.open("wb") as sink:
            self.mlflow_proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        self.mlflow_pid = self.mlflow_proc.pid
        _wait_http(f"{self.tracking_uri}/health", START_TIMEOUT_S, self.mlflow_proc, log)

    def stop(self) -> None:
        """Stop ``mlflow server`` (its whole process group) and PostgreSQL; safe to call twice."""
        if self.mlflow_pid is not None:
            try:
                os.killpg(self.mlflow_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _alive(self.mlflow_pid, self.mlflow_proc):
                time.sleep(0.1)
            if _alive(self.mlflow_pid, self.mlflow_proc):
                try:
                    os.killpg(self.mlflow_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.mlflow_pid, self.mlflow_proc = None, None
        if (self._pg_started or (self.pgdata / "postmaster.pid").exists()) and self.bin is not None:
            try:
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop"],
                          timeout=60)
            except RuntimeError as exc:
                print(f"warning: {exc}", file=sys.stderr)
            self._pg_started = False
        if self.pg_root != self.root and not (self.pgdata / "postmaster.pid").exists():
            shutil.rmtree(self.pg_root, ignore_errors=True)
            self.pg_root = self.root

    def __enter__(self) -> TeamServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ---- state for the start/stop CLI ------------------------------------------------------
    def _write_state(self) -> None:
        state = {"root": str(self.root), "pg_port": self.pg_port, "mlflow_port": self.mlflow_port,
                 "mlflow_pid": self.mlflow_pid, "tracking_uri": self.tracking_uri, "optuna_uri": self.optuna_uri,
                 "mlflow_db_uri": self.db_uri("mlflow"), "pg_root": str(self.pg_root)}
        (self.root / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def from_state(cls, root: str | Path) -> TeamServer:
        """The server that ``start`` left in ``root`` (for ``stop``)."""
        state = json.loads((Path(root) / STATE_FILE).read_text())
        ts = cls(root)
        ts.pg_port, ts.mlflow_port, ts.mlflow_pid = state["pg_port"], state["mlflow_port"], state["mlflow_pid"]
        ts.pg_root = Path(state["pg_root"])
        ts._pg_started = True
        return ts


def _alive(pid: int, proc: subprocess.Popen | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def rest(tracking_uri: str, method: str, path: str, payload: dict | None = None) -> dict:
    """Call the MLflow REST API (``/api/2.0/mlflow/...``) and return its JSON answer."""
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(f"{tracking_uri}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def run_checks() -> int:
    """Run ``pytest tests/test_team_server.py`` (which starts and stops its own stack); its exit code."""
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "pytest", "-q", str(repo / "tests" / "test_team_server.py")]
    return subprocess.call(cmd, cwd=repo)


def main(argv: list[str] | None = None) -> int:
    """``start`` | ``stop`` | ``run-checks``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "run-checks"))
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="Working folder of the stack (start/stop).")
    args = parser.parse_args(argv)
    if args.action == "run-checks":
        return run_checks()
    root = Path(args.root)
    if args.action == "stop":
        if not (root / STATE_FILE).exists():
            print(f"nothing to stop in {root}", file=sys.stderr)
            return 1
        TeamServer.from_state(root).stop()
        (root / STATE_FILE).unlink()
        print(f"stopped the team server in {root}")
        return 0
    if (root / STATE_FILE).exists():
        print(f"{root} already holds a running stack; run: python scripts/team_server.py stop --root {root}",
              file=sys.stderr)
        return 1
    if root.exists():
        shutil.rmtree(root)
    ts = TeamServer(root)
    try:
        ts.start()
    except RuntimeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"MLFLOW_TRACKING_URI={ts.tracking_uri}")
    print(f"OPTUNA_STORAGE={ts.optuna_uri}")
    print(f"stop it with: python scripts/team_server.py stop --root {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A private team tracking stack on 127.0.0.1: ``mlflow server`` with authentication, over PostgreSQL.

It initialises a throw-away PostgreSQL cluster in a temporary folder (Debian's server binaries,
``/usr/lib/postgresql/<version>/bin``; run as user ``postgres`` when started by root), listening on
127.0.0.1 only on a free port, creates the databases ``mlflow``, ``optuna`` and ``mlflow_auth``, and
starts ``mlflow server --app-name basic-auth`` (MLflow's authentication app, the ``mlflow[auth]``
extra) with the PostgreSQL backend store and a local artifact destination on another free port.
Without PostgreSQL's binaries (or with ``--sqlite``) the stores are SQLite files instead.

PostgreSQL asks every connection for a password (``scram-sha-256``, over TCP and the Unix socket
alike), so no other local user reaches the databases. Three roles, each with a generated password:
the superuser ``postgres`` (administration only), ``mlflow`` (owns ``mlflow`` and ``mlflow_auth``;
the tracking server connects as it, its password given through ``PGPASSWORD`` to that process only,
never on a command line) and ``optuna`` (owns ``optuna`` and may connect to nothing else). The
passwords are kept in the stack's private state, ``<root>/team_server.secrets.json`` (mode 0600 in a
0700 folder), for whoever administers the stack.

With authentication (the default) the server gets a generated Flask secret key
(``MLFLOW_FLASK_SERVER_SECRET_KEY``) and a generated admin password (``MLFLOW_AUTH_ADMIN_PASSWORD``,
given to the server process only); ``start`` then creates two users with generated passwords,
``editor`` (EDIT) and ``reader`` (READ) on the experiment and the registered model
``medattn-<dataset>``, and prints the environment each user needs. Only the admin and the editor get
``OPTUNA_STORAGE`` (the ``optuna`` role's URL): a reader gets no Optuna access, so no write access
either. MLflow users' passwords are not written to disk (the auth store keeps hashes). Everything is
stopped again by :meth:`TeamServer.stop` (also on errors when used as a context manager).

``start`` creates its ``--root`` (marked as its own by a ``.medattn-team-root`` file) and refuses a
non-empty folder it did not create, so a mistyped ``--root`` never deletes anyone's files.

Usage::

    python scripts/team_server.py start [--root DIR] [--dataset demo] [--sqlite]   # prints each user's env
    python scripts/team_server.py stop  [--root DIR]   # stops what `start` left in DIR
    python scripts/team_server.py run-checks           # the team-server tests (they start their own stacks)

In Python::

    with TeamServer(postgres=False) as ts:
        env = ts.env("editor")   # MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD, OPTUNA_STORAGE
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import secrets
import shlex
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
TEAM_USERS = {"editor": "EDIT", "reader": "READ"}
"""The users ``start`` creates besides ``admin``, and their rights on the team's experiment and registered model."""
OPTUNA_USERS = ("admin", "editor")
"""The users whose environment holds ``OPTUNA_STORAGE`` (a reader gets no Optuna access)."""
SECRETS_FILE = "team_server.secrets.json"
ROOT_MARKER = ".medattn-team-root"
PG_ROLES = ("postgres", "mlflow", "optuna")
"""PostgreSQL roles with a generated password: the superuser, the tracking server's and Optuna's."""
GRANT_PATH = "/api/3.0/mlflow/users/permissions/grant"
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


def _traversable_tmp() -> str:
    """A temp folder user ``postgres`` can reach: ``$TMPDIR`` when every folder on its path may be
    traversed by others, else the system's ``/tmp`` (a private ``$TMPDIR``, such as a test
    session's under pytest's base temp, would hide the cluster from user ``postgres``)."""
    base = Path(tempfile.gettempdir()).resolve()
    if all(os.stat(p).st_mode & 0o001 for p in (base, *base.parents)):
        return str(base)
    return "/tmp"


class TeamServer:
    """``mlflow server`` with MLflow's authentication app on 127.0.0.1, over PostgreSQL or SQLite.

    Attributes:
        root: folder holding the stores (``pgdata`` or ``*.db``), the auth config, logs and ``artifacts``.
        pg_port: PostgreSQL's port (0 with the SQLite back end).
        mlflow_port: the tracking server's port.
        dataset: the team experiment and registered model are both ``medattn-<dataset>``.
        passwords: user name → generated password (``admin``, ``editor``, ``reader``), after ``start``.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        python: str | None = None,
        postgres: bool | None = None,
        auth: bool = True,
        dataset: str = "demo",
    ) -> None:
        """Prepare (nothing starts yet).

        Args:
            root: working folder; a new temporary folder when ``None``.
            python: interpreter whose ``mlflow`` package serves (default: this one).
            postgres: PostgreSQL back end (``None``: when its binaries are installed, else SQLite).
            auth: start MLflow's authentication app (``--app-name basic-auth``) and create the users.
            dataset: names the team experiment and registered model ``medattn-<dataset>``.
        """
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="medattn-team-"))
        self.python = python or sys.executable
        self.bin = postgres_bin_dir()
        self.postgres = self.bin is not None if postgres is None else postgres
        self.auth = auth
        self.dataset = dataset
        self.pg_port = 0
        self.mlflow_port = 0
        self.mlflow_proc: subprocess.Popen | None = None
        self.mlflow_pid: int | None = None
        self.pg_root = self.root
        self._pg_started = False
        self.passwords: dict[str, str] = {}
        self.pg_passwords: dict[str, str] = {}

    # ---- URIs ------------------------------------------------------------------------------
    @property
    def tracking_uri(self) -> str:
        """``http://127.0.0.1:PORT`` of the MLflow server."""
        return f"http://{HOST}:{self.mlflow_port}"

    def db_uri(self, database: str, role: str = "mlflow") -> str:
        """SQLAlchemy URL of one database without a password: the cluster's (as ``role``; the password
        comes from ``PGPASSWORD``) or ``<root>/<database>.db``."""
        if not self.postgres:
            return f"sqlite:///{self.root.resolve() / database}.db"
        return f"postgresql+psycopg2://{role}@{HOST}:{self.pg_port}/{database}"

    @property
    def optuna_uri(self) -> str:
        """Optuna storage URL (the ``optuna`` database as role ``optuna``, its password in the URL: Optuna's clients
        read it from ``OPTUNA_STORAGE`` or ``--storage``, and medattn redacts it wherever it logs or prints it)."""
        if not self.postgres:
            return self.db_uri("optuna")
        return f"postgresql+psycopg2://optuna:{self.pg_passwords['optuna']}@{HOST}:{self.pg_port}/optuna"

    @property
    def team_name(self) -> str:
        """The team experiment and registered model: ``medattn-<dataset>``."""
        return f"medattn-{self.dataset}"

    def env(self, user: str | None) -> dict[str, str]:
        """The environment a client needs: the server, its login (``user`` of :attr:`passwords`) and, for
        the admin and the editor (:data:`OPTUNA_USERS`) or without authentication, Optuna's storage."""
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri}
        if user is None or user in OPTUNA_USERS:
            env["OPTUNA_STORAGE"] = self.optuna_uri
        if user is not None:
            env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=self.passwords[user])
        return env

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

    def _run(self, cmd: list[str], timeout: float = 120, *, stdin: str | None = None, env: dict | None = None) -> None:
        proc = subprocess.run(
            self._as_postgres(cmd), capture_output=True, text=True, timeout=timeout, input=stdin, env=env
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")

    def _pg_env(self, role: str = "postgres") -> dict[str, str]:
        """This process's environment with ``role``'s password in ``PGPASSWORD`` (libpq's client variable)."""
        env = dict(os.environ)
        if role in self.pg_passwords:
            env["PGPASSWORD"] = self.pg_passwords[role]
        return env

    def _sql(self, statements: list[str], database: str = "postgres") -> None:
        """Run SQL as the superuser over TCP with its password (``psql`` stops at the first error)."""
        cmd = [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-w", "-h", HOST, "-p", str(self.pg_port)]
        self._run([*cmd, "-U", "postgres", "-d", database], stdin="\n".join(statements) + "\n", env=self._pg_env())

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> TeamServer:
        """Start the back end (PostgreSQL: initdb, start, create the databases), ``mlflow server`` and,
        with ``auth``, create the users and the team's experiment and registered model.

        Raises:
            RuntimeError: PostgreSQL's binaries are missing or a step fails (whatever started is stopped).
        """
        if self.postgres and self.bin is None:
            raise RuntimeError(
                "PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed; apt-get install postgresql"
            )
        claim_root(self.root)
        try:
            if self.postgres:
                self._start_postgres()
            self._start_mlflow()
            if self.auth:
                self._create_team()
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self

    def _start_postgres(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.pg_passwords = {role: secrets.token_urlsafe(24) for role in PG_ROLES}
        if os.geteuid() == 0:
            # user postgres must reach the cluster, and pytest's (or the caller's) folders may be
            # private to root: the cluster gets its own world-traversable temporary folder
            self.pg_root = Path(tempfile.mkdtemp(prefix="medattn-pg-", dir=_traversable_tmp()))
            os.chmod(self.pg_root, 0o755)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.socket_dir, "postgres", "postgres")
            self.pgdata.mkdir(exist_ok=True)
            shutil.chown(self.pgdata, "postgres", "postgres")
        pwfile = self.socket_dir / "superuser.pw"  # read by initdb, removed right after
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.pg_passwords["postgres"] + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        (self.pgdata / "pg_hba.conf").write_text(PG_HBA)
        self.pg_port = free_port()
        opts = f"-c listen_addresses={HOST} -p {self.pg_port} -k {self.socket_dir} -c fsync=off"
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
            timeout=90,
        )
        self._pg_started = True
        pw = self.pg_passwords
        self._sql(
            [
                "SET password_encryption = 'scram-sha-256';",
                f"CREATE ROLE mlflow LOGIN PASSWORD '{pw['mlflow']}';",
                f"CREATE ROLE optuna LOGIN PASSWORD '{pw['optuna']}';",
                "CREATE DATABASE mlflow OWNER mlflow;",
                "CREATE DATABASE mlflow_auth OWNER mlflow;",
                "CREATE DATABASE optuna OWNER optuna;",
                # a role connects only to the databases granted here (PUBLIC may connect to none)
                "REVOKE ALL ON DATABASE mlflow, mlflow_auth, optuna, postgres, template1 FROM PUBLIC;",
                "GRANT CONNECT ON DATABASE mlflow, mlflow_auth TO mlflow;",
                "GRANT CONNECT ON DATABASE optuna TO optuna;",
            ]
        )

    def _auth_config(self) -> Path:
        """MLflow's ``basic_auth.ini``: its user store, READ by default; no password in it (the admin's
        comes from the environment of the server process only)."""
        ini = self.root / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {self.db_uri('mlflow_auth')}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        return ini

    def _server_env(self) -> dict[str, str]:
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
        for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI", "PGPASSWORD"):
            env.pop(var, None)
        if self.postgres:
            env["PGPASSWORD"] = self.pg_passwords["mlflow"]  # libpq reads it: no password on the command line
        if self.auth:
            self.passwords["admin"] = secrets.token_urlsafe(18)
            env.update(
                MLFLOW_AUTH_CONFIG_PATH=str(self._auth_config()),
                MLFLOW_AUTH_ADMIN_PASSWORD=self.passwords["admin"],
                MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(32),
            )
        return env

    def _start_mlflow(self) -> None:
        self.mlflow_port = free_port()
        artifacts = self.root / "artifacts"
        artifacts.mkdir(exist_ok=True)
        log = self.root / "mlflow_server.log"
        cmd = [
            self.python,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.db_uri("mlflow"),
            "--artifacts-destination",
            str(artifacts),
            "--host",
            HOST,
            "--port",
            str(self.mlflow_port),
            "--workers",
            "1",
        ]
        if self.auth:
            cmd += ["--app-name", "basic-auth"]
        with log.open("wb") as sink:
            self.mlflow_proc = subprocess.Popen(
                cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env=self._server_env()
            )
        self.mlflow_pid = self.mlflow_proc.pid
        _wait_http(f"{self.tracking_uri}/health", START_TIMEOUT_S, self.mlflow_proc, log)

    def _create_team(self) -> None:
        """Users ``editor`` (EDIT) and ``reader`` (READ) on experiment and registered model ``medattn-<dataset>``."""
        admin = ("admin", self.passwords["admin"])
        for user in TEAM_USERS:
            self.passwords[user] = secrets.token_urlsafe(18)
            rest(
                self.tracking_uri,
                "POST",
                "/api/2.0/mlflow/users/create",
                {"username": user, "password": self.passwords[user]},
                auth=admin,
            )
        exp_id = rest(
            self.tracking_uri, "POST", "/api/2.0/mlflow/experiments/create", {"name": self.team_name}, auth=admin
        )["experiment_id"]
        rest(
            self.tracking_uri, "POST", "/api/2.0/mlflow/registered-models/create", {"name": self.team_name}, auth=admin
        )
        for user, permission in TEAM_USERS.items():
            for resource_type, resource_id in (("experiment", exp_id), ("registered_model", self.team_name)):
                rest(
                    self.tracking_uri,
                    "POST",
                    GRANT_PATH,
                    {
                        "username": user,
                        "resource_type": resource_type,
                        "resource_id": resource_id,
                        "permission": permission,
                    },
                    auth=admin,
                )

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
                self._run(
                    [str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop"],
                    timeout=60,
                )
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
        # no MLflow user's password here: they are printed once by `start` and live only hashed in the
        # auth store; the PostgreSQL roles' passwords go to the private secrets file (0600) alone
        state = {
            "root": str(self.root),
            "pg_port": self.pg_port,
            "mlflow_port": self.mlflow_port,
            "mlflow_pid": self.mlflow_pid,
            "tracking_uri": self.tracking_uri,
            "optuna_uri": self.db_uri("optuna", "optuna"),
            "mlflow_db_uri": self.db_uri("mlflow"),
            "pg_root": str(self.pg_root),
            "postgres": self.postgres,
            "auth": self.auth,
        }
        (self.root / STATE_FILE).write_text(json.dumps(state, indent=2))
        if self.pg_passwords:
            write_private(self.root / SECRETS_FILE, json.dumps({"postgres_roles": self.pg_passwords}, indent=2))

    @classmethod
    def from_state(cls, root: str | Path) -> TeamServer:
        """The server that ``start`` left in ``root`` (for ``stop``)."""
        state = json.loads((Path(root) / STATE_FILE).read_text())
        ts = cls(root, postgres=state.get("postgres", True), auth=state.get("auth", False))
        ts.pg_port, ts.mlflow_port, ts.mlflow_pid = state["pg_port"], state["mlflow_port"], state["mlflow_pid"]
        ts.pg_root = Path(state["pg_root"])
        ts._pg_started = ts.postgres
        return ts


PG_HBA = """\
# medattn team stack: every connection, over the Unix socket or TCP on 127.0.0.1, needs its role's password
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
"""


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600 from creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


class RootNotOursError(RuntimeError):
    """``--root`` exists, is not empty, and was not created by this script."""


def claim_root(root: Path) -> None:
    """Create ``root`` (mode 0700, marked as this script's) or accept an empty one or one it created before.

    Raises:
        RootNotOursError: ``root`` holds files and no :data:`ROOT_MARKER` (nothing is deleted).
    """
    if root.exists() and any(root.iterdir()) and not (root / ROOT_MARKER).is_file():
        raise RootNotOursError(
            f"{root} is not empty and was not created by team_server.py; pass a new folder with --root "
            "(nothing in it was touched)."
        )
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    (root / ROOT_MARKER).write_text("created by scripts/team_server.py; `stop` may delete this folder's stack\n")


def _alive(pid: int, proc: subprocess.Popen | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def rest(
    tracking_uri: str, method: str, path: str, payload: dict | None = None, auth: tuple[str, str] | None = None
) -> dict:
    """Call the MLflow REST API (``/api/2.0/mlflow/...``), as ``auth = (user, password)`` when given; its JSON answer.

    Raises:
        urllib.error.HTTPError: the server answered with an error (e.g. 401 without a login).
    """
    data = json.dumps(payload).encode() if payload is not None else None
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(f"{tracking_uri}{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def run_checks() -> int:
    """Run the team-server tests (each starts and stops its own stack); pytest's exit code."""
    repo = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        str(repo / "tests" / "test_team_server.py"),
        str(repo / "tests" / "test_team_auth.py"),
    ]
    return subprocess.call(cmd, cwd=repo)


def main(argv: list[str] | None = None) -> int:
    """``start`` | ``stop`` | ``run-checks``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "run-checks"))
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="Working folder of the stack (start/stop).")
    parser.add_argument("--dataset", default="demo", help="Team experiment and registered model medattn-<dataset>.")
    parser.add_argument("--sqlite", action="store_true", help="SQLite stores instead of PostgreSQL.")
    parser.add_argument("--no-auth", action="store_true", help="No authentication (only on a machine of your own).")
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
        (root / SECRETS_FILE).unlink(missing_ok=True)
        print(f"stopped the team server in {root}")
        return 0
    if (root / STATE_FILE).exists():
        print(
            f"{root} already holds a running stack; run: python scripts/team_server.py stop --root {root}",
            file=sys.stderr,
        )
        return 1
    try:
        claim_root(root)
    except RootNotOursError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    for entry in root.iterdir():  # a stack this script started and stopped before: start afresh
        if entry.name != ROOT_MARKER:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    ts = TeamServer(root, postgres=False if args.sqlite else None, auth=not args.no_auth, dataset=args.dataset)
    try:
        ts.start()
    except (RuntimeError, urllib.error.URLError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    _print_envs(ts)
    if ts.pg_passwords:
        print(f"# PostgreSQL role passwords (administration only): {root / SECRETS_FILE} (mode 0600)")
    print(f"stop it with: python scripts/team_server.py stop --root {root}")
    return 0


def _print_envs(ts: TeamServer) -> None:
    """Each user's environment, as ``export`` lines (the passwords are shown this once only)."""
    users = {
        "admin": "admin: manages users and permissions",
        "editor": f"editor: EDIT on experiment and registered model {ts.team_name}; Optuna studies",
        "reader": f"reader: READ on experiment and registered model {ts.team_name}; no Optuna access",
    }
    for user, what in users.items() if ts.auth else [(None, "no authentication")]:
        print(f"# {what}")
        for key, value in ts.env(user).items():
            print(f"export {key}={shlex.quote(value)}")
        print()


if __name__ == "__main__":
    sys.exit(main())

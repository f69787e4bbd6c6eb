"""One tracking store shared by many processes: serialised creation, half-migrated stores, locked writes.

Researchers start several runs at once (a shell loop with ``&``, a job array, ``torchrun``) in a
folder with no ``mlflow.db`` yet. MLflow creates the tables of a new sqlite store on
first open by running alembic migrations, which are neither atomic nor safe to run twice at once
on sqlite: two processes doing it together crash (``duplicate column name: step``, ``table
_alembic_tmp_tags already exists``) and may leave a half-migrated store behind. So:

* :func:`open_store` opens a sqlite store while holding an exclusive lock on ``<db>.lock`` beside
  the database file (``fcntl.flock``: released by the kernel when a process dies, so a crash never
  leaves a stale lock), repairing first what a crashed creation left (:func:`repair_half_migrated`);
  under DDP only rank 0 calls it (:func:`medattn.distributed.on_main`).
* :func:`retry_locked` retries a write that sqlite refused with ``database is locked``, with
  exponential backoff. MLflow already sets a 20 s busy timeout, but sqlite answers a writer that
  would deadlock with another one at once, without waiting; the whole (rolled back) call is then
  repeated. Several writers on one sqlite file work, but they queue: ``docs/resilience.md`` states the limit
  and points to the team server (PostgreSQL) beyond it.
* :func:`retry_dataset` also repeats a dataset log that lost a race with another run inserting the
  same MLflow Dataset (sqlite, and PostgreSQL behind the team server).

Other stores (``http(s)://``, ``postgresql://``) pass through unchanged but for :func:`retry_dataset`:
their servers serialise every other write.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from medattn.errors import MedattnError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

STORE_LOCK_TIMEOUT_S = 600.0
"""Seconds a process waits for another one to finish creating or checking the store."""
LOCK_SUFFIX = ".lock"
"""The lock file is the database path plus this suffix (``mlflow.db.lock``)."""
TMP_TABLE_PREFIX = "_alembic_tmp_"
"""Tables alembic creates while it rewrites a sqlite table; one left behind means a crashed upgrade."""
LOCKED_RETRIES = 10
"""Attempts after the first before a ``database is locked`` error is re-raised (about a minute in all)."""
LOCKED_FIRST_WAIT_S = 0.1
LOCKED_MAX_WAIT_S = 8.0
_DATA_TABLES = ("runs", "registered_models", "logged_models", "trace_info")
"""Tables whose rows are user data: a half-created store without any may be recreated."""


# ---- which file -----------------------------------------------------------------------------
def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for other stores and in-memory sqlite)."""
    if urlparse(uri).scheme != "sqlite":
        return None
    db = unquote(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else ""
    db = db.split("?", 1)[0]
    if db in ("", ":memory:"):
        return None
    return Path(db).resolve()


def lock_path(db: Path) -> Path:
    """The lock file beside ``db`` (``mlflow.db`` → ``mlflow.db.lock``)."""
    return db.with_name(db.name + LOCK_SUFFIX)


# ---- the lock -------------------------------------------------------------------------------
@contextlib.contextmanager
def store_lock(db: Path, timeout: float = STORE_LOCK_TIMEOUT_S, poll: float = 0.2) -> Iterator[None]:
    """Hold the exclusive lock beside ``db`` (waiting at most ``timeout`` seconds for it).

    The lock file is never deleted (deleting it would let a late process lock a new file while an
    early one still holds the old), and the kernel releases the lock when its holder exits.

    Raises:
        MedattnError: another process held the lock for ``timeout`` seconds.
    """
    path = lock_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MedattnError(
                        f"another process has held {str(path)!r} for {timeout:.0f} s while opening the tracking "
                        "store; stop the medattn or mlflow process that hangs there (the lock is freed when it exits)."
                    ) from None
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---- a store left half-migrated -------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    """The alembic revision of a complete store for the installed MLflow."""
    # Imported here: sqlalchemy + alembic add ~2 s to every command, and only a sqlite store needs them.
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _tables(con: sqlite3.Connection) -> set[str]:
    return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _revision(con: sqlite3.Connection, tables: set[str]) -> str | None:
    if "alembic_version" not in tables:
        return None
    row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def _holds_data(con: sqlite3.Connection, tables: set[str]) -> bool:
    """True when the store holds anything a user made (runs, models, traces, a second experiment)."""
    if any(con.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in _DATA_TABLES if t in tables):  # noqa: S608
        return True
    return "experiments" in tables and con.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] > 1


def repair_half_migrated(db: Path, uri: str) -> None:
    """Repair what a process that crashed while creating or upgrading ``db`` left; call it under :func:`store_lock`.

    * ``_alembic_tmp_<t>`` beside ``<t>``: an interrupted table rewrite whose original is intact;
      the copy is dropped.
    * An incomplete schema in a store that holds nothing yet (a crashed creation): the file is
      removed, and MLflow creates it again.
    * An incomplete schema in a store with runs: one sentence saying what to do.

    Raises:
        MedattnError: the store holds data and its schema is incomplete.
    """
    if not db.is_file() or db.stat().st_size == 0:
        return
    con = sqlite3.connect(db, timeout=60)
    try:
        tables = _tables(con)
        if not tables:
            return
        for tmp in sorted(t for t in tables if t.startswith(TMP_TABLE_PREFIX)):
            if tmp[len(TMP_TABLE_PREFIX) :] in tables:
                con.execute(f'DROP TABLE "{tmp}"')
                log.warning("dropped the table %s that an interrupted MLflow upgrade left in %s", tmp, db)
        con.commit()
        tables = _tables(con)
        orphans = sorted(t for t in tables if t.startswith(TMP_TABLE_PREFIX))
        revision = _revision(con, tables)
        if not orphans and revision == head_revision():
            return
        holds_data = _holds_data(con, tables)
    finally:
        con.close()
    if not holds_data:
        log.warning("recreating the tracking store %s: a crashed process left it half-created and empty", db)
        for leftover in (db, db.with_name(db.name + "-journal")):
            leftover.unlink(missing_ok=True)
        return
    raise MedattnError(_half_migrated_sentence(db, uri, orphans, revision))


def _half_migrated_sentence(db: Path, uri: str, orphans: list[str], revision: str | None) -> str:
    if orphans:
        tmp = orphans[0]
        return (
            f"the tracking store {str(db)!r} was left half-upgraded by a crashed process (table {tmp} replaces a "
            f"missing {tmp[len(TMP_TABLE_PREFIX) :]}); back the file up, run sqlite3 {db} 'ALTER TABLE {tmp} RENAME "
            f"TO {tmp[len(TMP_TABLE_PREFIX) :]}', then mlflow db upgrade {uri}."
        )
    return (
        f"the tracking store {str(db)!r} is at schema revision {revision or 'none'}, not {head_revision()} as this "
        f"MLflow expects (an older MLflow, or an upgrade a crashed process left unfinished); back the file up, "
        f"then run mlflow db upgrade {uri}."
    )


# ---- opening --------------------------------------------------------------------------------
def open_store(uri: str) -> None:
    """Point MLflow at ``uri`` and open it once, creating the tables of a new sqlite store.

    For a sqlite store this runs under :func:`store_lock`, after :func:`repair_half_migrated`, so
    that of many processes starting together exactly one creates (or repairs) the store and the
    others open it complete. Under DDP only rank 0 may call it.

    Raises:
        MedattnError: the lock timed out, or the store is half-migrated and holds data.
        MlflowException: MLflow cannot open the store (the caller words it).
    """
    mlflow.set_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is None:
        _first_query()
        return
    with store_lock(db):
        repair_half_migrated(db, uri)
        _first_query()


# ---- concurrent writers ---------------------------------------------------------------------
def is_locked_error(exc: BaseException) -> bool:
    """True for sqlite's ``database is locked`` (as MLflow or SQLAlchemy re-raise it)."""
    return isinstance(exc, (MlflowException, OperationalError, sqlite3.OperationalError)) and (
        "database is locked" in str(exc)
    )


def is_dataset_race(exc: BaseException) -> bool:
    """True when two runs logged the same new MLflow Dataset at once and the slower insert lost.

    MLflow's stores look a dataset up by (experiment, name, digest) and insert it when missing, in
    two steps: two workers of one search that start together both miss it, and the second insert
    breaks the unique key (PostgreSQL ``duplicate key value violates unique constraint
    "dataset_pk"``, sqlite ``UNIQUE constraint failed: datasets...``). Repeating the call then finds
    the row and only links it to the run.
    """
    text = str(exc)
    return isinstance(exc, (MlflowException, IntegrityError)) and (
        ("duplicate key value" in text and "dataset" in text) or "UNIQUE constraint failed: datasets" in text
    )


def retry_while(transient: Callable[[BaseException], bool]) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """A decorator: ``fn``, retried with exponential backoff (and jitter) while it raises ``transient`` errors.

    Only for calls that are safe to repeat after a refusal: MLflow rolls back the transaction of a
    refused call, so a metric, param or tag is written exactly once. Waits 0.1, 0.2, 0.4 ... s
    (at most :data:`LOCKED_MAX_WAIT_S`), :data:`LOCKED_RETRIES` times, then re-raises.
    """

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            for attempt in range(LOCKED_RETRIES):
                try:
                    return fn(*args, **kwargs)
                except (MlflowException, SQLAlchemyError, sqlite3.Error) as exc:
                    if not transient(exc):
                        raise
                    wait = min(LOCKED_MAX_WAIT_S, LOCKED_FIRST_WAIT_S * 2**attempt) * random.uniform(0.5, 1.5)  # noqa: S311
                    reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                    log.debug("store refused %s (%s); retrying in %.1f s", getattr(fn, "__name__", fn), reason, wait)
                    time.sleep(wait)
            return fn(*args, **kwargs)  # the last attempt: its error goes to the caller

        return wrapper

    return decorate


#: Retries a write that sqlite refused with ``database is locked``.
retry_locked = retry_while(is_locked_error)
#: Retries logging a dataset that was refused because of a lock or a concurrent insert of the same dataset.
retry_dataset = retry_while(lambda exc: is_locked_error(exc) or is_dataset_race(exc))


@retry_locked
def _first_query() -> None:
    """The query that makes MLflow create (or check) the store's tables."""
    mlflow.MlflowClient().search_experiments(max_results=1)

"""One store, many processes: the creation lock, half-migrated stores, ``database is locked`` retries."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from medattn.errors import MedattnError
from medattn.tracking import runs, store


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.fixture
def store_copy(tmp_path, _template_store) -> Path:
    """A complete, empty sqlite store (a copy of the session's template) under a fresh path."""
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(_template_store, db)
    return db


def test_sqlite_path_and_the_lock_beside_it(tmp_path):
    db = tmp_path / "a b" / "mlflow.db"
    assert store.sqlite_path(f"sqlite:///{db}") == db.resolve()
    assert store.lock_path(db) == db.with_name("mlflow.db.lock")
    for other in ("http://mlflow.lab:5000", "postgresql://u@h/db", "sqlite://", "sqlite:///:memory:"):
        assert store.sqlite_path(other) is None, other


def test_the_lock_is_exclusive_across_open_files_and_times_out_in_one_sentence(tmp_path):
    db = tmp_path / "mlflow.db"
    with store.store_lock(db):
        assert store.lock_path(db).is_file()
        with pytest.raises(MedattnError, match=r"has held .*mlflow\.db\.lock.* for 0 s") as err:
            with store.store_lock(db, timeout=0.3, poll=0.05):
                pass  # pragma: no cover - never entered
        assert "\n" not in str(err.value)
    with store.store_lock(db, timeout=0.3):  # released on exit: free again
        pass
    assert store.lock_path(db).is_file(), "the lock file is kept (deleting it would let two processes lock)"


def test_an_interrupted_table_rewrite_is_dropped_and_the_store_opens(store_copy, caplog):
    with sqlite3.connect(store_copy) as con:
        con.execute("CREATE TABLE _alembic_tmp_tags AS SELECT * FROM tags")
    uri = f"sqlite:///{store_copy}"
    store.open_store(uri)
    assert "_alembic_tmp_tags" not in _tables(store_copy)
    assert "tags" in _tables(store_copy)
    assert mlflow.MlflowClient().get_experiment("0") is not None
    assert "_alembic_tmp_tags" in caplog.text


def test_a_half_created_empty_store_is_removed_for_recreation(store_copy):
    with sqlite3.connect(store_copy) as con:
        con.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")  # an early revision
    store.repair_half_migrated(store_copy, f"sqlite:///{store_copy}")
    assert not store_copy.exists()


def test_a_crashed_parallel_creation_is_created_again_on_the_next_open(store_copy, caplog):
    """What parallel starts on a fresh folder produced: a creation killed between alembic's DROP TABLE
    and RENAME, in a store with no runs."""
    with sqlite3.connect(store_copy) as con:
        con.execute("ALTER TABLE tags RENAME TO _alembic_tmp_tags")
        con.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")
    store.open_store(f"sqlite:///{store_copy}")
    tables = _tables(store_copy)
    assert "tags" in tables and not [t for t in tables if t.startswith("_alembic_tmp_")]
    with sqlite3.connect(store_copy) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == store.head_revision()
    assert "recreating the tracking store" in caplog.text


def test_a_complete_store_is_left_alone(store_copy):
    before = store_copy.read_bytes()
    store.repair_half_migrated(store_copy, f"sqlite:///{store_copy}")
    assert store_copy.read_bytes() == before


def test_a_half_migrated_store_with_runs_is_one_sentence_and_exit_2(
    mlflow_store, demo_dir, tiny_args, cli, one_error_line
):
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("kept"))
    client.set_terminated(run.info.run_id)
    db = store.sqlite_path(mlflow_store)
    with sqlite3.connect(db) as con:  # a crash between alembic's DROP TABLE tags and its RENAME
        con.execute("ALTER TABLE tags RENAME TO _alembic_tmp_tags")
    result = cli(["train", "--dataset", "demo", "--data-dir", str(demo_dir), *tiny_args], exit_code=2)
    line = one_error_line(result, "half-upgraded", "_alembic_tmp_tags", "mlflow db upgrade")
    assert "RENAME TO tags" in line
    assert db.is_file(), "a store with runs is never removed"


def test_retry_locked_repeats_only_database_is_locked(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(store.time, "sleep", waits.append)
    calls = []

    @store.retry_locked
    def write(value: int) -> int:
        calls.append(value)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return value * 2

    assert write(21) == 42
    assert calls == [21, 21, 21]
    assert len(waits) == 2 and waits[1] > waits[0] * 0.3  # backoff (with jitter)

    @store.retry_locked
    def broken() -> None:
        calls.append(0)
        raise MlflowException("UNIQUE constraint failed: experiments.name")

    calls.clear()
    with pytest.raises(MlflowException, match="UNIQUE"):
        broken()
    assert calls == [0], "other errors are not retried"


def test_retry_locked_gives_up_after_its_budget(monkeypatch):
    monkeypatch.setattr(store.time, "sleep", lambda s: None)
    calls = []

    @store.retry_locked
    def always_locked() -> None:
        calls.append(1)
        raise MlflowException("database is locked")

    with pytest.raises(MlflowException, match="database is locked"):
        always_locked()
    assert len(calls) == store.LOCKED_RETRIES + 1


def test_a_locked_end_of_run_still_ends_the_run(mlflow_store, monkeypatch):
    """``mlflow.end_run`` pops the run before writing its status: a refused write must not leave it RUNNING."""
    real = mlflow.MlflowClient.set_terminated
    refused = []

    def flaky(self, run_id, status=None, end_time=None):
        if not refused:
            refused.append(run_id)
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return real(self, run_id, status, end_time)

    monkeypatch.setattr(store.time, "sleep", lambda s: None)
    monkeypatch.setattr(mlflow.MlflowClient, "set_terminated", flaky)
    with runs.tracked_run(experiment_id="0", run_name="locked") as run:
        pass
    assert refused == [run.info.run_id]
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"

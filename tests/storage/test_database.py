"""Database: pragmas, readers, write transactions, lock contention, close."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent_cli_proxy.storage import (
    Database,
    DatabaseClosedError,
    PendingRow,
    get_request,
    insert_pending,
    open_database,
)

MakePending = Callable[..., PendingRow]


@contextmanager
def foreign_write_lock(path: Path) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Another connection (as another process would) holding the file's write lock.

    Yields (release, released): set ``release`` to let it COMMIT; ``released`` is set
    once it has.
    """
    held, release, released = threading.Event(), threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO api_keys (key_hash, key_prefix, name) "
                         "VALUES ('h', 'p', 'other process')")
            held.set()
            release.wait(timeout=30)
            conn.execute("COMMIT")
        except BaseException as exc:
            failure.append(exc)
        finally:
            conn.close()
            held.set()
            released.set()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(timeout=30)
    try:
        yield release, released
    finally:
        release.set()
        thread.join(timeout=30)
    assert failure == []


def test_pragmas_and_directory_creation(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "proxy.db"
    with open_database(path) as db:
        assert path.exists()
        writer_conn = db.reader()
        assert writer_conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert writer_conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert writer_conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert writer_conn.execute("PRAGMA query_only").fetchone()[0] == 1
        with db.write() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert db.ping() is True


def test_readers_are_per_thread_and_read_only(db: Database) -> None:
    mine = db.reader()
    assert db.reader() is mine
    other: list[sqlite3.Connection] = []
    t = threading.Thread(target=lambda: other.append(db.reader()))
    t.start()
    t.join()
    assert other[0] is not mine
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        mine.execute("INSERT INTO api_keys (key_hash, key_prefix, name) VALUES ('a','b','c')")
    # A dead thread's connection is closed when the next reader is made.
    t2 = threading.Thread(target=db.reader)
    t2.start()
    t2.join()
    assert db.reader_count() == 2  # this thread's and t2's; the first thread's pruned


def test_write_rolls_back_on_error(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.write() as conn:
        conn.execute("INSERT INTO api_keys (key_hash, key_prefix, name) VALUES ('a','b','c')")
        raise Boom
    assert db.reader().execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == 0
    with db.write() as conn:  # the writer is usable again
        conn.execute("INSERT INTO api_keys (key_hash, key_prefix, name) VALUES ('a','b','c')")
    assert db.reader().execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == 1


def test_write_waits_for_another_connection(db: Database, db_path: Path,
                                            make_pending: MakePending) -> None:
    db.retry_sleep = lambda _s: pytest.fail("busy_timeout should have covered the wait")
    with foreign_write_lock(db_path) as (release, _released):
        # Release the other writer only once our BEGIN IMMEDIATE has started, so we are
        # inside SQLite's busy handler (or about to be) when it commits.
        def on_statement(sql: str) -> None:
            if sql.startswith("BEGIN IMMEDIATE"):
                release.set()

        db._writer.set_trace_callback(on_statement)
        try:
            row_id = insert_pending(db, make_pending())
        finally:
            db._writer.set_trace_callback(None)
    assert get_request(db, row_id) is not None


def test_write_retries_after_busy_timeout(db_path: Path, make_pending: MakePending) -> None:
    open_database(db_path).close()
    # A short busy_timeout so SQLite gives up at once and our retry loop takes over.
    db = Database.open(db_path, busy_timeout_ms=20)
    delays: list[float] = []
    try:
        with foreign_write_lock(db_path) as (release, released):
            def between_attempts(delay: float) -> None:
                delays.append(delay)
                release.set()
                assert released.wait(timeout=30)

            db.retry_sleep = between_attempts
            row_id = insert_pending(db, make_pending())
        assert delays == [0.05]
        assert get_request(db, row_id) is not None
        # The other connection's committed write is there too.
        assert db.reader().execute("SELECT name FROM api_keys").fetchone()[0] == "other process"
    finally:
        db.close()


def test_write_gives_up_after_retries(db_path: Path, make_pending: MakePending) -> None:
    open_database(db_path).close()
    db = Database.open(db_path, busy_timeout_ms=10)
    delays: list[float] = []
    db.retry_sleep = delays.append
    try:
        with foreign_write_lock(db_path), pytest.raises(sqlite3.OperationalError,
                                                        match="locked"):
            insert_pending(db, make_pending())
        assert delays == [0.05, 0.2, 0.8]
        # Nothing half-open: the next write works.
        insert_pending(db, make_pending())
    finally:
        db.close()


def test_close_checkpoints_and_is_idempotent(db_path: Path, make_pending: MakePending) -> None:
    db = open_database(db_path)
    for i in range(20):
        insert_pending(db, make_pending(request_id=str(i)))
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0
    db.close()
    assert not wal.exists() or wal.stat().st_size == 0
    db.close()
    assert db.closed
    assert db.ping() is False
    with pytest.raises(DatabaseClosedError):
        db.reader()
    with pytest.raises(DatabaseClosedError), db.write():
        pass
    # Everything reached the main file.
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT COUNT(*) FROM request_logs").fetchone()[0] == 20
    conn.close()


def test_background_checkpoints_copy_the_wal_without_the_writer(
        db_path: Path, make_pending: MakePending, tmp_path: Path) -> None:
    import shutil

    from tests.conftest import wait_until

    db = open_database(db_path)
    try:
        db.start_checkpointer(interval_s=0.01)
        db.start_checkpointer(interval_s=0.01)  # once is enough
        with db.write() as conn:
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 4_000
        for i in range(5):
            insert_pending(db, make_pending(request_id=str(i)))

        def in_main_file() -> bool:
            # The main file alone (no -wal beside the copy) holds what was checkpointed.
            copy = tmp_path / f"copy-{threading.get_ident()}.db"
            shutil.copyfile(db_path, copy)
            conn = sqlite3.connect(copy)
            try:
                count: int = conn.execute("SELECT COUNT(*) FROM request_logs").fetchone()[0]
                return count == 5
            except sqlite3.OperationalError:  # not even the tables are there yet
                return False
            finally:
                conn.close()

        wait_until(in_main_file, what="the rows in the main database file")
    finally:
        db.close()
    assert not any(t.name == "sqlite-checkpoints" for t in threading.enumerate())
    wal = db_path.with_name(db_path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0

"""Pooled readers: a few connections serve any number of threads."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from agent_cli_proxy.storage import Database, DatabaseClosedError
from agent_cli_proxy.storage.database import MAX_IDLE_READERS


def test_read_borrows_a_read_only_connection_and_gives_it_back(db: Database) -> None:
    with db.read() as first:
        assert first.execute("PRAGMA query_only").fetchone()[0] == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            first.execute("INSERT INTO api_keys (key_hash, key_prefix, name) "
                          "VALUES ('a','b','c')")
        with db.read() as second:  # in use: another one
            assert second is not first
    assert db.idle_reader_count() == 2
    with db.read() as again:
        assert again in (first, second)


def test_threads_share_a_bounded_pool(db: Database) -> None:
    start = threading.Barrier(40)
    seen: set[int] = set()
    failures: list[BaseException] = []

    def work() -> None:
        try:
            start.wait()
            for _ in range(20):
                with db.read() as conn:
                    assert conn.execute("SELECT 1").fetchone()[0] == 1
                    seen.add(id(conn))
            db.reader().execute("SELECT 1").fetchall()
            db.release_reader()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert db.reader_count() == 0  # every thread gave its reader back
    assert db.idle_reader_count() <= MAX_IDLE_READERS


def test_a_released_reader_serves_the_next_thread(db: Database) -> None:
    mine = db.reader()
    assert db.reader() is mine and db.reader_count() == 1
    db.release_reader()
    assert db.reader_count() == 0 and db.idle_reader_count() == 1
    db.release_reader()  # nothing held: nothing happens
    other: list[sqlite3.Connection] = []
    t = threading.Thread(target=lambda: other.append(db.reader()))
    t.start()
    t.join()
    assert other == [mine]


def test_close_closes_pooled_and_borrowed_readers(db: Database) -> None:
    with db.read() as borrowed:
        with db.read() as idle:
            pass
        db.close()
    for conn in (borrowed, idle):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    with pytest.raises(DatabaseClosedError), db.read():
        pass

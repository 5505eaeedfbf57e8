"""The row writer: calls' rows written by its thread, many per transaction, in order;
one bad write never costing the others theirs; nothing queued lost at close.

To hold the writer at a known point the tests take SQLite's write lock from a connection
of their own (as another process would): the writer then waits in BEGIN IMMEDIATE with
the batch it has taken, and whatever is queued meanwhile goes into the next batch.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy.storage import Database, PendingRow, get_request, insert_pending, row_writer
from agent_cli_proxy.storage.requests import finalize
from agent_cli_proxy.storage.row_writer import PendingTicket, RowWriter
from tests.conftest import event_name, logged_events, wait_until
from tests.storage.test_requests import fin

MakePending = Callable[..., PendingRow]


@contextlib.contextmanager
def write_lock_held(db_path: Path) -> Iterator[None]:
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@contextlib.contextmanager
def writer_waiting(writer: RowWriter, db_path: Path, make_pending: MakePending
                   ) -> Iterator[PendingTicket]:
    """The writer stuck on SQLite's write lock (another connection holds it) with the
    pending row "held" taken: whatever is queued meanwhile goes into its next batch."""
    with write_lock_held(db_path):
        held = writer.submit(make_pending(request_id="held"))
        wait_until(lambda: not writer.queued, what="the writer to take a row")
        yield held


def all_rows(db: Database) -> list[dict[str, Any]]:
    return [dict(r) for r in db.reader().execute("SELECT * FROM request_logs ORDER BY id")]


def test_rows_are_written_by_the_writer_thread(db: Database, make_pending: MakePending
                                               ) -> None:
    writer = RowWriter(db)
    tickets = [writer.submit(make_pending(request_id=f"req-{i}")) for i in range(5)]
    ids = [t.wait(30) for t in tickets]
    assert all(isinstance(i, int) for i in ids)
    rows = all_rows(db)
    assert [(r["id"], r["request_id"], r["lifecycle_status"]) for r in rows] == [
        (ids[i], f"req-{i}", "pending") for i in range(5)]
    assert "row-writer" in {t.name for t in threading.enumerate()}
    writer.close()
    assert "row-writer" not in {t.name for t in threading.enumerate()}


def test_outcomes_follow_their_pending_rows_and_run_their_callback(
        db: Database, make_pending: MakePending) -> None:
    writer = RowWriter(db)
    finished: list[tuple[int, bool, str]] = []
    ticket = writer.submit(make_pending(request_id="a"))
    writer.finish(ticket, fin(), lambda row_id, updated: finished.append(
        (row_id, updated, threading.current_thread().name)))
    assert writer.flush()
    row = get_request(db, ticket.row_id or 0)
    assert row is not None and row["lifecycle_status"] == "completed"
    assert finished == [(ticket.row_id, True, "row-writer")]
    writer.close()


def test_queued_calls_share_one_transaction(db: Database, db_path: Path,
                                            make_pending: MakePending) -> None:
    writer = RowWriter(db)
    observer = sqlite3.connect(db_path, isolation_level=None)
    with writer_waiting(writer, db_path, make_pending) as held:
        # Started and finished while the writer waits: one batch for all ten writes.
        tickets = [writer.submit(make_pending(request_id=f"c{i}")) for i in range(5)]
        for ticket in tickets:
            writer.finish(ticket, fin())
        before = observer.execute("PRAGMA data_version").fetchone()[0]
    assert writer.flush()
    after = observer.execute("PRAGMA data_version").fetchone()[0]
    observer.close()
    # data_version moves once per commit seen by another connection: by at most two
    # (the held row's transaction and the batch), not by eleven.
    assert 1 <= after - before <= 2
    assert held.row_id is not None
    rows = {r["request_id"]: r["lifecycle_status"] for r in all_rows(db)}
    assert rows == {"held": "pending", **{f"c{i}": "completed" for i in range(5)}}
    writer.close()


def test_pending_then_outcome_in_one_batch_stores_what_two_transactions_store(
        db: Database, db_path: Path, make_pending: MakePending) -> None:
    two_steps = insert_pending(db, make_pending(request_id="a"))
    assert finalize(db, two_steps, fin())
    writer = RowWriter(db)
    with writer_waiting(writer, db_path, make_pending) as held:
        ticket = writer.submit(make_pending(request_id="b"))
        writer.finish(ticket, fin())
    assert writer.flush()
    writer.close()
    assert held.row_id is not None
    rows = {r["request_id"]: r for r in all_rows(db)}
    differ = {"id", "request_id"}
    assert {k: v for k, v in rows["a"].items() if k not in differ} == {
        k: v for k, v in rows["b"].items() if k not in differ}
    audits = [tuple(r)[2:] for r in db.reader().execute(
        "SELECT id, request_log_id, model, provider, source, base_cost_usd, calc_at, rule,"
        " price_key, detail_json FROM cost_audit ORDER BY request_log_id")]
    assert len(audits) == 2 and audits[0] == audits[1]
    counted = db.reader().execute("SELECT request_count, total_tokens FROM daily_usage"
                                  ).fetchall()
    assert [tuple(r) for r in counted] == [(2, 40)]


def test_one_bad_row_does_not_cost_the_others_theirs(db: Database, db_path: Path,
                                                     make_pending: MakePending) -> None:
    writer = RowWriter(db)
    done: list[str] = []
    with logged_events("lifecycle", event_name) as events:
        with writer_waiting(writer, db_path, make_pending) as held:
            # Queued together: one batch. No such API key: the foreign key refuses it.
            batch = [writer.submit(make_pending(request_id="good-1")),
                     writer.submit(make_pending(request_id="bad", proxy_api_key_id=999)),
                     writer.submit(make_pending(request_id="good-2"))]
            for ticket in batch:
                writer.finish(ticket, fin(), lambda _id, _u, t=ticket: done.append(
                    t.row.request_id))
        assert writer.flush()
        writer.close()
    assert held.row_id is not None
    assert [t.row_id is not None for t in batch] == [True, False, True]
    assert {r["request_id"]: r["lifecycle_status"] for r in all_rows(db)} == {
        "held": "pending", "good-1": "completed", "good-2": "completed"}
    assert sorted(done) == ["good-1", "good-2"]
    assert events.count("lifecycle.prelog_failed") == 1


def test_close_writes_what_is_queued_then_writes_are_done_inline(
        db: Database, db_path: Path, make_pending: MakePending) -> None:
    writer = RowWriter(db)
    with writer_waiting(writer, db_path, make_pending) as held:
        queued = writer.submit(make_pending(request_id="queued"))
        writer.finish(queued, fin())
        closing = threading.Thread(target=writer.close)
        closing.start()
    closing.join(timeout=30)
    assert not closing.is_alive()
    late = writer.submit(make_pending(request_id="late"))
    # Written before submit returned, by the caller's thread.
    assert late.written and late.row_id is not None
    writer.finish(late, fin())
    assert {r["request_id"]: r["lifecycle_status"] for r in all_rows(db)} == {
        "held": "pending", "queued": "completed", "late": "completed"}
    assert held.written
    assert "row-writer" not in {t.name for t in threading.enumerate()}


def test_a_locked_database_delays_the_batch_and_loses_nothing(
        db_path: Path, make_pending: MakePending) -> None:
    db = Database.open(db_path, busy_timeout_ms=20)  # gives up on the lock quickly
    writer = RowWriter(db)
    try:
        with logged_events("lifecycle", event_name) as events:
            with write_lock_held(db_path):
                tickets = [writer.submit(make_pending(request_id=f"c{i}")) for i in range(3)]
                for ticket in tickets:
                    writer.finish(ticket, fin())
                wait_until(lambda: "lifecycle.writes_waiting" in events,
                           what="the writer to find the database locked")
            assert writer.flush()
        assert {r["request_id"]: r["lifecycle_status"] for r in all_rows(db)} == {
            f"c{i}": "completed" for i in range(3)}
        assert "lifecycle.prelog_failed" not in events
        assert "lifecycle.finalize_failed" not in events
    finally:
        writer.close()
        db.close()


def test_callers_wait_for_room_once_max_queued_writes_wait(
        db: Database, db_path: Path, make_pending: MakePending,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(row_writer, "MAX_QUEUED", 3)
    writer = RowWriter(db)
    with writer_waiting(writer, db_path, make_pending):
        tickets = [writer.submit(make_pending(request_id=f"q{i}")) for i in range(3)]
        late: list[PendingTicket] = []
        blocked = threading.Thread(
            target=lambda: late.append(writer.submit(make_pending(request_id="late"))))
        blocked.start()
        # It waits for room (the queue is full), on the writer's condition.
        wait_until(lambda: len(writer._room._waiters) == 1,  # type: ignore[attr-defined]
                   what="the fourth caller to wait")
        assert blocked.is_alive() and writer.queued == 3 and not late
    blocked.join(30)  # the lock is gone: the writer makes room
    assert not blocked.is_alive()
    assert writer.flush()
    assert all(t.row_id is not None for t in [*tickets, *late])
    writer.close()


def test_a_full_batch_is_written_without_waiting_for_more(
        db: Database, db_path: Path, make_pending: MakePending,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lingered: list[float] = []
    sleep = row_writer.time.sleep

    def recording(seconds: float) -> None:
        if threading.current_thread().name == "row-writer":
            lingered.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(row_writer.time, "sleep", recording)
    writer = RowWriter(db)
    with writer_waiting(writer, db_path, make_pending):
        tickets = [writer.submit(make_pending(request_id=f"r{i}"))
                   for i in range(row_writer.MAX_BATCH + 1)]
    assert all(isinstance(t.wait(30), int) for t in tickets)
    # "held" waited for company, the next MAX_BATCH went at once, the last one waited.
    assert lingered == [row_writer.LINGER_S] * 2
    writer.close()


def test_an_outcome_queued_while_close_drains_follows_its_pending_row(
        db: Database, db_path: Path, make_pending: MakePending) -> None:
    # The server is stopping: close() waits for the writer, and a call still running
    # ends meanwhile. Written inline, its outcome would go ahead of its pending row
    # (still queued), find no row and be lost.
    writer = RowWriter(db)
    with writer_waiting(writer, db_path, make_pending):
        late = writer.submit(make_pending(request_id="late"))
        closer = threading.Thread(target=writer.close)
        closer.start()
        wait_until(lambda: writer._closed, what="close() to start")
        writer.finish(late, fin())  # queued behind its pending row, not written here
        assert writer.queued == 2
    closer.join(30)
    assert late.row_id is not None
    row = get_request(db, late.row_id)
    assert row is not None and row["lifecycle_status"] == "completed"

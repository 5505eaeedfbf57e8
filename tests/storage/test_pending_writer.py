"""The pending-row writer: rows written beside the call, taken back when the call was
quicker, one bad row never costing the others theirs, nothing queued lost at close.

To hold the writer at a known point the tests take SQLite's write lock from a connection
of their own (as another process would): the writer then waits in BEGIN IMMEDIATE with
the batch it has claimed, and whatever is submitted meanwhile stays queued.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent_cli_proxy.storage import Database, PendingRow, get_request, insert_pending
from agent_cli_proxy.storage.pending_writer import PendingWriter
from agent_cli_proxy.storage.requests import finalize, insert_final
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


def all_rows(db: Database) -> list[dict[str, Any]]:
    return [dict(r) for r in db.reader().execute("SELECT * FROM request_logs ORDER BY id")]


def test_rows_are_written_by_the_writer_thread(db: Database, make_pending: MakePending
                                               ) -> None:
    writer = PendingWriter(db)
    tickets = [writer.submit(make_pending(request_id=f"req-{i}")) for i in range(5)]
    ids = [t.wait() for t in tickets]
    assert all(isinstance(i, int) for i in ids)
    rows = all_rows(db)
    assert [(r["id"], r["request_id"], r["lifecycle_status"]) for r in rows] == [
        (ids[i], f"req-{i}", "pending") for i in range(5)]
    assert not any(t.take() for t in tickets)  # written: nothing to take back
    assert "pending-rows" in {t.name for t in threading.enumerate()}
    writer.close()
    assert "pending-rows" not in {t.name for t in threading.enumerate()}


def test_a_call_takes_back_a_row_not_yet_written(db: Database, db_path: Path,
                                                 make_pending: MakePending) -> None:
    writer = PendingWriter(db)
    with write_lock_held(db_path):
        first = writer.submit(make_pending(request_id="first"))
        wait_until(lambda: not first.queued, what="the writer to claim the first row")
        second = writer.submit(make_pending(request_id="second"))
        assert second.queued
        assert second.take() is True  # the call was over first: it stores the row itself
        assert first.take() is False  # being written
    assert first.wait() is not None
    writer.close()
    assert [r["request_id"] for r in all_rows(db)] == ["first"]  # the writer skipped it
    assert second.wait() is None  # never written by the writer
    row_id = insert_final(db, second.row, fin())
    stored = get_request(db, row_id)
    assert stored is not None
    assert (stored["request_id"], stored["lifecycle_status"]) == ("second", "completed")


def test_insert_final_stores_what_pending_then_finalize_stores(
        db: Database, make_pending: MakePending) -> None:
    two_steps = insert_pending(db, make_pending(request_id="a"))
    assert finalize(db, two_steps, fin())
    one_step = insert_final(db, make_pending(request_id="b"), fin())
    rows = {r["request_id"]: r for r in all_rows(db)}
    differ = {"id", "request_id"}
    assert {k: v for k, v in rows["a"].items() if k not in differ} == {
        k: v for k, v in rows["b"].items() if k not in differ}
    audits = [tuple(r)[2:] for r in db.reader().execute(
        "SELECT id, request_log_id, model, provider, source, base_cost_usd, calc_at, rule,"
        " price_key, detail_json FROM cost_audit WHERE request_log_id IN (?, ?)"
        " ORDER BY request_log_id", (two_steps, one_step))]
    assert len(audits) == 2 and audits[0] == audits[1]
    counted = db.reader().execute("SELECT request_count, total_tokens FROM daily_usage"
                                  ).fetchall()
    assert [tuple(r) for r in counted] == [(2, 40)]


def test_one_bad_row_does_not_cost_the_others_theirs(db: Database, db_path: Path,
                                                     make_pending: MakePending) -> None:
    writer = PendingWriter(db)
    with logged_events("lifecycle", event_name) as events:
        with write_lock_held(db_path):
            held = writer.submit(make_pending(request_id="held"))
            wait_until(lambda: not held.queued, what="the writer to claim a row")
            # Queued together: one batch. No such API key: the foreign key refuses it.
            batch = [writer.submit(make_pending(request_id="good-1")),
                     writer.submit(make_pending(request_id="bad", proxy_api_key_id=999)),
                     writer.submit(make_pending(request_id="good-2"))]
        ids = [t.wait() for t in batch]
        writer.close()
    assert ids[0] is not None and ids[1] is None and ids[2] is not None
    assert [r["request_id"] for r in all_rows(db)] == ["held", "good-1", "good-2"]
    assert events.count("lifecycle.prelog_failed") == 1


def test_close_writes_what_is_queued_then_rows_are_written_inline(
        db: Database, db_path: Path, make_pending: MakePending) -> None:
    writer = PendingWriter(db)
    with write_lock_held(db_path):
        held = writer.submit(make_pending(request_id="held"))
        wait_until(lambda: not held.queued, what="the writer to claim a row")
        queued = writer.submit(make_pending(request_id="queued"))
        closing = threading.Thread(target=writer.close)
        closing.start()
    closing.join(timeout=30)
    assert not closing.is_alive()
    assert queued.wait() is not None
    late = writer.submit(make_pending(request_id="late"))
    # Written before submit returned, by the caller's thread.
    assert late.row_id is not None and not late.queued and not late.take()
    assert [r["request_id"] for r in all_rows(db)] == ["held", "queued", "late"]
    assert "pending-rows" not in {t.name for t in threading.enumerate()}

"""kill -9 in the middle of streams loses nothing: the next start closes the orphans."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from agent_cli_proxy.storage.instance_lock import acquire_instance_lock
from tests import wire
from tests.cli.test_shutdown import open_stream, serving
from tests.conftest import wait_until
from tests.fake_upstream import FakeUpstream, Script


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "agent-cli-proxy" / "proxy.db"


def statuses_now(tmp_path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db_path(tmp_path))) as conn:
        return [r[0] for r in conn.execute(
            "SELECT lifecycle_status FROM request_logs ORDER BY id")]


def test_orphans_of_a_killed_proxy_are_recovered_at_the_next_start(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    canned = wire.messages_stream()
    with serving(tmp_path, upstream) as (proc, port):
        conn, resp = open_stream(port)  # completes normally
        assert resp.read() == canned.body
        conn.close()
        scripts = [upstream.script(Script(content_type=canned.content_type,
                                          pieces=canned.pieces, pause_after=1))
                   for _ in range(2)]
        for _ in range(2):  # two streams open when the process dies
            conn, resp = open_stream(port)
            resp.read1(65536)
        # Pending rows are written beside their calls, a moment after they start.
        wait_until(lambda: len(statuses_now(tmp_path)) == 3, what="the pending rows")
        proc.kill()
        proc.wait(timeout=30)
    for script in scripts:
        script.release.set()
    assert statuses_now(tmp_path) == ["completed", "pending", "pending"]

    with serving(tmp_path, upstream) as (proc, _port):  # the restart
        proc.terminate()
        proc.wait(timeout=30)
    with contextlib.closing(sqlite3.connect(db_path(tmp_path))) as conn:
        rows = conn.execute("SELECT lifecycle_status, error_message, total_tokens "
                            "FROM request_logs ORDER BY id").fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        counted = conn.execute("SELECT SUM(request_count) FROM daily_usage").fetchone()[0]
    assert rows[0] == ("completed", None, canned.usage.total_tokens)
    assert [r[:2] for r in rows[1:]] == [("aborted", "boot-recovery")] * 2
    assert counted == 3  # recovered rows are counted like any finalized row


def test_a_second_proxy_on_the_same_database_leaves_young_rows_alone(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    with serving(tmp_path, upstream) as (proc, _port):  # creates the database
        proc.terminate()
        proc.wait(timeout=30)
    with contextlib.closing(sqlite3.connect(db_path(tmp_path))) as conn:
        conn.execute("INSERT INTO request_logs (provider, model, path, started_at, "
                     "lifecycle_status, cost_status) VALUES ('anthropic', 'm', '/v1/messages',"
                     " strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'pending', 'unresolved')")
        conn.commit()
    held = acquire_instance_lock(str(db_path(tmp_path)))  # "another proxy" is serving
    assert held is not None
    try:
        with serving(tmp_path, upstream) as (proc, _port):
            proc.terminate()
            proc.wait(timeout=30)
            events = proc.startup_events  # type: ignore[attr-defined]
    finally:
        held.release()
    assert "storage.shared_database" in events
    with contextlib.closing(sqlite3.connect(db_path(tmp_path))) as conn:
        assert conn.execute("SELECT lifecycle_status FROM request_logs").fetchone() == (
            "pending",)

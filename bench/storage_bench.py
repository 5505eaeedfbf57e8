"""SQLite throughput of the proxy's own recording path: insert pending, then finalize.

Two ways. :func:`finalize_throughput`: one transaction per write, as
:class:`agent_cli_proxy.web.recorder.CallRecorder` does without a row writer (with
PROXY_REQUIRE_API_KEY): ``insert_pending`` (one ``BEGIN IMMEDIATE`` transaction) and
``finalize`` (one more: the row update, its ``daily_usage`` aggregate and its
``cost_audit`` entry). :func:`writer_throughput`: the same writes through the server's
``RowWriter``, which puts whatever has queued up in one transaction. Both on a fresh
database file in WAL mode opened (and migrated) by ``Database.open``. The background
checkpoints ``serve`` starts (``Database.start_checkpointer``) are left out: in this tight
loop of writes the checkpointing thread competes with the writer for the same cores and
never catches up, which lowers rows/s (about -20 %) while it removes the fsync stalls
from the writes (p99 per row 3.3 ms -> 0.3 ms); the proxy's latency figures show that.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path

import repo_path  # noqa: F401  (the checkout's agent_cli_proxy)

from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.requests import (
    Finalization,
    PendingRow,
    finalize,
    insert_pending,
    iso_utc,
)
from agent_cli_proxy.storage.row_writer import RowWriter
from tests import wire


def _pending(started: str) -> PendingRow:
    canned = wire.messages_stream()
    return PendingRow(
        provider="anthropic", model=canned.model, requested_model=canned.model,
        tool="claude-code", client_id="claude-code", path="/v1/messages", streamed=True,
        started_at=started, request_id=str(uuid.uuid4()),
        meta_json='{"method":"POST","originator":null,"session_id":null}',
        user_agent="claude-cli/2.1.87 (external, cli)", source_ip="127.0.0.1", agent=None,
        msg_id=None, session_id="0f5e7c1c-6f4c-4a55-9d6c-0a8f2f1c2b3d",
        identify_rule="user_agent")


def _finalization(finished: str) -> Finalization:
    canned = wire.messages_stream()
    detail = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75,
              "tokens": {"prompt": 25, "cache_read": 2000, "cache_creation": 1000}}
    return Finalization(
        lifecycle_status="completed", status=200, model=canned.model,
        actual_model=canned.model, usage=canned.usage, streamed=True, latency_ms=1234,
        finished_at=finished, upstream_latency_ms=321, cost_usd=0.0123, cost_status="ok",
        cost_rule="exact", cost_price_key=f"anthropic/{canned.model}",
        cost_detail_json=json.dumps(detail, separators=(",", ":")))


WARMUP_ROWS = 200


def finalize_throughput(rows: int) -> float:
    """Rows per second for insert_pending + finalize, *rows* times, one thread.

    A first :data:`WARMUP_ROWS` rows are not timed (page cache, WAL file growth).
    """
    with tempfile.TemporaryDirectory(prefix="acp-bench-db-") as tmp:
        db = Database.open(Path(tmp) / "bench.db")
        try:
            now = iso_utc(time.time())
            pending, fin = _pending(now), _finalization(now)
            for _ in range(WARMUP_ROWS):
                finalize(db, insert_pending(db, pending), fin)
            started = time.perf_counter()
            for _ in range(rows):
                row_id = insert_pending(db, pending)
                if not finalize(db, row_id, fin):
                    raise RuntimeError(f"row {row_id} was not finalized")
            elapsed = time.perf_counter() - started
        finally:
            db.close()
    return rows / elapsed


def writer_throughput(rows: int) -> float:
    """Rows per second through a :class:`RowWriter`: *rows* calls' pending rows and
    outcomes queued from one thread as fast as it can, until all are committed."""
    with tempfile.TemporaryDirectory(prefix="acp-bench-db-") as tmp:
        db = Database.open(Path(tmp) / "bench.db")
        writer = RowWriter(db)
        try:
            now = iso_utc(time.time())
            pending, fin = _pending(now), _finalization(now)
            for _ in range(WARMUP_ROWS):
                writer.finish(writer.submit(pending), fin)
            writer.flush()
            started = time.perf_counter()
            for _ in range(rows):
                writer.finish(writer.submit(pending), fin)
            if not writer.flush(timeout_s=600):
                raise RuntimeError("the row writer did not finish")
            elapsed = time.perf_counter() - started
            written = db.reader().execute(
                "SELECT count(*) FROM request_logs WHERE lifecycle_status = 'completed'"
            ).fetchone()[0]
            if written != rows + WARMUP_ROWS:
                raise RuntimeError(f"{written} rows completed, not {rows + WARMUP_ROWS}")
        finally:
            writer.close()
            db.close()
    return rows / elapsed

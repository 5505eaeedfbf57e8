"""The ``request_logs`` repository: one row per proxied LLM call, from pending to final.

A row is written twice, each time in one short write transaction: :func:`insert_pending`
when the call starts (so a crash still leaves a trace), and :func:`finalize` once the
outcome is known, which also adds the row to ``daily_usage`` and writes its
``cost_audit`` entry. ``*_in`` variants run inside a transaction the caller holds (the
server's row writer puts many calls in one, ``storage.row_writer``, and writes a call
that ended before its pending row was written with :func:`insert_final_in`: the same
row, count and audit in one INSERT). Rows a crash
left pending are closed by :func:`recover_stale_pending` at boot, and counted in
``daily_usage`` like any other finalized row (the original forgot them, spec §12.8).

Timestamps are ISO-8601 UTC strings with milliseconds and ``Z``, as the original wrote
them: its admin API and day bucketing (``substr(started_at, 1, 10)``) rely on that.
Callers pass times in; nothing here reads the clock, so tests only mock time.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.storage import daily_usage
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.schema import COST_STATUSES, MAX_ID
from agent_cli_proxy.usage.model import Usage

log = get_logger("storage")

FINAL_LIFECYCLES = frozenset({"completed", "error", "aborted"})
FINAL_COST_STATUSES = frozenset(COST_STATUSES) - {"unresolved"}

# cost_audit.source for each cost status, when the caller names none: "pricing" and
# "unsupported_model" are the original's words; it also wrote "pricing" when no price was
# found, which made an unpriced row's audit look priced, so that case has its own word.
AUDIT_SOURCES: dict[str, str] = {
    "ok": "pricing",
    "pending": "pricing_unavailable",
    "unsupported": "unsupported_model",
}


def audit_source(cost_status: str) -> str:
    """The cost_audit ``source`` recorded for a row whose cost status is *cost_status*."""
    return AUDIT_SOURCES.get(cost_status, cost_status)


def iso_utc(epoch_seconds: float) -> str:
    """``2026-11-21T18:59:31.701Z`` for a Unix time (what JavaScript's toISOString gives)."""
    return _iso_ms(round(epoch_seconds * 1000))


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def _iso_ms(epoch_ms: int) -> str:
    global _second
    seconds, millis = divmod(int(epoch_ms), 1000)
    last = _second
    if last[0] != seconds:
        # Every call in the same second shares the strftime (several per proxied call);
        # one tuple is swapped in, so threads never see a second with another's text.
        last = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{last[1]}.{millis:03d}Z"


def _sqlite_timestamp(iso: str) -> str:
    # cost_audit.calc_at keeps the original's CURRENT_TIMESTAMP format, not ISO.
    return iso[:19].replace("T", " ")


@dataclass(frozen=True, slots=True)
class PendingRow:
    """What is known about a call before it is sent upstream."""

    provider: str
    model: str
    """Model to record until the response names one (``unknown`` if none)."""
    requested_model: str | None
    """The model the client asked for; never overwritten."""
    tool: str
    client_id: str
    path: str
    streamed: bool
    started_at: str
    request_id: str
    meta_json: str | None
    user_agent: str | None
    source_ip: str | None
    agent: str | None
    msg_id: str | None
    session_id: str | None
    identify_rule: str | None
    proxy_api_key_id: int | None = None
    """The managed proxy API key the client presented (``api_keys.id``), if any."""
    actual_provider: str | None = None
    """The upstream that serves the call: ``cliproxyapi`` (CLI_PROXY_API_URL) or a custom
    provider's id (``provider`` keeps the API family)."""


def insert_pending(db: Database, row: PendingRow) -> int:
    """Insert the row as lifecycle ``pending`` / cost ``unresolved``; return its id."""
    with db.write() as conn:
        return insert_pending_in(conn, row)


# The columns a call's first INSERT sets (insert_pending_in; insert_final_in sets the
# outcome's too).
_ROW_COLUMNS = """
  provider, model, requested_model, tool, client_id, path, streamed,
  prompt_tokens, completion_tokens, cache_creation_tokens, cache_read_tokens,
  reasoning_tokens, cache_creation_1h_tokens, total_tokens, cost_usd,
  incomplete, started_at, request_id, meta_json, user_agent, source_ip,
  lifecycle_status, cost_status, agent, source, msg_id, session_id,
  identify_rule, proxy_api_key_id, actual_provider"""
_INSERT_PENDING_SQL = f"""
INSERT INTO request_logs ({_ROW_COLUMNS}
) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, 0, 0, 0, 0, ?, ?, ?, ?, ?,
          'pending', 'unresolved', ?, 'proxy', ?, ?, ?, ?, ?)
"""


def insert_pending_in(conn: sqlite3.Connection, row: PendingRow) -> int:
    cur = conn.execute(
        _INSERT_PENDING_SQL,
        (row.provider, row.model, row.requested_model, row.tool, row.client_id,
         row.path, int(row.streamed), row.started_at, row.request_id, row.meta_json,
         row.user_agent, row.source_ip, row.agent, row.msg_id, row.session_id,
         row.identify_rule, row.proxy_api_key_id, row.actual_provider),
    )
    row_id = cur.lastrowid
    assert row_id is not None
    return row_id


@dataclass(frozen=True, slots=True)
class Finalization:
    """The outcome of a call, applied once to its pending row."""

    lifecycle_status: str
    """``completed`` | ``error`` | ``aborted``."""
    status: int | None
    """HTTP status the client got (None keeps the stored one)."""
    model: str | None
    """Model named by the response; None keeps the stored model."""
    actual_model: str | None
    usage: Usage
    streamed: bool | None
    """Whether the response was SSE; None keeps what the request said."""
    latency_ms: int
    finished_at: str
    error_code: str | None = None
    error_message: str | None = None
    cost_usd: float = 0.0
    cost_status: str = "pending"
    cost_source: str | None = None
    """Recorded in the cost_audit row (``pricing``, ``guard``, ``unsupported_model``);
    None records :func:`audit_source` of ``cost_status``."""
    cost_rule: str | None = None
    """How the price was found (the cost module's rule), for cost_audit."""
    cost_price_key: str | None = None
    """The price table key that priced the call, for cost_audit."""
    cost_detail_json: str | None = None
    """JSON of the numbers that reproduce the cost, for cost_audit."""
    upstream_status: int | None = None
    """Status the upstream sent, when the client got a different one."""
    upstream_latency_ms: int | None = None
    """Request start to upstream response headers."""

    def __post_init__(self) -> None:
        if self.lifecycle_status not in FINAL_LIFECYCLES:
            raise ValueError(f"lifecycle_status must be one of {sorted(FINAL_LIFECYCLES)}, "
                             f"not {self.lifecycle_status!r}")
        if self.cost_status not in FINAL_COST_STATUSES:
            raise ValueError(f"cost_status must be one of {sorted(FINAL_COST_STATUSES)}, "
                             f"not {self.cost_status!r}")


_FINALIZE_SQL = """
UPDATE request_logs SET
  lifecycle_status = :lifecycle_status,
  status = COALESCE(:status, status),
  model = COALESCE(:model, model),
  actual_model = COALESCE(:actual_model, actual_model),
  streamed = COALESCE(:streamed, streamed),
  prompt_tokens = :prompt_tokens,
  completion_tokens = :completion_tokens,
  cache_creation_tokens = :cache_creation_tokens,
  cache_read_tokens = :cache_read_tokens,
  reasoning_tokens = :reasoning_tokens,
  cache_creation_1h_tokens = :cache_creation_1h_tokens,
  total_tokens = :total_tokens,
  cost_usd = :cost_usd,
  cost_status = :cost_status,
  incomplete = :incomplete,
  latency_ms = :latency_ms,
  finished_at = :finished_at,
  finalized_at = :finished_at,
  error_code = COALESCE(:error_code, error_code),
  error_message = COALESCE(:error_message, error_message),
  upstream_status = COALESCE(:upstream_status, upstream_status),
  upstream_latency_ms = COALESCE(:upstream_latency_ms, upstream_latency_ms)
WHERE id = :id AND lifecycle_status = 'pending'
RETURNING """ + daily_usage.DAY + """, provider, model, prompt_tokens, completion_tokens,
  cache_creation_tokens, cache_read_tokens, total_tokens, cost_usd
"""
_AUDIT_SQL = (
    "INSERT INTO cost_audit (request_log_id, model, provider, source, base_cost_usd, calc_at,"
    " rule, price_key, detail_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


def finalize(db: Database, row_id: int, fin: Finalization) -> bool:
    """Apply *fin* to pending row *row_id*, count it in daily_usage, audit its cost.

    One transaction. Returns False, writing nothing, if the row is not pending (already
    finalized by another path, or recovered): a request is finalized at most once.
    """
    with db.write() as conn:
        return finalize_in(conn, row_id, fin)


def finalize_in(conn: sqlite3.Connection, row_id: int, fin: Finalization) -> bool:
    u = fin.usage
    params: dict[str, Any] = {
        "id": row_id,
        "lifecycle_status": fin.lifecycle_status,
        "status": fin.status,
        "model": fin.model or None,
        "actual_model": fin.actual_model,
        "streamed": None if fin.streamed is None else int(fin.streamed),
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cache_creation_tokens": u.cache_creation_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cache_creation_1h_tokens": u.cache_creation_1h_tokens,
        "total_tokens": u.total_tokens,
        "cost_usd": fin.cost_usd,
        "cost_status": fin.cost_status,
        "incomplete": 0 if fin.lifecycle_status == "completed" else 1,
        "latency_ms": fin.latency_ms,
        "finished_at": fin.finished_at,
        "error_code": fin.error_code,
        "error_message": fin.error_message,
        "upstream_status": fin.upstream_status,
        "upstream_latency_ms": fin.upstream_latency_ms,
    }
    # RETURNING hands back what was stored (the model may be the pending row's), so
    # daily_usage adds and the audit records exactly the row's values without reading
    # the row again.
    stored = conn.execute(_FINALIZE_SQL, params).fetchall()
    if not stored:
        return False
    (day, provider, model, *sums, cost_usd), = stored
    daily_usage.add_one(conn, day, provider, model, tuple(sums), cost_usd)
    # Finalize always moves cost_status away from 'unresolved', so per spec §6.6 it
    # always writes an audit row.
    conn.execute(_AUDIT_SQL, (
        row_id, model, provider, fin.cost_source or audit_source(fin.cost_status), cost_usd,
        _sqlite_timestamp(fin.finished_at), fin.cost_rule, fin.cost_price_key,
        fin.cost_detail_json))
    return True


_INSERT_FINAL_SQL = f"""
INSERT INTO request_logs ({_ROW_COLUMNS},
  status, actual_model, latency_ms, finished_at, finalized_at, error_code, error_message,
  upstream_status, upstream_latency_ms
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'proxy',
          ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def insert_final_in(conn: sqlite3.Connection, row: PendingRow, fin: Finalization) -> int:
    """Insert a call whose outcome is known before its pending row was written: the row
    :func:`insert_pending_in` and then :func:`finalize_in` would leave, with its
    daily_usage count and cost_audit entry, in one INSERT instead of an INSERT and an
    UPDATE (the row writer does so when both are in one batch). Returns the row's id."""
    u = fin.usage
    model = fin.model or row.model
    cur = conn.execute(_INSERT_FINAL_SQL, (
        row.provider, model, row.requested_model, row.tool, row.client_id, row.path,
        int(row.streamed if fin.streamed is None else fin.streamed),
        u.prompt_tokens, u.completion_tokens, u.cache_creation_tokens, u.cache_read_tokens,
        u.reasoning_tokens, u.cache_creation_1h_tokens, u.total_tokens, fin.cost_usd,
        0 if fin.lifecycle_status == "completed" else 1, row.started_at, row.request_id,
        row.meta_json, row.user_agent, row.source_ip, fin.lifecycle_status, fin.cost_status,
        row.agent, row.msg_id, row.session_id, row.identify_rule, row.proxy_api_key_id,
        row.actual_provider, fin.status, fin.actual_model, fin.latency_ms, fin.finished_at,
        fin.finished_at, fin.error_code, fin.error_message, fin.upstream_status,
        fin.upstream_latency_ms))
    row_id = cur.lastrowid
    assert row_id is not None
    daily_usage.add_one(conn, row.started_at[:10], row.provider, model,
                        (u.prompt_tokens, u.completion_tokens, u.cache_creation_tokens,
                         u.cache_read_tokens, u.total_tokens), fin.cost_usd)
    conn.execute(_AUDIT_SQL, (
        row_id, model, row.provider, fin.cost_source or audit_source(fin.cost_status),
        fin.cost_usd, _sqlite_timestamp(fin.finished_at), fin.cost_rule, fin.cost_price_key,
        fin.cost_detail_json))
    return row_id


def recover_stale_pending(db: Database, max_age_ms: int, now_ms: int) -> int:
    """Abort rows pending since before ``now_ms - max_age_ms`` (left by a crash).

    They become ``aborted`` / ``incomplete`` with error_message ``boot-recovery``, cost
    ``unresolved`` → ``pending`` (so the backfill may price them), and each is counted
    in daily_usage. Returns how many rows were recovered.
    """
    now = _iso_ms(now_ms)
    threshold = _iso_ms(now_ms - max_age_ms)
    stale = "lifecycle_status = 'pending' AND started_at < ?"
    with db.write() as conn:
        # Same predicate, same transaction: the aggregate covers exactly the rows that
        # the UPDATE below takes out of 'pending'.
        daily_usage.add_rows(conn, stale, (threshold,))
        recovered = conn.execute(
            f"""
            UPDATE request_logs
            SET lifecycle_status = 'aborted',
                error_message = 'boot-recovery',
                finalized_at = ?,
                finished_at = COALESCE(finished_at, ?),
                incomplete = 1,
                cost_status = CASE WHEN cost_status = 'unresolved' THEN 'pending'
                                   ELSE cost_status END
            WHERE {stale}
            """,
            (now, now, threshold),
        ).rowcount
    if recovered:
        log.warning("lifecycle.boot_recovery", recovered=recovered, max_age_ms=max_age_ms,
                    threshold=threshold)
    return recovered


def get_request(db: Database, row_id: int) -> dict[str, Any] | None:
    """Every column of one row, or None (also for ids no SQLite row can have)."""
    if not 0 < row_id <= MAX_ID:
        return None
    row = db.reader().execute("SELECT * FROM request_logs WHERE id = ?", (row_id,)).fetchone()
    return None if row is None else dict(row)


def list_requests(db: Database, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """Newest rows first (by start time, as the original's admin API lists them)."""
    rows = db.reader().execute(
        "SELECT * FROM request_logs ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?",
        (limit, offset),
    ).fetchall()
    return [dict(r) for r in rows]

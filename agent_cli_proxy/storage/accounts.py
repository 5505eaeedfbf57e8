"""The account attribution repository: which CLIProxyAPI account served each row, the
``daily_account_usage`` aggregate, and the usage details already used for it.

Invariant (the original kept it by luck, spec §7.1): for every (day, provider, model,
cliproxy_account), ``daily_account_usage`` equals the aggregate of the non-pending
request_logs rows that carry that account. A row gets its account exactly once (every
UPDATE here requires ``cliproxy_account IS NULL``), and the same transaction adds the row
as stored to the aggregate. When correlation also changes a row's tokens or cost, the
row's ``daily_usage`` group gets the difference in that transaction, so its invariant
(``storage.daily_usage``) holds too.

Nothing here reads the clock or the network: callers pass times (ISO UTC) in, and every
decision about *which* account is the caller's (``workers.accounts``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.requests import _sqlite_timestamp, audit_source
from agent_cli_proxy.usage.model import Usage

if TYPE_CHECKING:  # storage.costs may call into this module: no import cycle at run time
    from agent_cli_proxy.storage.costs import PricedCost

# request_logs.actual_provider of a call sent to CLI_PROXY_API_URL (the default upstream,
# providers.custom_config.DEFAULT_ID); rows of custom providers never have a CPA account.
CLIPROXYAPI_UPSTREAM = "cliproxyapi"

_SUMS = ("prompt_tokens", "completion_tokens", "cache_creation_tokens", "cache_read_tokens",
         "reasoning_tokens", "total_tokens")
_ACCOUNT_KEY = ("day", "provider", "model", "cliproxy_account")
_ACCOUNT_AGGREGATE = (
    "SELECT substr(started_at, 1, 10) AS day, provider, model, cliproxy_account, "
    "MAX(cliproxy_auth_index) AS cliproxy_auth_index, COUNT(*) AS request_count, "
    + ", ".join(f"COALESCE(SUM({c}), 0) AS {c}" for c in _SUMS)
    + ", COALESCE(SUM(cost_usd), 0.0) AS cost_usd FROM request_logs WHERE {where} "
    "GROUP BY 1, 2, 3, 4"
)
_ACCOUNT_VALUES = ("request_count", *_SUMS, "cost_usd")
_ACCOUNT_UPSERT = (
    "INSERT INTO daily_account_usage (day, provider, model, cliproxy_account, "
    "cliproxy_auth_index, " + ", ".join(_ACCOUNT_VALUES) + ") {select} "
    "ON CONFLICT(day, provider, model, cliproxy_account) DO UPDATE SET "
    "cliproxy_auth_index = COALESCE(excluded.cliproxy_auth_index, cliproxy_auth_index), "
    + ", ".join(f"{c} = COALESCE({c}, 0) + excluded.{c}" for c in _ACCOUNT_VALUES)
)
_DAILY_DELTA = (
    "INSERT INTO daily_usage (day, provider, model, request_count, prompt_tokens, "
    "completion_tokens, cache_creation_tokens, cache_read_tokens, total_tokens, cost_usd) "
    "VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?) ON CONFLICT(day, provider, model) DO UPDATE SET "
    + ", ".join(f"{c} = COALESCE({c}, 0) + excluded.{c}" for c in (
        "prompt_tokens", "completion_tokens", "cache_creation_tokens", "cache_read_tokens",
        "total_tokens", "cost_usd"))
)
_FINAL = "lifecycle_status <> 'pending'"


def _add_account_usage(conn: sqlite3.Connection, row_id: int) -> None:
    # "WHERE" inside the SELECT also resolves SQLite's INSERT…SELECT…ON CONFLICT ambiguity.
    select = _ACCOUNT_AGGREGATE.format(where="id = ? AND cliproxy_account IS NOT NULL")
    conn.execute(_ACCOUNT_UPSERT.format(select=select), (row_id,))


# -- exact attribution (X-CPA-TRACE-ID) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountRef:
    """The account a row is attributed to: its display name (e-mail or label, never a
    credential) and CPA's auth_index."""

    account: str
    auth_index: str | None


def record_trace(db: Database, row_id: int, auth_index: str) -> bool:
    """Store the auth_index the trace header named, for a row whose account is not known
    yet (the account map missed); ``attribute`` completes it later."""
    with db.write() as conn:
        return conn.execute(
            "UPDATE request_logs SET cliproxy_auth_index = ? WHERE id = ? "
            "AND cliproxy_account IS NULL AND cliproxy_auth_index IS NULL",
            (auth_index, row_id)).rowcount == 1


def attribute(db: Database, row_id: int, ref: AccountRef, *, now_iso: str) -> bool:
    """Give finalized row *row_id* its account, once, and count it in daily_account_usage.

    False (nothing written) if the row is still pending, already has an account, or
    carries a different auth_index than *ref*.
    """
    with db.write() as conn:
        changed = conn.execute(
            f"""UPDATE request_logs SET cliproxy_account = :account, cliproxy_source = :account,
                  cliproxy_auth_index = COALESCE(:index, cliproxy_auth_index),
                  correlated_at = :now
                WHERE id = :id AND cliproxy_account IS NULL AND {_FINAL}
                  AND (cliproxy_auth_index IS NULL OR :index IS NULL
                       OR cliproxy_auth_index = :index)""",
            {"account": ref.account, "index": ref.auth_index, "now": now_iso, "id": row_id},
        ).rowcount
        if changed:
            _add_account_usage(conn, row_id)
    return changed == 1


_UNRESOLVED = (f"{_FINAL} AND cliproxy_account IS NULL AND cliproxy_auth_index IS NOT NULL "
               "AND started_at >= ?")


def unresolved_trace_indexes(db: Database, since_iso: str) -> set[str]:
    """The auth_index values that traced rows since *since_iso* name but that have no
    account yet (a small set: one per CPA credential)."""
    rows = db.reader().execute(
        f"SELECT DISTINCT cliproxy_auth_index FROM request_logs WHERE {_UNRESOLVED}",
        (since_iso,)).fetchall()
    return {str(r[0]) for r in rows}


def unresolved_traces(db: Database, since_iso: str, limit: int, indexes: Iterable[str]
                      ) -> list[tuple[int, str]]:
    """Finalized rows since *since_iso* whose trace named one of *indexes* and that have no
    account yet: ``[(row id, auth_index)]``, oldest first. Asking only for indexes that
    can be resolved keeps rows of a credential CPA no longer lists from filling every
    batch and starving the others."""
    wanted = sorted(set(indexes))
    if not wanted:
        return []
    marks = ",".join("?" * len(wanted))
    rows = db.reader().execute(
        f"SELECT id, cliproxy_auth_index FROM request_logs WHERE {_UNRESOLVED} "
        f"AND cliproxy_auth_index IN ({marks}) ORDER BY id LIMIT ?",
        (since_iso, *wanted, limit)).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


# -- fallback correlation (/usage, usage queue) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A finalized row without an account that CPA answered (it may have a usage detail)."""

    id: int
    started_at: str
    finished_at: str | None
    provider: str
    model: str
    requested_model: str | None
    status: int | None
    latency_ms: int | None
    usage: Usage
    cost_usd: float
    cost_status: str


def correlation_candidates(db: Database, since_iso: str, limit: int) -> list[Candidate]:
    """Rows started since *since_iso*, of any status, that reached CPA (the upstream
    answered) and have neither an account nor a traced auth_index; newest first."""
    rows = db.reader().execute(
        f"""SELECT id, started_at, finished_at, provider, model, requested_model, status,
                   latency_ms, prompt_tokens, completion_tokens, cache_creation_tokens,
                   cache_read_tokens, reasoning_tokens, cache_creation_1h_tokens,
                   cost_usd, cost_status
            FROM request_logs
            WHERE {_FINAL} AND started_at >= ? AND cliproxy_account IS NULL
              AND cliproxy_auth_index IS NULL AND upstream_latency_ms IS NOT NULL
              AND (actual_provider IS NULL OR actual_provider = ?)
            ORDER BY started_at DESC, id DESC LIMIT ?""",
        (since_iso, CLIPROXYAPI_UPSTREAM, limit)).fetchall()
    return [Candidate(
        id=int(r["id"]), started_at=str(r["started_at"]), finished_at=r["finished_at"],
        provider=str(r["provider"]), model=str(r["model"]),
        requested_model=r["requested_model"], status=r["status"],
        latency_ms=r["latency_ms"],
        usage=Usage(prompt_tokens=int(r["prompt_tokens"] or 0),
                    completion_tokens=int(r["completion_tokens"] or 0),
                    cache_creation_tokens=int(r["cache_creation_tokens"] or 0),
                    cache_read_tokens=int(r["cache_read_tokens"] or 0),
                    reasoning_tokens=int(r["reasoning_tokens"] or 0),
                    cache_creation_1h_tokens=int(r["cache_creation_1h_tokens"] or 0)),
        cost_usd=float(r["cost_usd"] or 0.0), cost_status=str(r["cost_status"]))
        for r in rows]


def matched_detail_keys(db: Database, keys: Iterable[str]) -> set[str]:
    """Which of *keys* were already matched to a row."""
    wanted = list(dict.fromkeys(keys))
    found: set[str] = set()
    reader = db.reader()
    for start in range(0, len(wanted), 500):  # well under SQLite's bound-parameter limit
        chunk = wanted[start:start + 500]
        marks = ", ".join("?" * len(chunk))
        found.update(str(r[0]) for r in reader.execute(
            f"SELECT detail_key FROM cliproxy_usage_matches WHERE detail_key IN ({marks})",
            chunk))
    return found


@dataclass(frozen=True, slots=True)
class Correlation:
    """What one usage detail tells about one candidate row."""

    row: Candidate
    ref: AccountRef
    detail_key: str
    detail_at: str
    actual_model: str | None = None
    """The upstream model CPA used, when it differs from what the row knows."""
    usage: Usage | None = None
    """New token buckets, when CPA's count replaces the row's (the row had none)."""
    cost: PricedCost | None = None
    """The row's new cost, when the model or the tokens changed."""
    cost_model: str | None = None


_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "cache_creation_tokens",
                 "cache_read_tokens", "reasoning_tokens", "cache_creation_1h_tokens")
# The optimistic check: still unattributed, still the tokens, cost and model that were read.
_CORRELATE = f"""
UPDATE request_logs SET
  cliproxy_account = :account, cliproxy_source = :account, cliproxy_auth_index = :index,
  correlated_at = :now, actual_model = COALESCE(:actual_model, actual_model),
  {", ".join(f"{k} = :new_{k}" for k in _USAGE_FIELDS)}, total_tokens = :new_total,
  cost_usd = :cost, cost_status = :cost_status,
  cost_model = COALESCE(:cost_model, cost_model),
  cost_provider = COALESCE(:cost_provider, cost_provider)
WHERE id = :id AND {_FINAL} AND cliproxy_account IS NULL AND cliproxy_auth_index IS NULL
  AND COALESCE(cost_usd, 0) = :old_cost AND cost_status = :old_status
  AND COALESCE(total_tokens, 0) = :old_total
  AND COALESCE(reasoning_tokens, 0) = :old_reasoning AND model = :model
"""


def apply_correlation(db: Database, c: Correlation, *, now_iso: str) -> bool:
    """Attribute ``c.row`` and record ``c.detail_key`` as used, in one transaction.

    False, writing nothing, if the detail was used meanwhile or the row changed since it
    was read (another correlation, the cost backfill): the next tick looks again.
    """
    row = c.row
    usage = c.usage or row.usage
    with db.write() as conn:
        if conn.execute("SELECT 1 FROM cliproxy_usage_matches WHERE detail_key = ?",
                        (c.detail_key,)).fetchone() is not None:
            return False
        params: dict[str, Any] = {
            "id": row.id, "account": c.ref.account, "index": c.ref.auth_index,
            "now": now_iso, "actual_model": c.actual_model, "old_cost": row.cost_usd,
            "old_status": row.cost_status, "old_total": row.usage.total_tokens,
            "old_reasoning": row.usage.reasoning_tokens, "model": row.model,
            **{f"new_{k}": getattr(usage, k) for k in _USAGE_FIELDS},
            "new_total": usage.total_tokens,
            "cost": row.cost_usd if c.cost is None else c.cost.cost_usd,
            "cost_status": row.cost_status if c.cost is None else c.cost.status,
            "cost_model": c.cost_model if c.cost is not None else None,
            "cost_provider": row.provider if c.cost is not None else None,
        }
        changed = conn.execute(_CORRELATE, params).rowcount
        if not changed:
            return False
        conn.execute("INSERT INTO cliproxy_usage_matches (detail_key, request_log_id, "
                     "detail_at, matched_at) VALUES (?, ?, ?, ?)",
                     (c.detail_key, row.id, c.detail_at, now_iso))
        _daily_usage_delta(conn, row, usage, float(params["cost"]))
        _add_account_usage(conn, row.id)
        if c.cost is not None and (c.cost.cost_usd != row.cost_usd
                                   or c.cost.status != row.cost_status):
            detail = {**dict(c.cost.detail), "trigger": "cliproxy_correlation"}
            conn.execute(
                "INSERT INTO cost_audit (request_log_id, model, provider, source, "
                "base_cost_usd, calc_at, rule, price_key, detail_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.id, c.cost_model or row.model, row.provider, audit_source(c.cost.status),
                 c.cost.cost_usd, _sqlite_timestamp(now_iso), c.cost.rule, c.cost.price_key,
                 json.dumps(detail, separators=(",", ":"), default=str)))
    return True


def _daily_usage_delta(conn: sqlite3.Connection, row: Candidate, usage: Usage,
                       cost: float) -> None:
    old = row.usage
    deltas = (usage.prompt_tokens - old.prompt_tokens,
              usage.completion_tokens - old.completion_tokens,
              usage.cache_creation_tokens - old.cache_creation_tokens,
              usage.cache_read_tokens - old.cache_read_tokens,
              usage.total_tokens - old.total_tokens, cost - row.cost_usd)
    if any(deltas):
        conn.execute(_DAILY_DELTA, (row.started_at[:10], row.provider, row.model, *deltas))


def add_account_cost_delta(conn: sqlite3.Connection, row_id: int, delta: float) -> None:
    """Keep daily_account_usage exact when someone else re-prices an attributed row (the
    cost backfill): call in the transaction that changed its cost by *delta*."""
    if delta:
        conn.execute(
            "UPDATE daily_account_usage SET cost_usd = COALESCE(cost_usd, 0) + ? WHERE "
            "(day, provider, model, cliproxy_account) = (SELECT substr(started_at, 1, 10), "
            "provider, model, cliproxy_account FROM request_logs WHERE id = ? AND "
            "cliproxy_account IS NOT NULL)", (delta, row_id))


def prune_matches(db: Database, before_iso: str) -> int:
    """Forget used details older than *before_iso*: they are outside every look-back."""
    with db.write() as conn:
        return conn.execute("DELETE FROM cliproxy_usage_matches WHERE detail_at < ?",
                            (before_iso,)).rowcount


# -- checks ------------------------------------------------------------------------------


def account_usage_mismatches(db: Database) -> list[dict[str, Any]]:
    """Groups where daily_account_usage disagrees with the attributed rows (empty when
    the invariant holds). For ``doctor`` and tests; it scans the whole table."""
    reader = db.reader()
    expected = {tuple(r[k] for k in _ACCOUNT_KEY): r for r in reader.execute(
        _ACCOUNT_AGGREGATE.format(where=f"{_FINAL} AND cliproxy_account IS NOT NULL"))}
    stored = {tuple(r[k] for k in _ACCOUNT_KEY): r for r in reader.execute(
        "SELECT * FROM daily_account_usage")}
    out: list[dict[str, Any]] = []
    for key in sorted(set(expected) | set(stored), key=lambda k: tuple(map(str, k))):
        want, have = expected.get(key), stored.get(key)
        if want is None or have is None or any(
                _differs(have[c], want[c]) for c in _ACCOUNT_VALUES):
            out.append({"key": dict(zip(_ACCOUNT_KEY, key, strict=True)),
                        "expected": _values(want), "stored": _values(have)})
    return out


def _values(row: Mapping[str, Any] | sqlite3.Row | None) -> dict[str, Any] | None:
    return None if row is None else {c: row[c] for c in _ACCOUNT_VALUES}


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a or 0) - float(b or 0)) > 1e-9
    return (a or 0) != (b or 0)

"""Read-only reports for the admin API: daily usage, accounts, trend, totals, quotas.

Shapes and orderings are the original's (spec §1.4), so its dashboards and scripts read
our answers unchanged. Numbers are normalised on the way out: token counts are ``int``
and costs ``float``, with NULL (rows written by old versions of the original) read as 0.

Every value reaches SQLite as a bound parameter; the SQL text is built only from the
column names below. Callers validate their inputs (days as ``YYYY-MM-DD``, limits in
range) before calling; nothing here trusts them to be well-formed beyond that.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from agent_cli_proxy.storage.database import Database

_TOKEN_SUMS = ("prompt_tokens", "completion_tokens", "cache_creation_tokens",
               "cache_read_tokens", "total_tokens")

# (column, kind) in the order the original's DailyUsage objects list them.
_DAILY_USAGE: tuple[tuple[str, str], ...] = (
    ("day", "text"), ("provider", "text"), ("model", "text"), ("request_count", "int"),
    *((c, "int") for c in _TOKEN_SUMS), ("cost_usd", "float"),
)
_DAILY_ACCOUNT_USAGE: tuple[tuple[str, str], ...] = (
    ("day", "text"), ("provider", "text"), ("model", "text"), ("cliproxy_account", "text"),
    ("cliproxy_auth_index", "text"), ("request_count", "int"),
    *((c, "int") for c in _TOKEN_SUMS[:4]), ("reasoning_tokens", "int"),
    ("total_tokens", "int"), ("cost_usd", "float"),
)

# request_logs counters that default to 0 but may be NULL in legacy rows.
LOG_INT_COLUMNS = (*_TOKEN_SUMS, "reasoning_tokens", "cache_creation_1h_tokens")
LOG_FLOAT_COLUMNS = ("cost_usd",)


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def _float(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _convert(row: sqlite3.Row, columns: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind in columns:
        value = row[name]
        if kind == "int":
            out[name] = _int(value)
        elif kind == "float":
            out[name] = _float(value)
        else:
            out[name] = value
    return out


def _select(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(name for name, _kind in columns)


def _query(db: Database, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    return db.reader().execute(sql, params).fetchall()


# -- daily_usage --------------------------------------------------------------------------

_DAILY_SELECT = f"SELECT {_select(_DAILY_USAGE)} FROM daily_usage"


def usage_for_day(db: Database, day: str) -> list[dict[str, Any]]:
    """DailyUsage rows of *day*, ordered provider, model (``/admin/usage/models``)."""
    rows = _query(db, _DAILY_SELECT + " WHERE day = ? ORDER BY provider, model", (day,))
    return [_convert(r, _DAILY_USAGE) for r in rows]


def usage_summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``{"requests", "total_tokens", "cost_usd"}`` summed over DailyUsage rows."""
    requests = 0
    tokens = 0
    cost = 0.0
    for row in rows:
        requests += _int(row.get("request_count"))
        tokens += _int(row.get("total_tokens"))
        cost += _float(row.get("cost_usd"))
    return {"requests": requests, "total_tokens": tokens, "cost_usd": cost}


def usage_range(db: Database, start: str, end: str) -> list[dict[str, Any]]:
    """Days *start*..*end* (inclusive, compared as text), newest first.

    Each: ``{"date", "requests", "total_tokens", "cost_usd", "breakdown": [DailyUsage]}``
    with the totals summed over the breakdown. Days without rows are left out, as the
    original does.
    """
    rows = _query(db, _DAILY_SELECT + " WHERE day >= ? AND day <= ? "
                  "ORDER BY day DESC, provider, model", (start, end))
    days: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        item = _convert(row, _DAILY_USAGE)
        days.setdefault(item["day"], []).append(item)
    return [{"date": day, **usage_summary(breakdown), "breakdown": breakdown}
            for day, breakdown in days.items()]


def providers_for_day(db: Database, day: str) -> list[dict[str, Any]]:
    """``[{"provider", "request_count", "total_tokens", "cost_usd"}]`` of *day*, by provider."""
    rows = _query(db, """
        SELECT provider, COALESCE(SUM(request_count), 0) AS request_count,
               COALESCE(SUM(total_tokens), 0) AS total_tokens,
               COALESCE(SUM(cost_usd), 0.0) AS cost_usd
        FROM daily_usage WHERE day = ? GROUP BY provider ORDER BY provider
        """, (day,))
    return [{"provider": r["provider"], "request_count": _int(r["request_count"]),
             "total_tokens": _int(r["total_tokens"]), "cost_usd": _float(r["cost_usd"])}
            for r in rows]


# -- daily_account_usage (CLIProxyAPI correlation) ---------------------------------------

_ACCOUNT_SELECT = f"SELECT {_select(_DAILY_ACCOUNT_USAGE)} FROM daily_account_usage"


def account_usage_for_day(db: Database, day: str) -> list[dict[str, Any]]:
    """DailyAccountUsage rows of *day*, ordered account, provider, model."""
    rows = _query(db, _ACCOUNT_SELECT + " WHERE day = ? "
                  "ORDER BY cliproxy_account, provider, model", (day,))
    return [_convert(r, _DAILY_ACCOUNT_USAGE) for r in rows]


def account_usage_range(db: Database, start: str, end: str) -> list[dict[str, Any]]:
    """DailyAccountUsage rows of days *start*..*end* (inclusive), ordered day desc,
    account, provider, model."""
    rows = _query(db, _ACCOUNT_SELECT + " WHERE day >= ? AND day <= ? "
                  "ORDER BY day DESC, cliproxy_account, provider, model", (start, end))
    return [_convert(r, _DAILY_ACCOUNT_USAGE) for r in rows]


def accounts_summary(db: Database, start: str, end: str) -> list[dict[str, Any]]:
    """Per (account, auth_index, provider) totals over days *start*..*end*, costliest first.

    ``[{"cliproxy_account", "cliproxy_auth_index", "provider", "request_count",
    "total_tokens", "cost_usd"}]``; equal costs are ordered by account, provider,
    auth_index so the answer is stable.
    """
    rows = _query(db, """
        SELECT cliproxy_account, cliproxy_auth_index, provider,
               COALESCE(SUM(request_count), 0) AS request_count,
               COALESCE(SUM(total_tokens), 0) AS total_tokens,
               COALESCE(SUM(cost_usd), 0.0) AS cost_usd
        FROM daily_account_usage WHERE day >= ? AND day <= ?
        GROUP BY cliproxy_account, cliproxy_auth_index, provider
        ORDER BY cost_usd DESC, cliproxy_account, provider, cliproxy_auth_index
        """, (start, end))
    return [{"cliproxy_account": r["cliproxy_account"],
             "cliproxy_auth_index": r["cliproxy_auth_index"], "provider": r["provider"],
             "request_count": _int(r["request_count"]),
             "total_tokens": _int(r["total_tokens"]), "cost_usd": _float(r["cost_usd"])}
            for r in rows]


# -- request_logs aggregates ---------------------------------------------------------------

_TREND_SUMS = ("prompt_tokens", "completion_tokens", "cache_read_tokens",
               "cache_creation_tokens", "total_tokens")
# Optional exact-match filters of the trend: keyword -> column (never caller text).
_TREND_FILTERS = {"provider": "provider", "model": "model", "tool": "tool"}


def usage_trend(db: Database, *, since_iso: str, provider: str | None = None,
                model: str | None = None, tool: str | None = None) -> list[dict[str, Any]]:
    """Hourly buckets of finalized request_logs rows started at or after *since_iso*.

    Oldest first; hours without rows are left out. Each bucket: ``{"hour":
    "2026-11-21T18:00:00.000Z", "requests", "prompt_tokens", "completion_tokens",
    "cache_read_tokens", "cache_creation_tokens", "total_tokens", "cost_usd",
    "errors"}`` where ``errors`` counts rows with lifecycle ``error`` (client aborts,
    lifecycle ``aborted``, are not errors). Pending rows are not counted: their usage
    is not known yet. ``provider``/``model``/``tool`` are exact-match filters; None or
    ``""`` means no filter.
    """
    where = ["started_at >= ?", "lifecycle_status <> 'pending'"]
    params: list[Any] = [since_iso]
    for key, value in (("provider", provider), ("model", model), ("tool", tool)):
        if value:
            # Unary "+" keeps SQLite on the started_at index: without it the planner
            # prefers idx_request_logs_tool and walks every row of a busy tool.
            where.append(f"+{_TREND_FILTERS[key]} = ?")
            params.append(value)
    sums = ", ".join(f"COALESCE(SUM({c}), 0) AS {c}" for c in _TREND_SUMS)
    rows = _query(db, (
        "SELECT substr(started_at, 1, 13) || ':00:00.000Z' AS hour, COUNT(*) AS requests, "
        f"{sums}, COALESCE(SUM(cost_usd), 0.0) AS cost_usd, "
        "COALESCE(SUM(lifecycle_status = 'error'), 0) AS errors "
        f"FROM request_logs WHERE {' AND '.join(where)} GROUP BY hour ORDER BY hour"
    ), tuple(params))
    return [{"hour": r["hour"], "requests": _int(r["requests"]),
             **{c: _int(r[c]) for c in _TREND_SUMS},
             "cost_usd": _float(r["cost_usd"]), "errors": _int(r["errors"])}
            for r in rows]


def stats(db: Database) -> dict[str, Any]:
    """Totals over **all** request_logs rows, any lifecycle (``/admin/stats``).

    ``{"total_requests", "total_tokens", "total_cost_usd", "first_request_at",
    "last_request_at"}``; the two times are None on an empty table.
    """
    row = db.reader().execute("""
        SELECT COUNT(*) AS total_requests, SUM(total_tokens) AS total_tokens,
               SUM(cost_usd) AS total_cost_usd, MIN(started_at) AS first_request_at,
               MAX(started_at) AS last_request_at
        FROM request_logs
        """).fetchone()
    return {"total_requests": _int(row["total_requests"]),
            "total_tokens": _int(row["total_tokens"]),
            "total_cost_usd": _float(row["total_cost_usd"]),
            "first_request_at": row["first_request_at"],
            "last_request_at": row["last_request_at"]}


# -- request_logs rows ------------------------------------------------------------------

# Optional exact-match filters of list_logs: keyword -> column (never caller text).
_LOG_FILTERS = {"tool": "tool", "client_id": "client_id", "model": "model",
                "lifecycle_status": "lifecycle_status", "http_status": "status"}


def normalize_log_row(row: dict[str, Any]) -> dict[str, Any]:
    """A request_logs row with NULL counters (legacy rows) as 0 and cost as float.

    Applied by :func:`list_logs`; apply it to ``get_request`` results too, so the
    list and the detail view agree.
    """
    for name in LOG_INT_COLUMNS:
        if name in row:
            row[name] = _int(row[name])
    for name in LOG_FLOAT_COLUMNS:
        if name in row:
            row[name] = _float(row[name])
    return row


def list_logs(db: Database, *, limit: int, offset: int, tool: str | None = None,
              client_id: str | None = None, model: str | None = None,
              lifecycle_status: str | None = None,
              http_status: int | None = None) -> list[dict[str, Any]]:
    """Full request_logs rows (every column), newest first (started_at, then id).

    Filters match exactly and combine with AND; None (or ``""`` for the text ones, as
    the original ignored an empty query parameter) means no filter. ``http_status``
    matches the ``status`` column.
    """
    values: dict[str, str | int | None] = {
        "tool": tool, "client_id": client_id, "model": model,
        "lifecycle_status": lifecycle_status, "http_status": http_status,
    }
    where: list[str] = []
    params: list[Any] = []
    for key, value in values.items():
        if value is None or value == "":
            continue
        where.append(f"{_LOG_FILTERS[key]} = ?")
        params.append(value)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    rows = _query(db, f"SELECT * FROM request_logs {clause}"
                  "ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?",
                  (*params, limit, offset))
    return [normalize_log_row(dict(r)) for r in rows]


# -- quota_snapshots -------------------------------------------------------------------


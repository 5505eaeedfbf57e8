"""Quota snapshots with their history, in the original's ``quota_snapshots`` table.

One refresh writes one row per (account, window) with the same ``timestamp``, so the
newest refresh of an account is the set of its rows with its greatest timestamp. Rows are
never updated: the table is the history that ``/admin/quotas/history`` buckets by hour.
Columns and their formats are the original's (``remaining_raw`` is ``"42.00%"``,
``raw_json`` the vendor's window object), so either program reads the other's rows.

Also here: how much this proxy itself sent through an account lately (``local_usage``),
read from ``request_logs``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent_cli_proxy.storage.database import Database

_COLUMNS = ("timestamp", "provider", "account", "quota_type", "used_pct", "remaining",
            "remaining_raw", "resets_at", "raw_json", "model")


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    timestamp: str  # ISO UTC, the same for every row of one refresh
    provider: str
    account: str
    quota_type: str
    used_pct: float | None
    resets_at: str | None = None
    model: str | None = None
    raw: Any = None  # the vendor's window object, stored as JSON text

    @property
    def remaining(self) -> float | None:
        return None if self.used_pct is None else round(100.0 - self.used_pct, 4)

    def values(self) -> tuple[Any, ...]:
        remaining = self.remaining
        raw = None if self.raw is None else json.dumps(self.raw, separators=(",", ":"),
                                                       ensure_ascii=False, default=str)
        return (self.timestamp, self.provider, self.account, self.quota_type, self.used_pct,
                remaining, None if remaining is None else f"{remaining:.2f}%",
                self.resets_at, raw, self.model)

    def as_dict(self) -> dict[str, Any]:
        """The row as the original's QuotaSnapshot, plus ``window`` (= ``quota_type``)."""
        return {**dict(zip(_COLUMNS, self.values(), strict=True)), "window": self.quota_type}


def insert_snapshots(db: Database, rows: Iterable[SnapshotRow]) -> int:
    """Append *rows* in one short transaction; returns how many were written."""
    values = [row.values() for row in rows]
    if not values:
        return 0
    marks = ", ".join("?" for _ in _COLUMNS)
    with db.write() as conn:
        conn.executemany(f"INSERT INTO quota_snapshots ({', '.join(_COLUMNS)}) "
                         f"VALUES ({marks})", values)
    return len(values)


def _filters(provider: str | None, account: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("provider", provider), ("account", account)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses), params


def latest_snapshots(db: Database, *, provider: str | None = None,
                     account: str | None = None) -> list[dict[str, Any]]:
    """Every column of each account's newest refresh, ordered provider, account, window.

    Per account, not per window: a window the vendor stopped reporting (a per-model
    bucket that went away) is not shown forever with its last value. Of two rows of one
    window with the same timestamp, the later insert wins.
    """
    where, params = _filters(provider, account)
    # The newest timestamp of each account comes from the (provider, account, timestamp)
    # index; a window function over the whole history would read every row.
    rows = db.reader().execute(f"""
        WITH newest AS (
          SELECT provider, account, MAX(timestamp) AS timestamp FROM quota_snapshots
          {"WHERE " + where if where else ""} GROUP BY provider, account
        )
        SELECT q.* FROM newest JOIN quota_snapshots AS q
          ON q.provider = newest.provider AND q.account = newest.account
          AND q.timestamp = newest.timestamp
        ORDER BY q.provider, q.account, q.quota_type, q.id
        """, params).fetchall()
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:  # ordered by id within a window: the later insert wins
        latest[(row["provider"], row["account"], row["quota_type"])] = dict(row)
    return list(latest.values())


def snapshot_history(db: Database, *, since: str, provider: str | None = None,
                     account: str | None = None) -> list[dict[str, Any]]:
    """Hourly buckets of snapshots taken at or after *since* (ISO UTC).

    One bucket per (hour, provider, account, window): the last reading of the hour
    (``used_pct``, ``remaining``, ``resets_at``), the highest share used in it and how
    many readings it holds. Ordered hour, provider, account, window.
    """
    where, params = _filters(provider, account)
    rows = db.reader().execute(f"""
        SELECT substr(timestamp, 1, 13) AS hour, provider, account, quota_type, model,
               used_pct, remaining, resets_at, samples, max_used_pct, timestamp
        FROM (
          SELECT *,
                 ROW_NUMBER() OVER (PARTITION BY substr(timestamp, 1, 13), provider, account,
                                    quota_type ORDER BY timestamp DESC, id DESC) AS rn,
                 COUNT(*) OVER (PARTITION BY substr(timestamp, 1, 13), provider, account,
                                quota_type) AS samples,
                 MAX(used_pct) OVER (PARTITION BY substr(timestamp, 1, 13), provider,
                                     account, quota_type) AS max_used_pct
          FROM quota_snapshots WHERE timestamp >= ? {"AND " + where if where else ""}
        ) WHERE rn = 1
        ORDER BY hour, provider, account, quota_type
        """, [since, *params]).fetchall()
    return [{"timestamp": r["hour"] + ":00:00.000Z", "provider": r["provider"],
             "account": r["account"], "quota_type": r["quota_type"],
             "window": r["quota_type"], "model": r["model"], "used_pct": r["used_pct"],
             "max_used_pct": r["max_used_pct"], "remaining": r["remaining"],
             "resets_at": r["resets_at"], "samples": int(r["samples"]),
             "last_at": r["timestamp"]} for r in rows]


def local_usage(db: Database, *, since: str, auth_index: str | None,
                account: str) -> dict[str, Any]:
    """Calls this proxy recorded through one account since *since*: ``{since, requests,
    total_tokens, cost_usd}``.

    Matched on CLIProxyAPI's ``auth_index`` when it is known: an e-mail names one person's
    Claude *and* Codex accounts, and the API family of a call says nothing about which
    vendor's account served it (the original counted every non-Claude account's rows as
    ``openai``). Without an index, the account name is all there is.
    """
    column, key = (("cliproxy_auth_index", auth_index) if auth_index
                   else ("cliproxy_account", account))
    row = db.reader().execute(
        f"SELECT COUNT(*) AS requests, COALESCE(SUM(total_tokens), 0) AS total_tokens, "
        f"COALESCE(SUM(cost_usd), 0.0) AS cost_usd FROM request_logs "
        f"WHERE {column} = ? AND started_at >= ?", (key, since)).fetchone()
    return {"since": since, "requests": int(row["requests"]),
            "total_tokens": int(row["total_tokens"]), "cost_usd": float(row["cost_usd"])}

"""The ``daily_usage`` aggregate and the invariant that keeps it honest.

Invariant (the original broke it, spec §12.8): for every (day, provider, model),
``daily_usage`` equals the aggregate of all **non-pending** ``request_logs`` rows with
``day = substr(started_at, 1, 10)``. Every finalized row is one request: errors and
aborted streams included, because an aborted stream is still billed upstream.

The table is maintained by additive upserts inside the same transaction that moves rows
out of ``pending`` (finalize, boot recovery), so it is never rebuilt on the hot path.
The helpers that take a ``sqlite3.Connection`` must be called inside ``Database.write()``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from agent_cli_proxy.storage.database import Database

_SUMS = ("prompt_tokens", "completion_tokens", "cache_creation_tokens", "cache_read_tokens",
         "total_tokens")

# One SELECT shape used for the additive upserts and the check, so they
# cannot disagree about what a row contributes. NULL token columns (legacy rows) count 0.
_AGGREGATE = (
    "SELECT substr(started_at, 1, 10) AS day, provider, model, COUNT(*) AS request_count, "
    + ", ".join(f"COALESCE(SUM({c}), 0) AS {c}" for c in _SUMS)
    + ", COALESCE(SUM(cost_usd), 0.0) AS cost_usd FROM request_logs WHERE {where} "
    "GROUP BY 1, 2, 3"
)
_COLUMNS = "day, provider, model, request_count, " + ", ".join(_SUMS) + ", cost_usd"
_VALUE_COLUMNS = ("request_count", *_SUMS, "cost_usd")
_ADD = ", ".join(f"{c} = {c} + excluded.{c}" for c in _VALUE_COLUMNS)

# "WHERE" inside _AGGREGATE also resolves SQLite's INSERT…SELECT…ON CONFLICT ambiguity.
_UPSERT = ("INSERT INTO daily_usage ({cols}) {select} "
           "ON CONFLICT(day, provider, model) DO UPDATE SET {set}")


_ADD_ONE = _UPSERT.format(
    cols=_COLUMNS, select="VALUES (?, ?, ?, 1, " + ", ".join("?" * len(_SUMS)) + ", ?)",
    set=_ADD)

DAY = "substr(started_at, 1, 10)"
"""The day a request_logs row counts on (SQL): what :func:`add_one` expects as ``day``."""


def add_one(conn: sqlite3.Connection, day: str, provider: str, model: str,
            sums: tuple[int | None, ...], cost_usd: float | None) -> None:
    """Add one request_logs row, given its stored values, to daily_usage: what
    :func:`add_rows` adds for it, without reading it back. *sums*: the row's
    ``prompt_tokens, completion_tokens, cache_creation_tokens, cache_read_tokens,
    total_tokens``; ``day`` = :data:`DAY` of the row. NULL counts 0, as in add_rows."""
    conn.execute(_ADD_ONE, (day, provider, model, *(v or 0 for v in sums),
                            0.0 if cost_usd is None else cost_usd))


def add_rows(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> None:
    """Add the request_logs rows matching *where* to daily_usage (one request each).

    Call in the same transaction, and before or after (not across) the statement that
    moves those rows out of ``pending``, with a predicate that selects exactly them.
    """
    select = _AGGREGATE.format(where=where)
    conn.execute(_UPSERT.format(cols=_COLUMNS, select=select, set=_ADD), params)


def _mismatches(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    expected = {
        (r["day"], r["provider"], r["model"]): r
        for r in conn.execute(_AGGREGATE.format(where="lifecycle_status <> 'pending'"))
    }
    stored = {(r["day"], r["provider"], r["model"]): r
              for r in conn.execute(f"SELECT {_COLUMNS} FROM daily_usage")}
    out: list[dict[str, Any]] = []
    for key, want in expected.items():
        have = stored.get(key)
        if have is None or any(_differs(have[c], want[c]) for c in _VALUE_COLUMNS):
            out.append({
                "day": key[0], "provider": key[1], "model": key[2],
                "expected": {c: want[c] for c in _VALUE_COLUMNS},
                "stored": None if have is None else {c: have[c] for c in _VALUE_COLUMNS},
            })
    return out


def _differs(a: Any, b: Any) -> bool:
    # Costs are float sums whose order differs between the two computations.
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a or 0) - float(b or 0)) > 1e-9
    return (a or 0) != (b or 0)


def daily_usage_mismatches(db: Database) -> list[dict[str, Any]]:
    """Groups where daily_usage disagrees with the finalized request_logs rows.

    Empty when the invariant holds. For ``doctor`` and tests; it scans the whole table.
    Groups present only in daily_usage (rows deleted by hand) are not reported.
    """
    return _mismatches(db.reader())


def get_daily_usage(db: Database, day: str) -> list[dict[str, Any]]:
    """The daily_usage rows of one day (``YYYY-MM-DD``), by provider and model."""
    rows = db.reader().execute(
        f"SELECT {_COLUMNS} FROM daily_usage WHERE day = ? ORDER BY provider, model", (day,)
    ).fetchall()
    return [dict(r) for r in rows]

"""The cost backfill repository: re-price finalized rows, audit them, fix daily_usage.

A row whose price was unknown when it was finalized keeps ``cost_status = 'pending'`` and
cost 0. :func:`backfill_costs` prices such rows later (and, with ``recompute_all``, every
finalized row, after prices changed). It knows nothing about prices: the caller passes a
``price(model, api_provider, usage)`` callable, in practice ``usage.cost.compute_cost``
bound to the live price table.

Concurrency rules, because the proxy finalizes rows while this runs (and the
``backfill-costs`` command may run beside the server's own loop):

* Rows still ``pending`` in their lifecycle are never candidates: finalize owns them.
* Costs are computed *before* a chunk's write transaction opens, and each UPDATE re-checks
  that the row still has the cost, status, model, provider and tokens it was priced
  from. A row changed in between is skipped (and retried by the next run), never
  overwritten.
* ``daily_usage`` gets the cost *delta* (new - old) of each updated row in the same
  transaction, never a rebuild, so its invariant (``daily_usage_mismatches() == []``)
  holds after every committed chunk. So does ``daily_account_usage`` when the row is
  already attributed to a CLIProxyAPI account (``storage.accounts.add_account_cost_delta``).

A row is priced on ``COALESCE(cost_model, model)``: account correlation records in
``cost_model`` the upstream model CPA actually used when the client saw an alias, and
re-pricing on the alias would undo that (or leave the row pending forever).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.storage.accounts import add_account_cost_delta
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.requests import (
    FINAL_COST_STATUSES,
    _iso_ms,
    _sqlite_timestamp,
    audit_source,
)
from agent_cli_proxy.usage.model import Usage

log = get_logger("storage")


class PricedCost(Protocol):
    """What storage reads from a cost result (``usage.cost.CostResult`` has these)."""

    @property
    def cost_usd(self) -> float: ...
    @property
    def status(self) -> str: ...
    @property
    def rule(self) -> str | None: ...
    @property
    def price_key(self) -> str | None: ...
    @property
    def detail(self) -> Mapping[str, object]: ...
    @property
    def detail_json(self) -> str:
        """The audit detail as compact JSON text."""


Pricer = Callable[[str | None, str | None, Usage], PricedCost]


@dataclass(frozen=True, slots=True)
class BackfillReport:
    """What one backfill run saw and did (for a dry run: what it would have done).

    ``ok``/``pending``/``unsupported`` count the scanned rows by the status pricing gave
    them. ``old_total_usd`` is the scanned rows' stored cost before the run and
    ``new_total_usd`` after it, so their difference is what daily_usage gained.
    ``skipped`` counts rows changed by someone else between read and write.
    """

    scanned: int
    changed: int
    ok: int
    pending: int
    unsupported: int
    old_total_usd: float
    new_total_usd: float
    skipped: int = 0


_TOKEN_COLUMNS = ("prompt_tokens", "cache_read_tokens", "cache_creation_tokens",
                  "cache_creation_1h_tokens", "completion_tokens", "reasoning_tokens")
_FINAL = "lifecycle_status IN ('completed', 'error', 'aborted')"
_SELECT = ("SELECT id, substr(started_at, 1, 10) AS day, provider, model, cost_model, "
           "COALESCE(cost_model, model) AS priced_model, cost_usd, cost_status, "
           + ", ".join(_TOKEN_COLUMNS) + " FROM request_logs")

# The optimistic check: still finalized, and still exactly what was priced. `IS` because
# legacy rows may hold NULLs, and a NULL must match itself.
_UPDATE = (
    "UPDATE request_logs SET cost_usd = :new_cost, cost_status = :new_status "
    f"WHERE id = :id AND {_FINAL} AND cost_usd IS :cost_usd "
    "AND cost_status = :cost_status AND provider IS :provider AND model IS :model "
    "AND cost_model IS :cost_model AND "
    + " AND ".join(f"{c} IS :{c}" for c in _TOKEN_COLUMNS)
)
# Cost only: the row was counted as a request (and its tokens) when it was finalized.
_DAILY_DELTA = (
    "INSERT INTO daily_usage (day, provider, model, request_count, prompt_tokens, "
    "completion_tokens, cache_creation_tokens, cache_read_tokens, total_tokens, cost_usd) "
    "VALUES (?, ?, ?, 0, 0, 0, 0, 0, 0, ?) ON CONFLICT(day, provider, model) "
    "DO UPDATE SET cost_usd = COALESCE(cost_usd, 0) + excluded.cost_usd"
)
_AUDIT = (
    "INSERT INTO cost_audit (request_log_id, model, provider, source, base_cost_usd, "
    "calc_at, rule, price_key, detail_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class _Plan:
    row: sqlite3.Row
    status: str
    cost: float
    result: PricedCost | None
    """None when the row keeps what it has."""

    @property
    def old_cost(self) -> float:
        return float(self.row["cost_usd"] or 0.0)


def backfill_costs(db: Database, price: Pricer, *, now_ms: int, lookback_ms: int | None,
                   chunk_size: int, dry_run: bool = False, recompute_all: bool = False,
                   limit: int | None = None,
                   should_stop: Callable[[], bool] | None = None) -> BackfillReport:
    """Price finalized rows whose cost is pending (or, with *recompute_all*, all of them).

    Looks at rows started in the last *lookback_ms* (None: all), at most *limit* of them,
    *chunk_size* per write transaction, in id order up to the highest candidate id at the
    start (rows finalized later wait for the next run). *should_stop* is polled between
    chunks so a stopping worker does not finish a long run first.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    where, params = _candidates(now_ms, lookback_ms, recompute_all)
    reader = db.reader()
    max_id = reader.execute(f"SELECT MAX(id) FROM request_logs WHERE {where}",
                            params).fetchone()[0]
    calc_at = _sqlite_timestamp(_iso_ms(now_ms))
    totals = dict.fromkeys(("scanned", "changed", "ok", "pending", "unsupported",
                            "skipped"), 0)
    old_total = delta_total = 0.0
    last_id = 0
    while max_id is not None and (limit is None or totals["scanned"] < limit):
        if should_stop is not None and should_stop():
            break
        size = chunk_size if limit is None else min(chunk_size, limit - totals["scanned"])
        rows = reader.execute(f"{_SELECT} WHERE {where} AND id > ? AND id <= ? "
                              "ORDER BY id LIMIT ?", (*params, last_id, max_id, size)
                              ).fetchall()
        if not rows:
            break
        last_id = rows[-1]["id"]
        # All pricing happens here, before the write lock is taken.
        plans = [_plan(row, price) for row in rows]
        changes = [p for p in plans if p.result is not None]
        applied = changes if dry_run else _apply(db, changes, calc_at)
        totals["scanned"] += len(rows)
        totals["changed"] += len(applied)
        totals["skipped"] += len(changes) - len(applied)
        for plan in plans:
            if plan.status in FINAL_COST_STATUSES:  # not a row left 'unresolved'
                totals[plan.status] += 1
            old_total += plan.old_cost
        delta_total += sum(p.cost - p.old_cost for p in applied)
    return BackfillReport(
        scanned=totals["scanned"], changed=totals["changed"], ok=totals["ok"],
        pending=totals["pending"], unsupported=totals["unsupported"],
        old_total_usd=old_total, new_total_usd=old_total + delta_total,
        skipped=totals["skipped"])


def _candidates(now_ms: int, lookback_ms: int | None,
                recompute_all: bool) -> tuple[str, tuple[Any, ...]]:
    where = [_FINAL]
    params: list[Any] = []
    if not recompute_all:
        # 'unresolved' on a finalized row: left by the original's shutdown path.
        where.append("cost_status IN ('pending', 'unresolved')")
    if lookback_ms is not None:
        # ISO-8601 UTC strings of one format compare like the times they name.
        where.append("started_at >= ?")
        params.append(_iso_ms(now_ms - lookback_ms))
    return " AND ".join(where), tuple(params)


def _plan(row: sqlite3.Row, price: Pricer) -> _Plan:
    """Price one row; ``result`` is set only if the row should change."""
    old_status = str(row["cost_status"])
    old_cost = float(row["cost_usd"] or 0.0)
    usage = Usage(**{c: int(row[c] or 0) for c in _TOKEN_COLUMNS})
    try:
        result = price(row["priced_model"], row["provider"], usage)
        status, cost = result.status, float(result.cost_usd)
    except Exception:
        # One row must not stop the rows after it from ever being priced.
        log.exception("cost.backfill_row_failed", row_id=row["id"], model=row["priced_model"])
        return _Plan(row, old_status, old_cost, None)
    if status not in FINAL_COST_STATUSES or not math.isfinite(cost) or cost < 0:
        log.warning("cost.backfill_bad_result", row_id=row["id"], model=row["priced_model"],
                    status=status, cost_usd=cost)
        return _Plan(row, old_status, old_cost, None)
    if old_status == "ok" and status != "ok":
        # Recomputing found no price (e.g. offline, built-in table only): a missing price
        # is missing information, not a cost of zero, so the known cost stands.
        return _Plan(row, old_status, old_cost, None)
    if status == old_status and cost == old_cost:
        return _Plan(row, status, cost, None)
    return _Plan(row, status, cost, result)


def _apply(db: Database, changes: list[_Plan], calc_at: str) -> list[_Plan]:
    """Write *changes* in one transaction; return those applied (not changed meanwhile)."""
    if not changes:
        return []
    applied: list[_Plan] = []
    with db.write() as conn:
        for plan in changes:
            row, result = plan.row, plan.result
            assert result is not None
            params = {c: row[c] for c in ("id", "provider", "model", "cost_model", "cost_usd",
                                          "cost_status", *_TOKEN_COLUMNS)}
            params.update(new_cost=plan.cost, new_status=plan.status)
            if conn.execute(_UPDATE, params).rowcount == 0:
                continue
            applied.append(plan)
            delta = plan.cost - plan.old_cost
            if delta:
                conn.execute(_DAILY_DELTA, (row["day"], row["provider"], row["model"], delta))
                # An attributed row is counted in daily_account_usage too (a no-op for
                # one without an account; one attributed later brings its new cost).
                add_account_cost_delta(conn, row["id"], delta)
            if not _audit_is_current(conn, row["id"], plan.status == row["cost_status"],
                                     plan.cost):
                conn.execute(_AUDIT, (
                    row["id"], row["priced_model"], row["provider"], audit_source(plan.status),
                    plan.cost, calc_at, result.rule, result.price_key, result.detail_json))
    return applied


def _audit_is_current(conn: sqlite3.Connection, row_id: int, same_status: bool,
                      cost: float) -> bool:
    # Spec §6.6: no new audit row when the status is unchanged and the latest audit
    # already records this cost.
    if not same_status:
        return False
    latest = conn.execute("SELECT base_cost_usd FROM cost_audit WHERE request_log_id = ? "
                          "ORDER BY id DESC LIMIT 1", (row_id,)).fetchone()
    return latest is not None and latest[0] == cost


def cost_audit_for(db: Database, request_log_id: int) -> list[dict[str, Any]]:
    """The audit trail of one row, oldest first, with ``detail`` decoded from JSON."""
    rows = db.reader().execute(
        "SELECT id, request_log_id, model, provider, source, base_cost_usd, calc_at, rule, "
        "price_key, detail_json FROM cost_audit WHERE request_log_id = ? ORDER BY id",
        (request_log_id,)).fetchall()
    out: list[dict[str, Any]] = []
    for row in rows:
        entry = dict(row)
        raw = entry.pop("detail_json")
        entry["detail"] = _decode(raw)
        out.append(entry)
    return out


def _decode(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # written by hand or by another tool: show it as it is

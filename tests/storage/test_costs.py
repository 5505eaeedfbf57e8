"""The cost backfill repository: pricing pending rows, audits, daily_usage deltas, races."""

from __future__ import annotations

import calendar
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy.storage import (
    Database,
    Finalization,
    PendingRow,
    accounts,
    daily_usage_mismatches,
    finalize,
    get_daily_usage,
    get_request,
    insert_pending,
    iso_utc,
    open_database,
)
from agent_cli_proxy.storage.costs import BackfillReport, backfill_costs, cost_audit_for
from agent_cli_proxy.usage.cost import CostResult, compute_cost
from agent_cli_proxy.usage.model import Usage
from agent_cli_proxy.usage.pricing import PriceTable
from tests.storage.original_db import build_snapshot_db, raw_connect

MakePending = Callable[..., PendingRow]

NOW_MS = calendar.timegm((2026, 11, 28, 12, 0, 0)) * 1000
DAY_MS = 86_400_000
TODAY = iso_utc(NOW_MS / 1000 - 3600)  # 2026-11-28T11:00:00.000Z
YESTERDAY = iso_utc((NOW_MS - DAY_MS) / 1000)

MODELS_DEV: dict[str, Any] = {
    "openai": {"id": "openai", "models": {
        "gpt-4o": {"id": "gpt-4o", "cost": {"input": 2.5, "output": 10}}}},
    "anthropic": {"id": "anthropic", "models": {
        "claude-sonnet-4-5": {"id": "claude-sonnet-4-5",
                              "cost": {"input": 3, "output": 15, "cache_read": 0.3,
                                       "cache_write": 3.75}}}},
}
TABLE = PriceTable.from_models_dev(MODELS_DEV, fetched_at=1_700_000_000.0, source="test")
PLAIN = Usage(prompt_tokens=1000, completion_tokens=500)
# 1000 * 2.5 + 500 * 10 = 7500 per million; 1000 * 3 + 500 * 15 = 10500 per million.
GPT_COST, CLAUDE_COST = 0.0075, 0.0105


def pricer(table: PriceTable) -> Callable[[str | None, str | None, Usage], CostResult]:
    def price(model: str | None, api_provider: str | None, usage: Usage) -> CostResult:
        return compute_cost(table, model, api_provider, usage)
    return price


def run(db: Database, table: PriceTable = TABLE, **options: Any) -> BackfillReport:
    values: dict[str, Any] = {"now_ms": NOW_MS, "lookback_ms": None, "chunk_size": 500}
    values.update(options)
    return backfill_costs(db, pricer(table), **values)


def finished(db: Database, make_pending: MakePending, model: str, *,
             usage: Usage = PLAIN, started_at: str = TODAY, lifecycle: str = "completed",
             provider: str = "openai") -> int:
    """A row finalized without a price (cost pending), as the proxy leaves an unknown model."""
    row_id = insert_pending(db, make_pending(model=model, started_at=started_at,
                                             provider=provider))
    assert finalize(db, row_id, Finalization(
        lifecycle_status=lifecycle, status=200 if lifecycle == "completed" else 499,
        model=model, actual_model=model, usage=usage, streamed=True, latency_ms=10,
        finished_at=started_at, cost_status="pending"))
    return row_id


def cost_of(db: Database, row_id: int) -> tuple[str, float]:
    row = get_request(db, row_id)
    assert row is not None
    return row["cost_status"], row["cost_usd"]


def day_cost(db: Database, day: str, model: str) -> float:
    rows = [r for r in get_daily_usage(db, day) if r["model"] == model]
    return float(sum(r["cost_usd"] for r in rows))


def dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    conn = db.reader()
    return {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3")]
            for t in ("request_logs", "daily_usage", "cost_audit")}


# -- schema and finalize -------------------------------------------------------------------

def test_finalize_audits_how_the_cost_was_found(db: Database, make_pending: MakePending
                                                ) -> None:
    row_id = insert_pending(db, make_pending())
    assert finalize(db, row_id, Finalization(
        lifecycle_status="completed", status=200, model="gpt-4o", actual_model="gpt-4o",
        usage=PLAIN, streamed=True, latency_ms=5, finished_at=TODAY, cost_usd=GPT_COST,
        cost_status="ok", cost_rule="vendor", cost_price_key="openai/gpt-4o",
        cost_detail_json='{"rates":{"input":2.5}}'))
    (audit,) = cost_audit_for(db, row_id)
    assert audit == {"id": audit["id"], "request_log_id": row_id, "model": "gpt-4o",
                     "provider": "openai", "source": "pricing", "base_cost_usd": GPT_COST,
                     "calc_at": "2026-11-28 11:00:00", "rule": "vendor",
                     "price_key": "openai/gpt-4o", "detail": {"rates": {"input": 2.5}}}
    assert cost_audit_for(db, row_id + 1) == []


@pytest.mark.parametrize(("status", "source"), [
    ("ok", "pricing"), ("pending", "pricing_unavailable"), ("unsupported", "unsupported_model")])
def test_finalize_names_the_audit_source_from_the_status(
        db: Database, make_pending: MakePending, status: str, source: str) -> None:
    row_id = insert_pending(db, make_pending())
    assert finalize(db, row_id, Finalization(
        lifecycle_status="completed", status=200, model=None, actual_model=None, usage=PLAIN,
        streamed=None, latency_ms=5, finished_at=TODAY, cost_status=status,
        cost_usd=0.5 if status == "ok" else 0.0))
    (audit,) = cost_audit_for(db, row_id)
    assert (audit["source"], audit["rule"], audit["price_key"], audit["detail"]) == (
        source, None, None, None)


def test_original_database_gains_the_audit_columns(tmp_path: Path) -> None:
    path = tmp_path / "proxy.db"
    build_snapshot_db(path)
    with open_database(path) as db:
        # The original's own audit row reads back with the new fields empty.
        (audit,) = cost_audit_for(db, 1)
        assert (audit["source"], audit["base_cost_usd"], audit["rule"], audit["detail"]) == (
            "pricing", 7.25e-05, None, None)
        # Its boot-recovered aborted row (pending cost, no tokens) is a backfill candidate.
        report = run(db)
        assert (report.scanned, report.changed) == (1, 1)
    conn = raw_connect(path)
    try:
        names = {r[1] for r in conn.execute("PRAGMA table_info(cost_audit)")}
        assert {"rule", "price_key", "detail_json"} <= names
        assert conn.execute("SELECT 1 FROM schema_migrations WHERE name = "
                            "'py-0004-cost-audit-detail'").fetchone() is not None
    finally:
        conn.close()


# -- backfill ------------------------------------------------------------------------------

def test_backfill_prices_pending_rows_exactly(db: Database, make_pending: MakePending) -> None:
    gpt = finished(db, make_pending, "gpt-4o")
    claude = finished(db, make_pending, "claude-sonnet-4-5", provider="anthropic")
    old = finished(db, make_pending, "gpt-4o", started_at=YESTERDAY)
    before = {r["model"]: r for r in get_daily_usage(db, TODAY[:10])}

    report = run(db)

    assert report == BackfillReport(scanned=3, changed=3, ok=3, pending=0, unsupported=0,
                                    old_total_usd=0.0,
                                    new_total_usd=2 * GPT_COST + CLAUDE_COST)
    assert cost_of(db, gpt) == cost_of(db, old) == ("ok", GPT_COST)
    assert cost_of(db, claude) == ("ok", CLAUDE_COST)
    for row_id, cost, key in ((gpt, GPT_COST, "openai/gpt-4o"),
                              (claude, CLAUDE_COST, "anthropic/claude-sonnet-4-5")):
        first, second = cost_audit_for(db, row_id)
        assert (first["source"], first["base_cost_usd"]) == ("pricing_unavailable", 0.0)
        assert (second["source"], second["base_cost_usd"]) == ("pricing", cost)
        assert second["price_key"] == key and second["rule"]
        assert second["calc_at"] == "2026-11-28 12:00:00"
        assert second["detail"]["cost_usd"] == cost
    # daily_usage gained exactly the cost; request count and tokens are as they were.
    after = {r["model"]: r for r in get_daily_usage(db, TODAY[:10])}
    for model, cost in (("gpt-4o", GPT_COST), ("claude-sonnet-4-5", CLAUDE_COST)):
        assert after[model]["cost_usd"] == pytest.approx(before[model]["cost_usd"] + cost)
        assert {k: v for k, v in after[model].items() if k != "cost_usd"} == {
            k: v for k, v in before[model].items() if k != "cost_usd"}
    assert day_cost(db, YESTERDAY[:10], "gpt-4o") == pytest.approx(GPT_COST)
    assert daily_usage_mismatches(db) == []


def test_repeated_backfill_writes_nothing(db: Database, make_pending: MakePending) -> None:
    for model in ("gpt-4o", "claude-sonnet-4-5", "mystery-model-1"):
        finished(db, make_pending, model)
    first = run(db)
    assert (first.scanned, first.changed, first.ok, first.pending) == (3, 2, 2, 1)
    state = dump(db)

    again = run(db)  # only the unpriced row is still a candidate, and it is unchanged
    assert (again.scanned, again.changed, again.pending) == (1, 0, 1)
    everything = run(db, recompute_all=True)  # same prices: nothing differs
    assert (everything.scanned, everything.changed, everything.ok) == (3, 0, 2)
    assert everything.old_total_usd == everything.new_total_usd
    assert dump(db) == state


def test_unknown_model_waits_until_a_price_appears(db: Database, make_pending: MakePending
                                                   ) -> None:
    row_id = finished(db, make_pending, "mystery-model-1")
    for _ in range(2):
        report = run(db)
        assert (report.scanned, report.changed, report.pending) == (1, 0, 1)
    assert [a["base_cost_usd"] for a in cost_audit_for(db, row_id)] == [0.0]

    priced = TABLE.with_local({"mystery-model-1": {"input": 1.0, "output": 2.0}}, {})
    report = run(db, priced)
    # 1000 * 1 + 500 * 2 = 2000 per million
    assert (report.scanned, report.changed, report.ok) == (1, 1, 1)
    assert cost_of(db, row_id) == ("ok", 0.002)
    audits = cost_audit_for(db, row_id)
    assert [a["base_cost_usd"] for a in audits] == [0.0, 0.002]  # spec §6.6: audits [0, x]
    assert audits[1]["price_key"] == "override/mystery-model-1"
    assert day_cost(db, TODAY[:10], "mystery-model-1") == pytest.approx(0.002)
    assert daily_usage_mismatches(db) == []


def test_unnamed_model_becomes_unsupported_once(db: Database, make_pending: MakePending
                                                ) -> None:
    row_id = finished(db, make_pending, "unknown")
    report = run(db)
    assert (report.scanned, report.changed, report.unsupported) == (1, 1, 1)
    assert cost_of(db, row_id) == ("unsupported", 0.0)
    assert [a["source"] for a in cost_audit_for(db, row_id)] == [
        "pricing_unavailable", "unsupported_model"]
    assert run(db).scanned == 0  # unsupported is final: not a candidate any more
    assert daily_usage_mismatches(db) == []


def test_dry_run_writes_nothing(db: Database, make_pending: MakePending) -> None:
    for model in ("gpt-4o", "claude-sonnet-4-5", "mystery-model-1", "unknown"):
        finished(db, make_pending, model)
    state = dump(db)
    dry = run(db, dry_run=True)
    assert dump(db) == state
    real = run(db)
    assert dry == real
    assert (real.scanned, real.changed, real.ok, real.pending, real.unsupported) == (
        4, 3, 2, 1, 1)


def test_recompute_all_applies_new_prices_as_deltas(db: Database, make_pending: MakePending
                                                    ) -> None:
    gpt = finished(db, make_pending, "gpt-4o")
    claude = finished(db, make_pending, "claude-sonnet-4-5", provider="anthropic")
    run(db)
    cheaper = dict(MODELS_DEV, openai={"id": "openai", "models": {
        "gpt-4o": {"id": "gpt-4o", "cost": {"input": 1.25, "output": 5}}}})
    new_table = PriceTable.from_models_dev(cheaper, fetched_at=1_800_000_000.0)

    assert run(db, new_table).scanned == 0  # without recompute_all, priced rows stay
    report = run(db, new_table, recompute_all=True)

    assert (report.scanned, report.changed, report.ok) == (2, 1, 2)
    assert report.new_total_usd - report.old_total_usd == pytest.approx(-GPT_COST / 2)
    assert cost_of(db, gpt) == ("ok", GPT_COST / 2)
    assert [a["base_cost_usd"] for a in cost_audit_for(db, gpt)] == [0.0, GPT_COST,
                                                                     GPT_COST / 2]
    assert len(cost_audit_for(db, claude)) == 2  # unchanged: no new audit
    assert day_cost(db, TODAY[:10], "gpt-4o") == pytest.approx(GPT_COST / 2)
    assert daily_usage_mismatches(db) == []


def test_recompute_all_never_forgets_a_known_price(db: Database, make_pending: MakePending
                                                   ) -> None:
    row_id = finished(db, make_pending, "gpt-4o")
    run(db)
    empty = PriceTable.from_models_dev({}, fetched_at=None, source="builtin")
    report = run(db, empty, recompute_all=True)
    assert (report.scanned, report.changed, report.ok, report.pending) == (1, 0, 1, 0)
    assert cost_of(db, row_id) == ("ok", GPT_COST)


def test_lookback_window(db: Database, make_pending: MakePending) -> None:
    recent = finished(db, make_pending, "gpt-4o")
    ancient = finished(db, make_pending, "gpt-4o", started_at=iso_utc(
        (NOW_MS - 30 * DAY_MS) / 1000))
    report = run(db, lookback_ms=7 * DAY_MS)
    assert (report.scanned, report.changed) == (1, 1)
    assert cost_of(db, recent) == ("ok", GPT_COST)
    assert cost_of(db, ancient) == ("pending", 0.0)
    assert run(db, lookback_ms=None).changed == 1
    assert cost_of(db, ancient) == ("ok", GPT_COST)


def test_chunks_cover_every_row_without_pricing_under_the_write_lock(
        db: Database, make_pending: MakePending) -> None:
    ids = [finished(db, make_pending, "gpt-4o") for _ in range(7)]
    seen: list[tuple[int, bool, int]] = []

    def price(model: str | None, api_provider: str | None, usage: Usage) -> CostResult:
        # Observed from the pricing callable: is a write transaction open, and how many
        # rows are already committed as priced (earlier chunks)?
        priced = db.reader().execute(
            "SELECT COUNT(*) FROM request_logs WHERE cost_status = 'ok'").fetchone()[0]
        seen.append((len(seen), db._write_lock.locked(), priced))
        return compute_cost(TABLE, model, api_provider, usage)

    report = backfill_costs(db, price, now_ms=NOW_MS, lookback_ms=None, chunk_size=2)
    assert (report.scanned, report.changed, report.ok) == (7, 7, 7)
    assert all(not locked for _, locked, _ in seen)
    # Each chunk of two was committed before the next chunk was priced.
    assert [priced for _, _, priced in seen] == [0, 0, 2, 2, 4, 4, 6]
    assert all(cost_of(db, i) == ("ok", GPT_COST) for i in ids)
    assert daily_usage_mismatches(db) == []


def test_limit_and_stop(db: Database, make_pending: MakePending) -> None:
    for _ in range(5):
        finished(db, make_pending, "gpt-4o")
    assert run(db, limit=3, chunk_size=2).scanned == 3
    stopped = backfill_costs(db, pricer(TABLE), now_ms=NOW_MS, lookback_ms=None,
                             chunk_size=1, should_stop=lambda: True)
    assert stopped.scanned == 0
    assert run(db).scanned == 2
    with pytest.raises(ValueError, match="chunk_size"):
        run(db, chunk_size=0)


def test_aborted_rows_are_priced_and_pending_rows_never_touched(
        db: Database, make_pending: MakePending) -> None:
    aborted = finished(db, make_pending, "gpt-4o", lifecycle="aborted")
    errored = finished(db, make_pending, "gpt-4o", lifecycle="error")
    in_flight = insert_pending(db, make_pending(model="gpt-4o"))
    untouched = get_request(db, in_flight)
    report = run(db, recompute_all=True)
    assert (report.scanned, report.changed) == (2, 2)
    assert cost_of(db, aborted) == cost_of(db, errored) == ("ok", GPT_COST)
    assert get_request(db, in_flight) == untouched
    assert cost_audit_for(db, in_flight) == []
    assert daily_usage_mismatches(db) == []


def test_finalized_row_left_unresolved_is_priced(db: Database, make_pending: MakePending
                                                 ) -> None:
    # The original's shutdown path left finished rows 'unresolved'.
    row_id = finished(db, make_pending, "gpt-4o")
    with db.write() as conn:
        conn.execute("UPDATE request_logs SET cost_status = 'unresolved' WHERE id = ?",
                     (row_id,))
    report = run(db)
    assert (report.scanned, report.changed) == (1, 1)
    assert cost_of(db, row_id) == ("ok", GPT_COST)
    assert [a["source"] for a in cost_audit_for(db, row_id)] == [
        "pricing_unavailable", "pricing"]


def test_a_failing_price_leaves_the_row_for_later(db: Database, make_pending: MakePending
                                                  ) -> None:
    bad = finished(db, make_pending, "gpt-4o")
    good = finished(db, make_pending, "claude-sonnet-4-5", provider="anthropic")

    def price(model: str | None, api_provider: str | None, usage: Usage) -> CostResult:
        if model == "gpt-4o":
            raise RuntimeError("boom")
        return compute_cost(TABLE, model, api_provider, usage)

    report = backfill_costs(db, price, now_ms=NOW_MS, lookback_ms=None, chunk_size=10)
    assert (report.scanned, report.changed) == (2, 1)
    assert cost_of(db, bad) == ("pending", 0.0)
    assert cost_of(db, good) == ("ok", CLAUDE_COST)


# -- races ---------------------------------------------------------------------------------

class Gate:
    """A pricing callable that stops on its first call until released (no sleeps)."""

    def __init__(self, table: PriceTable) -> None:
        self.table = table
        self.inside = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, model: str | None, api_provider: str | None, usage: Usage
                 ) -> CostResult:
        self.calls += 1
        if self.calls == 1:
            self.inside.set()
            assert self.release.wait(10), "test never released the gate"
        return compute_cost(self.table, model, api_provider, usage)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # surfaced by the test's assertion on out
            out.append(exc)
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_concurrent_backfills_and_finalize_never_double_count(
        db: Database, make_pending: MakePending) -> None:
    first = finished(db, make_pending, "gpt-4o")
    in_flight = insert_pending(db, make_pending(model="claude-sonnet-4-5",
                                                provider="anthropic", started_at=TODAY))
    last = finished(db, make_pending, "gpt-4o")

    gate = Gate(TABLE)
    slow, slow_out = in_thread(lambda: backfill_costs(
        db, gate, now_ms=NOW_MS, lookback_ms=None, chunk_size=1))
    assert gate.inside.wait(10)  # the slow run has read `first` and is pricing it

    # Meanwhile: another backfill (the CLI beside the server) prices everything, and the
    # in-flight call is finalized. Neither may wait for the slow run's pricing.
    fast, fast_out = in_thread(lambda: run(db))
    fast.join(10)
    assert not fast.is_alive(), "the pricing of a chunk held the write lock"
    assert isinstance(fast_out[0], BackfillReport) and fast_out[0].changed == 2
    assert finalize(db, in_flight, Finalization(
        lifecycle_status="completed", status=200, model="claude-sonnet-4-5",
        actual_model="claude-sonnet-4-5", usage=PLAIN, streamed=True, latency_ms=10,
        finished_at=TODAY, cost_status="pending"))

    gate.release.set()
    slow.join(10)
    report = slow_out[0]
    assert isinstance(report, BackfillReport)
    # `first` changed under it: skipped, not overwritten or counted twice. `last` was no
    # longer pending when its chunk was read; the now-finalized in-flight row (inside
    # the snapshot) was priced by the slow run.
    assert (report.scanned, report.changed, report.skipped) == (2, 1, 1)
    assert cost_of(db, first) == cost_of(db, last) == ("ok", GPT_COST)
    assert cost_of(db, in_flight) == ("ok", CLAUDE_COST)
    for row_id in (first, last, in_flight):
        assert len(cost_audit_for(db, row_id)) == 2
    assert day_cost(db, TODAY[:10], "gpt-4o") == pytest.approx(2 * GPT_COST)
    assert day_cost(db, TODAY[:10], "claude-sonnet-4-5") == pytest.approx(CLAUDE_COST)
    assert daily_usage_mismatches(db) == []


def test_row_finalized_after_the_snapshot_waits_for_the_next_run(
        db: Database, make_pending: MakePending) -> None:
    finished(db, make_pending, "gpt-4o")
    gate = Gate(TABLE)
    slow, slow_out = in_thread(lambda: backfill_costs(
        db, gate, now_ms=NOW_MS, lookback_ms=None, chunk_size=1))
    assert gate.inside.wait(10)
    later = finished(db, make_pending, "gpt-4o")  # a new call, finalized mid-run
    gate.release.set()
    slow.join(10)
    assert slow_out[0].scanned == 1
    assert cost_of(db, later) == ("pending", 0.0)
    assert run(db).changed == 1
    assert daily_usage_mismatches(db) == []


# -- rows attributed to CLIProxyAPI accounts ---------------------------------------------

ALIAS = "team-sonnet"  # a CPA model alias; the upstream model is claude-sonnet-4-5
# Someone priced the alias itself (PRICING_OVERRIDES_JSON): not the price of the call.
WITH_ALIAS = TABLE.with_local({ALIAS: {"input": 100, "output": 100}}, {})
DEARER = PriceTable.from_models_dev({"anthropic": {"id": "anthropic", "models": {
    "claude-sonnet-4-5": {"id": "claude-sonnet-4-5", "cost": {"input": 6, "output": 30}}}}},
    fetched_at=1_700_000_000.0, source="test")
EMPTY = PriceTable.from_models_dev({}, fetched_at=1_700_000_000.0, source="test")


def served(db: Database, make_pending: MakePending, model: str) -> int:
    """An Anthropic call CPA answered (it has an upstream latency), cost pending."""
    row_id = insert_pending(db, make_pending(model=model, requested_model=model,
                                             started_at=TODAY, provider="anthropic"))
    assert finalize(db, row_id, Finalization(
        lifecycle_status="completed", status=200, model=model, actual_model=model,
        usage=PLAIN, streamed=False, latency_ms=900, finished_at=TODAY,
        cost_status="pending", upstream_latency_ms=850))
    return row_id


def correlate(db: Database, row_id: int, cost: CostResult | None, *,
              actual_model: str | None = "claude-sonnet-4-5") -> None:
    """What the correlator writes when CPA's usage record names the upstream model."""
    (candidate,) = [c for c in accounts.correlation_candidates(db, TODAY[:10], 10)
                    if c.id == row_id]
    assert accounts.apply_correlation(db, accounts.Correlation(
        row=candidate, ref=accounts.AccountRef("alice@example.com", "aa00bb11cc22dd33"),
        detail_key=f"detail-{row_id}", detail_at=TODAY, actual_model=actual_model,
        cost=cost, cost_model=actual_model if cost is not None else None), now_iso=TODAY)


def account_cost(db: Database) -> float:
    row = db.reader().execute("SELECT SUM(cost_usd) FROM daily_account_usage").fetchone()
    return float(row[0] or 0.0)


def test_repricing_an_attributed_row_moves_its_account_total(
        db: Database, make_pending: MakePending) -> None:
    row_id = served(db, make_pending, "claude-sonnet-4-5")
    assert accounts.attribute(db, row_id, accounts.AccountRef("bob@example.com", "idx1"),
                              now_iso=TODAY)  # by trace header, before any price
    assert account_cost(db) == 0.0
    assert run(db).changed == 1
    assert cost_of(db, row_id) == ("ok", CLAUDE_COST)
    assert account_cost(db) == pytest.approx(CLAUDE_COST)
    assert accounts.account_usage_mismatches(db) == []
    assert run(db, DEARER, recompute_all=True).changed == 1  # prices doubled
    assert account_cost(db) == pytest.approx(2 * CLAUDE_COST)
    assert accounts.account_usage_mismatches(db) == []
    assert daily_usage_mismatches(db) == []


def test_an_unattributed_row_gets_its_new_cost_when_attributed_later(
        db: Database, make_pending: MakePending) -> None:
    row_id = served(db, make_pending, "claude-sonnet-4-5")
    assert run(db).changed == 1
    assert db.reader().execute("SELECT COUNT(*) FROM daily_account_usage").fetchone()[0] == 0
    assert accounts.attribute(db, row_id, accounts.AccountRef("bob@example.com", "idx1"),
                              now_iso=TODAY)
    assert account_cost(db) == pytest.approx(CLAUDE_COST)
    assert accounts.account_usage_mismatches(db) == []


def test_backfill_prices_the_upstream_model_correlation_recorded(
        db: Database, make_pending: MakePending) -> None:
    row_id = served(db, make_pending, ALIAS)
    # Correlation learnt the upstream model while it had no price yet.
    correlate(db, row_id, compute_cost(EMPTY, "claude-sonnet-4-5", "anthropic", PLAIN))
    row = get_request(db, row_id)
    assert row is not None
    assert (row["model"], row["cost_model"], row["cost_status"]) == \
        (ALIAS, "claude-sonnet-4-5", "pending")
    assert compute_cost(WITH_ALIAS, ALIAS, "anthropic", PLAIN).status == "ok"
    assert run(db, WITH_ALIAS).changed == 1  # priced as the upstream model, not the alias
    assert cost_of(db, row_id) == ("ok", CLAUDE_COST)
    audit = cost_audit_for(db, row_id)[-1]
    assert (audit["model"], audit["price_key"]) == ("claude-sonnet-4-5",
                                                    "anthropic/claude-sonnet-4-5")
    assert run(db, DEARER, recompute_all=True).changed == 1
    assert cost_of(db, row_id) == ("ok", 2 * CLAUDE_COST)
    assert account_cost(db) == pytest.approx(2 * CLAUDE_COST)
    assert day_cost(db, TODAY[:10], ALIAS) == pytest.approx(2 * CLAUDE_COST)
    assert accounts.account_usage_mismatches(db) == []
    assert daily_usage_mismatches(db) == []


def test_a_row_priced_on_the_alias_is_not_written_once_correlation_named_the_model(
        db: Database, make_pending: MakePending) -> None:
    row_id = served(db, make_pending, ALIAS)
    gate = Gate(WITH_ALIAS)
    slow, slow_out = in_thread(lambda: backfill_costs(
        db, gate, now_ms=NOW_MS, lookback_ms=None, chunk_size=1))
    assert gate.inside.wait(10)  # the row was read (no cost_model yet) and is being priced
    correlate(db, row_id, compute_cost(EMPTY, "claude-sonnet-4-5", "anthropic", PLAIN))
    gate.release.set()
    slow.join(10)
    report = slow_out[0]
    assert isinstance(report, BackfillReport)
    assert (report.changed, report.skipped) == (0, 1)  # the alias price is not written
    assert cost_of(db, row_id) == ("pending", 0.0)
    assert run(db).changed == 1  # the next run prices what correlation recorded
    assert cost_of(db, row_id) == ("ok", CLAUDE_COST)
    assert accounts.account_usage_mismatches(db) == []
    assert daily_usage_mismatches(db) == []


def test_a_row_attributed_while_it_is_priced_is_counted_once(
        db: Database, make_pending: MakePending) -> None:
    row_id = served(db, make_pending, "claude-sonnet-4-5")
    gate = Gate(TABLE)
    slow, slow_out = in_thread(lambda: backfill_costs(
        db, gate, now_ms=NOW_MS, lookback_ms=None, chunk_size=1))
    assert gate.inside.wait(10)
    # Attributed between the backfill's read and its write: the account has the old cost.
    assert accounts.attribute(db, row_id, accounts.AccountRef("bob@example.com", "idx1"),
                              now_iso=TODAY)
    gate.release.set()
    slow.join(10)
    assert slow_out[0].changed == 1
    assert account_cost(db) == pytest.approx(CLAUDE_COST)
    assert accounts.account_usage_mismatches(db) == []
    assert daily_usage_mismatches(db) == []

"""The cost backfill job: live table, look-back, full runs, price updates, the loop."""

from __future__ import annotations

import calendar
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy.config import settings_for_tests
from agent_cli_proxy.storage import (
    Database,
    Finalization,
    PendingRow,
    daily_usage_mismatches,
    finalize,
    get_request,
    insert_pending,
    iso_utc,
    open_database,
)
from agent_cli_proxy.usage.model import Usage
from agent_cli_proxy.usage.pricing import PriceTable
from agent_cli_proxy.workers.backfill import LOOP_NAME, CostBackfill
from agent_cli_proxy.workers.supervisor import Supervisor
from tests.conftest import event_fields, event_name, logged_events
from tests.hand_clock import LoopClock

NOW_S = float(calendar.timegm((2026, 11, 28, 12, 0, 0)))
DAY_S = 86_400
TABLE = PriceTable.from_models_dev(
    {"openai": {"id": "openai", "models": {
        "gpt-4o": {"id": "gpt-4o", "cost": {"input": 2.5, "output": 10}}}}},
    fetched_at=NOW_S - 60, source="test")
WITH_MYSTERY = TABLE.with_local({"mystery-model-1": {"input": 1.0, "output": 2.0}}, {})
PLAIN = Usage(prompt_tokens=1000, completion_tokens=500)
GPT_COST, MYSTERY_COST = 0.0075, 0.002  # per million: 1000*2.5 + 500*10; 1000*1 + 500*2


class Prices:
    """The live table, swappable like the pricing service's."""

    def __init__(self, table: PriceTable) -> None:
        self.table = table
        self.calls = 0

    def __call__(self) -> PriceTable:
        self.calls += 1
        return self.table


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "proxy.db")
    yield database
    database.close()


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    with logged_events("cost", lambda r: (event_name(r), event_fields(r))) as seen:
        yield seen


def finished(db: Database, model: str, *, age_s: float = 3600) -> int:
    """A call finalized without a price, *age_s* before NOW_S."""
    started = iso_utc(NOW_S - age_s)
    row_id = insert_pending(db, PendingRow(
        provider="openai", model=model, requested_model=model, tool="opencode",
        client_id="opencode-1", path="/v1/chat/completions", streamed=True,
        started_at=started, request_id="r", meta_json=None, user_agent=None, source_ip=None,
        agent=None, msg_id=None, session_id=None, identify_rule=None))
    assert finalize(db, row_id, Finalization(
        lifecycle_status="completed", status=200, model=model, actual_model=model,
        usage=PLAIN, streamed=True, latency_ms=10, finished_at=started,
        cost_status="pending"))
    return row_id


def cost_of(db: Database, row_id: int) -> tuple[str, float]:
    row = get_request(db, row_id)
    assert row is not None
    return row["cost_status"], row["cost_usd"]


def make(db: Database, prices: Callable[[], PriceTable], clock: LoopClock | None = None,
         **settings: Any) -> CostBackfill:
    values: dict[str, Any] = {"cost_backfill_lookback_ms": 7 * DAY_S * 1000,
                              "cost_backfill_chunk_size": 2,
                              "cost_backfill_interval_ms": 1_800_000}
    values.update(settings)
    return CostBackfill(db, settings_for_tests(**values), prices, clock=clock or LoopClock(NOW_S))


def test_run_once_prices_the_window_and_full_runs_everything(
        db: Database, events: list[tuple[str, dict[str, Any]]]) -> None:
    recent = [finished(db, "gpt-4o") for _ in range(3)]
    ancient = finished(db, "gpt-4o", age_s=30 * DAY_S)
    job = make(db, Prices(TABLE))

    report = job.run_once()
    assert (report.scanned, report.changed, report.ok) == (3, 3, 3)
    assert all(cost_of(db, i) == ("ok", GPT_COST) for i in recent)
    assert cost_of(db, ancient) == ("pending", 0.0)
    ((_, fields),) = [e for e in events if e[0] == "cost.backfill"]
    assert fields == {"full": False, "price_source": "test", "scanned": 3, "changed": 3,
                      "ok": 3, "pending": 0, "unsupported": 0, "old_total_usd": 0.0,
                      "new_total_usd": pytest.approx(3 * GPT_COST), "skipped": 0}

    events.clear()
    assert job.run_once().scanned == 0
    assert [e for e in events if e[0] == "cost.backfill"] == []  # nothing to say

    full = job.run_once(full=True)  # all history, priced rows included
    assert (full.scanned, full.changed) == (4, 1)
    assert cost_of(db, ancient) == ("ok", GPT_COST)
    assert daily_usage_mismatches(db) == []


def test_new_prices_price_pending_rows_at_once(db: Database) -> None:
    row_id = finished(db, "mystery-model-1")
    prices = Prices(TABLE)
    job = make(db, prices)
    assert job.run_once().pending == 1

    prices.table = WITH_MYSTERY
    job.on_prices_updated(WITH_MYSTERY)  # as a PricingService.on_update listener
    assert cost_of(db, row_id) == ("ok", MYSTERY_COST)
    assert prices.calls == 2
    assert daily_usage_mismatches(db) == []


def test_prices_arriving_mid_run_are_used_right_after_it(db: Database) -> None:
    row_id = finished(db, "mystery-model-1")
    inside, release = threading.Event(), threading.Event()
    prices = Prices(TABLE)

    def provider() -> PriceTable:
        table = prices()  # the table this run started with
        if prices.calls == 1:
            inside.set()
            assert release.wait(10)
        return table

    job = make(db, provider)
    running = threading.Thread(target=job.run_once, daemon=True)
    running.start()
    assert inside.wait(10)

    prices.table = WITH_MYSTERY
    notify = threading.Thread(target=job.on_prices_updated, daemon=True)
    notify.start()
    notify.join(10)
    # The pricing thread is not held up by the run in progress...
    assert not notify.is_alive() and running.is_alive()
    release.set()
    running.join(10)
    assert not running.is_alive()
    # ...which, having started with the old prices, ran once more with the new ones.
    assert prices.calls == 2
    assert cost_of(db, row_id) == ("ok", MYSTERY_COST)


def test_on_prices_updated_never_raises(db: Database,
                                        events: list[tuple[str, dict[str, Any]]]) -> None:
    def broken() -> PriceTable:
        raise RuntimeError("no table")

    make(db, broken).on_prices_updated()
    assert [e for e, _ in events] == ["cost.backfill_failed"]


def test_registered_loop_runs_at_start_then_every_interval(db: Database) -> None:
    row_id = finished(db, "gpt-4o")
    clock = LoopClock(NOW_S)
    supervisor = Supervisor(clock=clock, wait=clock.wait, rng=random.Random(3))
    job = make(db, Prices(TABLE), clock, cost_backfill_interval_ms=600_000)
    job.register(supervisor)
    supervisor.start()
    try:
        assert clock.paused.wait(10)  # the first run is done (no initial delay)
        assert supervisor.names() == [LOOP_NAME]
        assert cost_of(db, row_id) == ("ok", GPT_COST)
        (delay,) = clock.delays
        assert 540 <= delay <= 660  # the interval, ± 10 % jitter
    finally:
        assert supervisor.stop(timeout_s=10)
    # Stopping the supervisor stops a long run between chunks.
    finished(db, "gpt-4o")
    assert job.run_once().scanned == 0

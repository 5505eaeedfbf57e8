"""The cost backfill job: price rows that were finalized before their price was known.

A call to a model the price table does not know is recorded with cost status
``pending``. This job re-prices such rows with the live table: at boot, every
``COST_BACKFILL_INTERVAL_MS``, and soon after new prices arrive
(:meth:`CostBackfill.on_prices_updated`). The SQL, the concurrency rules and the
daily_usage bookkeeping live in ``storage.costs``; this module owns the *when* and the
choice of price table.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from agent_cli_proxy.clock import SYSTEM_CLOCK, Clock
from agent_cli_proxy.config import Settings
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.storage.costs import BackfillReport, backfill_costs
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.usage.cost import CostResult, compute_cost
from agent_cli_proxy.usage.model import Usage
from agent_cli_proxy.usage.pricing import PriceTable
from agent_cli_proxy.workers.supervisor import Supervisor

log = get_logger("cost")

LOOP_NAME = "cost-backfill"


class CostBackfill:
    """Runs ``storage.costs.backfill_costs`` with the live price table.

    Runs never overlap: a run asked for while one is in progress is folded into it
    (see :meth:`on_prices_updated`), and :meth:`run_once` waits for the current run.
    """

    def __init__(self, db: Database, settings: Settings,
                 table_provider: Callable[[], PriceTable], *, clock: Clock = SYSTEM_CLOCK,
                 stop: threading.Event | None = None) -> None:
        self._db = db
        self._settings = settings
        self._table_provider = table_provider
        self._clock = clock
        self._stop = stop
        self._run_lock = threading.Lock()
        # Set when prices changed after the current run (if any) read its table.
        self._prices_changed = threading.Event()

    def run_once(self, full: bool = False) -> BackfillReport:
        """One pass over pending rows in the look-back window.

        *full* ignores the window and recomputes rows already priced too (prices
        changed); rows whose cost comes out the same are not touched.
        """
        with self._run_lock:
            # This run reads the newest table, so earlier price updates are covered.
            self._prices_changed.clear()
            report = self._run(full)
        self._drain()
        return report

    def on_prices_updated(self, table: PriceTable | None = None) -> None:
        """New prices arrived: price pending rows now, in the caller's thread.

        Fits ``PricingService.on_update`` (*table* is ignored: runs read the live table
        from the provider). Thread-safe and never raises. If a run is in progress it is
        not waited for: that run repeats once when it ends.
        """
        self._prices_changed.set()
        try:
            self._drain()
        except Exception:
            log.exception("cost.backfill_failed", trigger="prices_updated")

    def register(self, supervisor: Supervisor) -> None:
        """Add the ``cost-backfill`` loop: at once, then every COST_BACKFILL_INTERVAL_MS."""
        if self._stop is None:
            # A long run ends between chunks when the server stops, not after the last one.
            self._stop = supervisor.stop_event
        supervisor.add(LOOP_NAME, self.run_once,
                       interval_s=self._settings.cost_backfill_interval_ms / 1000,
                       run_on_start=True)

    def _drain(self) -> None:
        # Whoever holds the lock re-checks the flag after releasing it (run_once calls
        # this too), so a flag set while the lock was held is never left unserved.
        while self._prices_changed.is_set():
            if not self._run_lock.acquire(blocking=False):
                return
            try:
                self._prices_changed.clear()
                self._run(full=False)
            finally:
                self._run_lock.release()

    def _run(self, full: bool) -> BackfillReport:
        table = self._table_provider()  # one table for the whole run: consistent prices

        def price(model: str | None, api_provider: str | None, usage: Usage) -> CostResult:
            return compute_cost(table, model, api_provider, usage)

        stop = self._stop
        report = backfill_costs(
            self._db, price, now_ms=round(self._clock.time() * 1000),
            lookback_ms=None if full else self._settings.cost_backfill_lookback_ms,
            chunk_size=self._settings.cost_backfill_chunk_size, recompute_all=full,
            should_stop=None if stop is None else stop.is_set)
        if report.scanned:
            log.info("cost.backfill", full=full, price_source=table.source,
                     **dataclasses.asdict(report))
        return report

"""Which CLIProxyAPI account served each call (CLIPROXY_MGMT_KEY): exact by trace header,
else by correlating CPA's usage records.

Exact (CPA v7.2.84+): the recorder hands :meth:`AccountAttribution.traced` the
``X-CPA-TRACE-ID`` of each finalized row. Its auth_index is joined with a cached
auth_index -> account map from ``/auth-files``, on the request thread and without any
network call; when the map misses, only the auth_index is stored and the loop resolves
the row after refreshing the map (once per unknown index; the map is also refreshed
every :data:`AUTH_FILES_REFRESH_S`).

Fallback (older CPA): the ``correlator`` loop (every CLIPROXY_CORRELATION_INTERVAL_MS)
matches rows of the last CLIPROXY_CORRELATION_LOOKBACK_MS that have no account with the
usage details of ``/usage`` (v6) or, where that route is gone, records popped from the
usage queue (v7, kept in memory for the look-back since a pop is destructive); see
``workers.correlation``. It asks CPA only when such rows exist, and never once a trace
header has been seen or CPA's version has them. A detail is matched at most once, ever
(``storage.accounts`` records it). When a detail changes a row's model (an alias CPA
resolved) or fills tokens the stream did not report, the cost is recomputed with the
live price table.

The management client's own backoff keeps a broken management API (down, disabled, a
wrong key) from being asked more than rarely; :meth:`status` says why for ``/ready``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_cli_proxy.clock import SYSTEM_CLOCK, Clock
from agent_cli_proxy.config import Settings
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.storage import accounts as repo
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.requests import iso_utc
from agent_cli_proxy.upstream.cpa_headers import Trace, parse_version
from agent_cli_proxy.upstream.management import ManagementClient, ManagementUnavailable
from agent_cli_proxy.usage.cost import CostResult, compute_cost
from agent_cli_proxy.usage.pricing import PriceTable
from agent_cli_proxy.workers.correlation import (
    WINDOW_S,
    Pair,
    UsageDetail,
    details_from_queue,
    details_from_usage,
    match,
    model_key,
)
from agent_cli_proxy.workers.supervisor import Supervisor

log = get_logger("accounts")

LOOP_NAME = "correlator"
FIRST_RUN_DELAY_S = 5.0  # as the original: let the server settle first
AUTH_FILES_REFRESH_S = 300.0
TRACE_VERSION = (7, 2, 84)  # first CPA that sends X-CPA-TRACE-ID
TRACE_LOOKBACK_S = 86_400.0  # traced rows wait this long for their auth_index to be known
MAX_ROWS = 500  # rows looked at per tick
QUEUE_BATCH = 500
QUEUE_BATCHES = 4  # at most this many pops per tick
MAX_POOL = 10_000  # usage-queue records kept between ticks
MAX_TRACE_IDS = 10_000
PRUNE_EVERY_S = 600.0
MATCH_RETENTION_S = 3_600.0  # kept beyond the look-back (CPA's clock may differ from ours)


@dataclass(frozen=True, slots=True)
class AccountInfo:
    auth_index: str
    name: str
    provider: str | None


@dataclass(frozen=True, slots=True)
class TickReport:
    resolved: int = 0
    correlated: int = 0
    candidates: int = 0
    details: int = 0


_SECRET_PREFIXES = ("sk-", "aiza", "xai-", "sess-", "eyj")


def account_name(entry: dict[str, Any]) -> str | None:
    """How a row names an ``/auth-files`` account: e-mail, else label, else file name.
    Never the ``account`` field, which is the API key itself for API-key credentials."""
    secret = entry.get("account") if entry.get("account_type") == "api_key" else None
    for field in ("email", "label", "name", "id"):
        value = entry.get(field)
        if isinstance(value, str) and value.strip() and value != secret \
                and not value.strip().lower().startswith(_SECRET_PREFIXES):
            return value.strip()[:200]
    return None


class AccountAttribution:
    """The account map, exact attribution, the fallback correlator loop and its status."""

    def __init__(self, db: Database, settings: Settings, management: ManagementClient,
                 prices: Callable[[], PriceTable], *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._db = db
        self._management = management
        self._prices = prices
        self._clock = clock
        self._interval_s = settings.cliproxy_correlation_interval_ms / 1000
        self._lookback_s = settings.cliproxy_correlation_lookback_ms / 1000
        self._lock = threading.Lock()
        self._map: dict[str, AccountInfo] = {}  # replaced whole, never mutated
        self._map_at: float | None = None  # monotonic time of the last refresh
        self._map_refreshed_at: float | None = None  # wall time, for status()
        self._refreshed_for: set[str] = set()  # unknown indexes a refresh was made for
        self._trace_seen_at: float | None = None
        self._trace_ids: deque[str] = deque(maxlen=MAX_TRACE_IDS)
        self._trace_id_set: set[str] = set()
        self._queue_pool: dict[str, UsageDetail] = {}
        self._queue_warned = False
        self._mode: str | None = None
        self._last_run_at: float | None = None
        self._pruned_at: float | None = None
        self._counts = {"trace": 0, "correlated": 0}

    # -- the request thread -------------------------------------------------------------

    def traced(self, row_id: int, trace: Trace) -> None:
        """A finalized row's trace header: attribute it now if its account is known."""
        with self._lock:
            self._trace_seen_at = self._clock.monotonic()
            self._mode = "trace"
            if trace.request_id not in self._trace_id_set:
                if len(self._trace_ids) == self._trace_ids.maxlen:
                    self._trace_id_set.discard(self._trace_ids[0])
                self._trace_ids.append(trace.request_id)
                self._trace_id_set.add(trace.request_id)
            info = self._map.get(trace.auth_index)
        if info is None:
            repo.record_trace(self._db, row_id, trace.auth_index)
            return
        ref = repo.AccountRef(info.name, trace.auth_index)
        if repo.attribute(self._db, row_id, ref, now_iso=iso_utc(self._clock.time())):
            self._count("trace", 1)

    # -- the loop -------------------------------------------------------------------------

    def register(self, supervisor: Supervisor) -> None:
        """Add the ``correlator`` loop: 5 s after start, then every interval."""
        supervisor.add(LOOP_NAME, self.run_once, interval_s=self._interval_s,
                       initial_delay_s=FIRST_RUN_DELAY_S, run_on_start=True)

    def run_once(self) -> TickReport:
        """One tick: refresh the map when due, resolve traced rows, correlate the rest."""
        now = self._clock.time()
        if self._map_at is None or self._clock.monotonic() - self._map_at >= \
                AUTH_FILES_REFRESH_S:
            self._refresh()
        resolved = self._resolve_traces(now)
        report = TickReport(resolved=resolved)
        if self._fallback_needed():
            report = self._correlate(now, report)
        self._prune(now)
        self._last_run_at = now
        return report

    def _refresh(self) -> bool:
        try:
            files = self._management.auth_files()
        except ManagementUnavailable as exc:
            log.debug("accounts.auth_files_unavailable", reason=exc.reason)
            return False
        mapping: dict[str, AccountInfo] = {}
        for entry in files:
            index, name = entry.get("auth_index"), account_name(entry)
            if isinstance(index, str) and index and name is not None:
                provider = entry.get("provider") or entry.get("type")
                mapping[index] = AccountInfo(index, name,
                                             provider if isinstance(provider, str) else None)
        with self._lock:
            self._map = mapping
            self._map_at = self._clock.monotonic()
            self._map_refreshed_at = self._clock.time()
        log.debug("accounts.map_refreshed", accounts=len(mapping))
        return True

    def _resolve_traces(self, now: float) -> int:
        since = iso_utc(now - TRACE_LOOKBACK_S)
        indexes = repo.unresolved_trace_indexes(self._db, since)
        if not indexes:
            return 0
        unknown = {index for index in indexes if index not in self._map}
        if unknown - self._refreshed_for:
            # Refreshed once per index it misses: an index CPA does not list (a deleted
            # file) must not cost one /auth-files call per tick.
            if len(self._refreshed_for) > MAX_TRACE_IDS:
                self._refreshed_for.clear()
            self._refreshed_for |= unknown
            self._refresh()
        rows = repo.unresolved_traces(self._db, since, MAX_ROWS,
                                      [i for i in indexes if i in self._map])
        resolved = 0
        now_iso = iso_utc(now)
        for row_id, index in rows:
            info = self._map.get(index)
            if info is not None and repo.attribute(
                    self._db, row_id, repo.AccountRef(info.name, index), now_iso=now_iso):
                resolved += 1
        self._count("trace", resolved)
        return resolved

    def _fallback_needed(self) -> bool:
        version = parse_version(self._management.version)
        seen = self._trace_seen_at
        if (version is not None and version >= TRACE_VERSION) or (
                seen is not None and self._clock.monotonic() - seen <= self._lookback_s):
            self._mode = "trace"
            return False
        return True

    def _correlate(self, now: float, report: TickReport) -> TickReport:
        rows = repo.correlation_candidates(self._db, iso_utc(now - self._lookback_s),
                                           MAX_ROWS)
        if not rows:
            return report  # nothing to attribute: do not ask (or pop) anything
        details = self._fetch_details(now)
        with self._lock:
            traced = set(self._trace_id_set)
        details = [d for d in details if d.request_id not in traced]
        used = repo.matched_detail_keys(self._db, [d.key for d in details])
        details = [d for d in details if d.key not in used]
        pairs = match(rows, details)
        applied = 0
        if pairs:
            table = self._prices()  # one table for the whole tick: consistent prices
            applied = sum(self._apply(pair, table, now) for pair in pairs)
        if applied:
            log.info("accounts.correlated", matched=applied, candidates=len(rows),
                     details=len(details), mode=self._mode)
        self._count("correlated", applied)
        return TickReport(report.resolved, applied, len(rows), len(details))

    def _fetch_details(self, now: float) -> list[UsageDetail]:
        if self._mode != "usage-queue":
            try:
                doc = self._management.usage()
            except ManagementUnavailable as exc:
                if not exc.endpoint_only:
                    return []
            else:
                self._mode = "usage"
                return [d for d in details_from_usage(doc, self._provider_of)
                        if d.at >= now - self._lookback_s - WINDOW_S]
        return self._pop_queue(now)

    def _pop_queue(self, now: float) -> list[UsageDetail]:
        records: list[dict[str, Any]] = []
        try:
            for _ in range(QUEUE_BATCHES):
                batch = self._management.usage_queue(QUEUE_BATCH)
                records.extend(batch)
                if len(batch) < QUEUE_BATCH:
                    break
        except ManagementUnavailable as exc:
            if exc.endpoint_only and self._mode == "usage-queue":
                self._mode = None  # neither route now: try /usage again next time
        else:
            if self._mode != "usage-queue" and not self._queue_warned:
                self._queue_warned = True
                log.warning("accounts.usage_queue_in_use", reason=(
                    "CLIProxyAPI has no /usage: its usage queue is read instead; a pop "
                    "removes records, so another consumer of the queue (a dashboard, a "
                    "SUBSCRIBE client) and this proxy each see only part of them"))
            self._mode = "usage-queue"
        pool = self._queue_pool
        for detail in details_from_queue(records, self._provider_of):
            pool[detail.key] = detail
        cutoff = now - self._lookback_s - WINDOW_S
        for key in [k for k, d in pool.items() if d.at < cutoff]:
            del pool[key]
        if len(pool) > MAX_POOL:
            for key in sorted(pool, key=lambda k: pool[k].at)[:len(pool) - MAX_POOL]:
                del pool[key]
        return list(pool.values())

    def _apply(self, pair: Pair, table: PriceTable, now: float) -> bool:
        row, detail = pair.row, pair.detail
        ref = self._ref_for(detail)
        if ref is None:
            return False  # the detail names no account we may store
        actual = detail.model if model_key(detail.model) != model_key(row.model) else None
        usage = None
        if row.usage.total_tokens == 0 and detail.usage.total_tokens > 0:
            usage = detail.usage  # the stream did not report usage; CPA counted it
        cost: CostResult | None = None
        priced_model = actual or row.model
        if actual is not None or usage is not None:
            try:
                cost = compute_cost(table, priced_model, row.provider, usage or row.usage)
            except Exception:  # never lose an attribution over a price
                log.exception("accounts.cost_failed", row_id=row.id, model=priced_model)
            if cost is not None and row.cost_status == "ok" and cost.status != "ok":
                cost = None  # a missing price is not a cost of zero: keep the known one
        change = repo.Correlation(
            row=row, ref=ref, detail_key=detail.key, detail_at=iso_utc(detail.at),
            actual_model=actual, usage=usage, cost=cost,
            cost_model=priced_model if cost is not None else None)
        if not repo.apply_correlation(self._db, change, now_iso=iso_utc(now)):
            return False
        self._queue_pool.pop(detail.key, None)
        return True

    def _ref_for(self, detail: UsageDetail) -> repo.AccountRef | None:
        info = self._map.get(detail.auth_index) if detail.auth_index else None
        if info is not None:
            return repo.AccountRef(info.name, detail.auth_index)
        # An e-mail is an account name; any other source may be a provider API key.
        if "@" in detail.source:
            return repo.AccountRef(detail.source.strip()[:200], detail.auth_index)
        if detail.auth_index:
            return repo.AccountRef(f"auth_index:{detail.auth_index}", detail.auth_index)
        return None

    def _provider_of(self, auth_index: str) -> str | None:
        info = self._map.get(auth_index)
        return None if info is None else info.provider

    def _prune(self, now: float) -> None:
        mono = self._clock.monotonic()
        if self._pruned_at is not None and mono - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = mono
        repo.prune_matches(self._db, iso_utc(now - self._lookback_s - MATCH_RETENTION_S))

    def _count(self, kind: str, n: int) -> None:
        if n:
            with self._lock:
                self._counts[kind] += n

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For ``/ready`` and ``doctor``: the management API's state and how attribution
        works now (``mode``: ``trace``, ``usage``, ``usage-queue`` or None)."""
        out = self._management.status()
        with self._lock:
            out.update({
                "mode": self._mode, "accounts": len(self._map),
                "accounts_refreshed_at": None if self._map_refreshed_at is None
                else iso_utc(self._map_refreshed_at),
                "last_run_at": None if self._last_run_at is None
                else iso_utc(self._last_run_at),
                "attributed": dict(self._counts),
            })
        return out


class TraceRecords:
    """Attribution for a server worker other than the first (PROXY_WORKERS > 1): it keeps
    each finalized row's auth_index, and the first worker's loop, which alone talks to
    CLIProxyAPI's management API (one backoff, never a ban), names the account."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def traced(self, row_id: int, trace: Trace) -> None:
        repo.record_trace(self._db, row_id, trace.auth_index)

    def status(self) -> dict[str, Any]:
        return {"mode": "trace", "note": "resolved by the first worker"}

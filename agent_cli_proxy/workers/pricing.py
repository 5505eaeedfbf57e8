"""The live price table: boot from the cache file, refresh from models.dev, never lose it.

:class:`PricingService` owns the *current* :class:`~agent_cli_proxy.usage.pricing.PriceTable`
and its provenance. Readers take ``service.table`` (one attribute read of an immutable
snapshot, no lock); a refresh builds a whole new table and swaps the reference. The rules:

* ``load()`` at boot is fast and offline: a valid cache file, else the built-in table. A
  cache that cannot be read or understood is ignored with ``pricing.cache_invalid``.
* ``refresh()`` fetches (unless the table is younger than the TTL) and, on success, swaps
  the table, rewrites the cache atomically and calls ``on_update``. On failure the current
  table stays — a bad fetch never replaces good prices — and ``pricing.refresh_failed``
  says why.
* ``PRICING_OVERRIDES_JSON`` / ``PRICING_ALIASES_JSON`` are applied on top of every table.

The cache file's format and atomic replacement live in ``workers.pricing_cache``; the HTTP
fetch in ``upstream.models_dev``; the meaning of the document in ``usage.pricing``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from agent_cli_proxy.clock import SYSTEM_CLOCK, Clock
from agent_cli_proxy.config import Settings
from agent_cli_proxy.config_values import display_url
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.upstream.models_dev import PriceFetchError, fetch_prices
from agent_cli_proxy.usage.pricing import PriceTable
from agent_cli_proxy.workers.pricing_cache import (
    CacheInvalid,
    cache_document,
    read_cache,
    write_cache,
)
from agent_cli_proxy.workers.supervisor import Supervisor, TickFailed

log = get_logger("pricing")

LOOP_NAME = "pricing-refresh"
FOLLOW_LOOP_NAME = "pricing-follow"
FOLLOW_INTERVAL_S = 5.0
# After a failed refresh retry within minutes, not one 6 h interval later: an offline
# first start should not stay on the built-in table for hours after the network returns.
_RETRY_CAP_S = 600.0
Source = Literal["models.dev", "cache", "builtin"]
Fetch = Callable[[], tuple[dict[str, Any], float]]
_Outcome = Literal["updated", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class PricingConfig:
    """What the service needs from the settings, in seconds."""

    url: str
    cache_path: str
    ttl_s: float
    refresh_interval_s: float
    max_age_s: float
    overrides: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: MappingProxyType({}))
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    timeout_s: float = 30.0  # the original's fetch timeout
    connect_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PricingConfig:
        return cls(url=settings.pricing_url, cache_path=settings.pricing_cache_path,
                   ttl_s=settings.pricing_cache_ttl_ms / 1000,
                   refresh_interval_s=settings.pricing_refresh_interval_ms / 1000,
                   max_age_s=settings.ready_pricing_max_age_ms / 1000,
                   overrides=settings.pricing_overrides_json,
                   aliases=settings.pricing_aliases_json,
                   connect_timeout_s=settings.upstream_connect_timeout_ms / 1000)


@dataclass(frozen=True, slots=True)
class _Current:
    """One immutable snapshot, swapped whole so readers never see a half-updated state."""

    table: PriceTable
    source: Source
    fetched_at: float | None


class PricingService:
    """Holds the current price table; see the module docstring for the rules."""

    def __init__(self, config: PricingConfig | Settings, *, clock: Clock = SYSTEM_CLOCK,
                 fetch: Fetch | None = None) -> None:
        self.config = config if isinstance(config, PricingConfig) else (
            PricingConfig.from_settings(config))
        self._clock = clock
        self._fetch = fetch or self._fetch_models_dev
        self.on_update: list[Callable[[PriceTable], object]] = []
        self._refresh_lock = threading.Lock()
        self._completed = 0  # refreshes finished, to join one in flight
        self._last_outcome: _Outcome = "skipped"
        self._last_error: str | None = None
        self._last_attempt_at: float | None = None
        self._last_success_at: float | None = None
        # Usable before load(): never a moment without prices.
        self._current = self._make(PriceTable.builtin(), "builtin", None)

    # -- reading ---------------------------------------------------------------------------

    @property
    def table(self) -> PriceTable:
        return self._current.table

    @property
    def source(self) -> Source:
        return self._current.source

    def age_s(self) -> float | None:
        """Seconds since the current prices were fetched; None for the built-in table."""
        return self._age(self._current)

    def needs_refresh(self) -> bool:
        """True on the built-in table or when the prices are not younger than the TTL."""
        age = self.age_s()
        # A negative age means the clock moved back past the fetch: trust nothing, refetch.
        return age is None or not 0 <= age < self.config.ttl_s

    @property
    def degraded(self) -> bool:
        """Running on the built-in table, or on prices older than READY_PRICING_MAX_AGE_MS."""
        return self._degraded(self._current)

    def status(self) -> dict[str, Any]:
        """Provenance and health of the prices, for ``/ready`` and ``/admin/pricing``."""
        current = self._current  # one snapshot: a concurrent swap cannot mix two tables
        age = self._age(current)
        return {"source": current.source, "fetched_at": current.fetched_at,
                "age_s": None if age is None else round(age, 3),
                "entries": len(current.table), "degraded": self._degraded(current),
                "last_error": self._last_error, "last_attempt_at": self._last_attempt_at,
                "last_success_at": self._last_success_at,
                "cache_path": self.config.cache_path, "url": display_url(self.config.url)}

    def _age(self, current: _Current) -> float | None:
        fetched_at = current.fetched_at
        return None if fetched_at is None else self._clock.time() - fetched_at

    def _degraded(self, current: _Current) -> bool:
        age = self._age(current)
        return current.source == "builtin" or age is None or age > self.config.max_age_s

    # -- boot ------------------------------------------------------------------------------

    def load(self) -> PriceTable:
        """Install the cached prices if the cache file is usable, else the built-in table."""
        path = self.config.cache_path
        try:
            data, fetched_at = read_cache(path)
            base = _table_from_cache(data, fetched_at)
        except FileNotFoundError:
            log.info("pricing.cache_missing", path=path)
        except CacheInvalid as exc:
            log.warning("pricing.cache_invalid", path=path, reason=str(exc))
        else:
            self._current = self._make(base, "cache", fetched_at)
            log.info("pricing.loaded", source="cache", entries=len(self.table),
                     fetched_at=fetched_at, age_s=self.age_s())
            return self.table
        self._current = self._make(PriceTable.builtin(), "builtin", None)
        log.info("pricing.loaded", source="builtin", entries=len(self.table))
        return self.table

    # -- refreshing ------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> bool:
        """Fetch new prices unless fresh (or *force*); True when a new table was swapped in.

        Never raises for a fetch problem. Concurrent callers share one fetch: whoever waited
        for an in-flight refresh gets its result instead of fetching again.
        """
        return self._refresh(force) == "updated"

    def register(self, supervisor: Supervisor) -> None:
        """Add the ``pricing-refresh`` loop: at start when the prices need it, then every
        PRICING_REFRESH_INTERVAL_MS; a failed fetch is retried with backoff."""
        supervisor.add(LOOP_NAME, self._tick, interval_s=self.config.refresh_interval_s,
                       run_on_start=self.needs_refresh(),
                       max_backoff_s=min(_RETRY_CAP_S, self.config.refresh_interval_s))

    def register_follower(self, supervisor: Supervisor) -> None:
        """For a server worker other than the first (PROXY_WORKERS > 1): install the prices
        the first worker fetched whenever it has rewritten the cache file, instead of
        fetching them too."""
        seen: list[float | None] = [_mtime(self.config.cache_path)]

        def follow() -> None:
            stamp = _mtime(self.config.cache_path)
            if stamp is not None and stamp != seen[0]:
                seen[0] = stamp
                self.load()

        supervisor.add(FOLLOW_LOOP_NAME, follow, interval_s=FOLLOW_INTERVAL_S,
                       run_on_start=False)

    def _tick(self) -> None:
        if self._refresh(False) == "failed":
            raise TickFailed(self._last_error or "pricing refresh failed")

    def _refresh(self, force: bool) -> _Outcome:
        if not force and not self.needs_refresh():
            return "skipped"
        seen = self._completed
        with self._refresh_lock:
            if self._completed != seen:  # one finished while this caller waited: share it
                return self._last_outcome
            if not force and not self.needs_refresh():
                return "skipped"
            outcome = self._last_outcome = self._refresh_locked()
            self._completed += 1
            table = self.table
        if outcome == "updated":
            # Outside the lock: a listener (the cost backfill) may work for a while, and a
            # concurrent refresh must not wait for it.
            self._notify(table)
        return outcome

    def _refresh_locked(self) -> _Outcome:
        self._last_attempt_at = self._clock.time()
        started = self._clock.monotonic()
        try:
            data, fetched_at = self._fetch()
            base = PriceTable.from_models_dev(data, fetched_at=fetched_at)
            if len(base) == 0:
                raise PriceFetchError(
                    f"{display_url(self.config.url)} returned no priced models")
            known = len(self._current.table) if self.source != "builtin" else 0
            if len(base) < known // 2:
                # A truncated or broken document must not replace a good table (and the
                # cache file) and leave most models without a price.
                raise PriceFetchError(
                    f"{display_url(self.config.url)} returned only {len(base)} priced "
                    f"models where {known} were known; keeping the current prices")
        except Exception as exc:  # anything at all: the current table must survive it
            reason = str(exc) if isinstance(exc, PriceFetchError) else (
                f"{type(exc).__name__}: {exc}")
            self._last_error = reason
            log.warning("pricing.refresh_failed", reason=reason, kept_source=self.source,
                        age_s=self.age_s())
            return "failed"
        self._current = self._make(base, "models.dev", fetched_at)
        self._last_error = None
        self._last_success_at = fetched_at
        log.info("pricing.refreshed", url=display_url(self.config.url), entries=len(self.table),
                 duration_ms=round((self._clock.monotonic() - started) * 1000, 1))
        self._save(data, fetched_at)
        return "updated"

    def _notify(self, table: PriceTable) -> None:
        for callback in list(self.on_update):
            try:
                callback(table)
            except Exception:  # a listener's bug must not undo the refresh or skip the others
                log.exception("pricing.on_update_failed", callback=repr(callback))

    def _save(self, data: Mapping[str, Any], fetched_at: float) -> None:
        try:
            write_cache(self.config.cache_path,
                        cache_document(data, fetched_at, display_url(self.config.url)))
        except (OSError, ValueError, TypeError) as exc:
            # The new prices are in use already; only the next cold start loses them.
            log.warning("pricing.cache_write_failed", path=self.config.cache_path,
                        reason=str(exc))

    def _fetch_models_dev(self) -> tuple[dict[str, Any], float]:
        return fetch_prices(self.config.url, timeout_s=self.config.timeout_s,
                            connect_timeout_s=self.config.connect_timeout_s,
                            now=self._clock.time)

    def _make(self, base: PriceTable, source: Source, fetched_at: float | None) -> _Current:
        return _Current(base.with_local(self.config.overrides, self.config.aliases),
                        source, fetched_at)


def _table_from_cache(data: dict[str, Any], fetched_at: float) -> PriceTable:
    try:
        table = PriceTable.from_models_dev(data, fetched_at=fetched_at, source="cache")
    except Exception as exc:  # the parser is meant to be tolerant; boot must be regardless
        raise CacheInvalid(f"unusable document: {type(exc).__name__}: {exc}") from None
    if len(table) == 0:
        raise CacheInvalid("no priced models in the cached document")
    return table


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None

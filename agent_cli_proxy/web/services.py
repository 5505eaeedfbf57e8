"""What the HTTP layer is given by the composition root, described by what it needs.

The web package does not import ``workers/`` (DESIGN.md import rules); the pricing
service and the loop supervisor are passed in and seen through these small protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from agent_cli_proxy.clock import Clock
from agent_cli_proxy.config import Settings
from agent_cli_proxy.providers.custom_config import ProviderSet
from agent_cli_proxy.proxy_metrics import ProxyMetrics
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.row_writer import RowWriter
from agent_cli_proxy.upstream.breaker import Breakers
from agent_cli_proxy.upstream.client import UpstreamClient
from agent_cli_proxy.upstream.cpa_headers import Trace
from agent_cli_proxy.usage.pricing import PriceTable
from agent_cli_proxy.web.disconnects import DisconnectWatcher
from agent_cli_proxy.web.provider_registry import ProviderRegistry
from agent_cli_proxy.web.ready_cache import ReadyCache
from agent_cli_proxy.web.workers import PrimaryLink, SharedMetrics, WorkerRole


class PriceSource(Protocol):
    """The live price table and how fresh it is."""

    @property
    def table(self) -> PriceTable: ...

    @property
    def degraded(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


class Background(Protocol):
    """The supervised background loops (pricing refresh, cost backfill, …)."""

    def names(self) -> list[str]: ...

    def start(self) -> None: ...

    def stop(self, timeout_s: float = ...) -> bool: ...


class Attribution(Protocol):
    """Account attribution (``workers.accounts.AccountAttribution``)."""

    def traced(self, row_id: int, trace: Trace) -> None: ...

    def status(self) -> dict[str, Any]: ...


class QuotaSource(Protocol):
    """The quota service (``workers.quotas.QuotaService``), as the admin API sees it."""

    def refresh(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def probes(self) -> list[dict[str, Any]]: ...

    def last_result(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class ProxyServices:
    settings: Settings
    db: Database
    client: UpstreamClient
    watcher: DisconnectWatcher
    clock: Clock
    pricing: PriceSource
    loops: Background
    breakers: Breakers
    ready_cache: ReadyCache = field(default_factory=ReadyCache)
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    providers: ProviderRegistry = field(
        default_factory=lambda: ProviderRegistry(ProviderSet(), ProviderSet))
    # CLIProxyAPI integration, set by the composition root when configured: account
    # attribution (CLIPROXY_MGMT_KEY) and quota snapshots (that key or CLIPROXY_AUTH_DIR).
    accounts: Attribution | None = None
    quotas: QuotaSource | None = None
    # Writes calls' rows off their path, many per transaction (set by the composition
    # root); without one, each call commits its own.
    rows: RowWriter | None = None
    # One of several server processes (PROXY_WORKERS > 1): its place, and for the first
    # worker the others' metrics, for the others the way to the first (web.workers).
    worker: WorkerRole | None = None
    shared_metrics: SharedMetrics | None = None
    primary_link: PrimaryLink | None = None

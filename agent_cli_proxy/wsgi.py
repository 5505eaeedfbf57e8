"""The composition root: ``create_app`` builds every collaborator once and wires them.

Nothing in the package is a module-level singleton; tests build as many apps as they like,
each with its own database file, upstream pool, price service and clock. The background
loops (pricing refresh, cost backfill, account correlation, quota refresh) are
registered here and started by the server (``ProxyApp.start_background``).
"""

from __future__ import annotations

from collections.abc import Callable

from agent_cli_proxy.clock import SYSTEM_CLOCK, Clock
from agent_cli_proxy.config import Settings, load_providers
from agent_cli_proxy.proxy_metrics import ProxyMetrics
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.row_writer import RowWriter
from agent_cli_proxy.upstream.breaker import Breakers
from agent_cli_proxy.upstream.client import UpstreamClient
from agent_cli_proxy.upstream.management import ManagementClient
from agent_cli_proxy.web.app import ProxyApp
from agent_cli_proxy.web.disconnects import DisconnectWatcher
from agent_cli_proxy.web.provider_registry import ProviderRegistry
from agent_cli_proxy.web.services import Attribution, ProxyServices
from agent_cli_proxy.web.workers import PrimaryLink, SharedMetrics, WorkerRole
from agent_cli_proxy.workers.accounts import AccountAttribution, TraceRecords
from agent_cli_proxy.workers.backfill import CostBackfill
from agent_cli_proxy.workers.pricing import PricingService
from agent_cli_proxy.workers.quotas import QuotaService
from agent_cli_proxy.workers.supervisor import Supervisor


def create_app(settings: Settings, db: Database, *, clock: Clock = SYSTEM_CLOCK,
               disconnect_poll_s: float = 0.25,
               reload_settings: Callable[[], Settings] | None = None,
               worker: WorkerRole | None = None) -> ProxyApp:
    """Build the WSGI app over an open, migrated database. The caller owns ``db``.

    *reload_settings* reads the configuration afresh when the providers are reloaded
    (the server re-reads the env file); by default the same settings are used, so only
    the PROVIDERS_CONFIG_PATH file is read again. Raises ConfigError when the custom
    providers are invalid.

    *worker*: this process's place among several server processes (PROXY_WORKERS > 1).
    The first does everything a single server does; the others serve LLM calls and hand
    the rest to the first (web.workers): no background work but following the first
    one's prices, and no management client (the first one's backoff is what keeps
    CLIProxyAPI from banning this IP)."""
    helper = worker is not None and not worker.primary
    fresh = reload_settings or (lambda: settings)
    providers = ProviderRegistry(load_providers(settings), lambda: load_providers(fresh()))
    pricing = PricingService(settings, clock=clock)
    pricing.load()  # cache file or built-in table: fast, no network
    supervisor = Supervisor(clock=clock)
    if helper:
        pricing.register_follower(supervisor)
    else:
        backfill = CostBackfill(db, settings, lambda: pricing.table, clock=clock)
        # New prices price the rows that were waiting for them, without waiting for the
        # loop.
        pricing.on_update.append(backfill.on_prices_updated)
        pricing.register(supervisor)
        backfill.register(supervisor)
    # One pooled connection per worker thread is the most that can be in use at once.
    client = UpstreamClient(maxsize=settings.proxy_threads)
    # One management client for every user of CLIProxyAPI's management API: its backoff
    # after a refused key is what keeps CLIProxyAPI from banning this IP.
    management = (ManagementClient(client, settings.cli_proxy_api_url,
                                   settings.cliproxy_mgmt_key, clock=clock)
                  if settings.cliproxy_mgmt_key and not helper else None)
    accounts: Attribution | None = None
    if helper and settings.cliproxy_mgmt_key:
        accounts = TraceRecords(db)
    if management is not None:
        accounts = AccountAttribution(db, settings, management, lambda: pricing.table,
                                      clock=clock)
        accounts.register(supervisor)
    quotas = None
    if management is not None or (settings.cliproxy_auth_dir.strip() and not helper):
        # Probes through CLIProxyAPI's api-call; the auth dir only when that is unavailable.
        quotas = QuotaService(db, settings, management=management, client=client,
                              clock=clock)
        quotas.register(supervisor)
    metrics = ProxyMetrics()
    # With several workers the first one's /metrics adds the others' published counts.
    shared = SharedMetrics(worker, metrics) if worker is not None else None
    if shared is not None and helper:
        shared.register(supervisor)
    services = ProxyServices(
        settings=settings,
        db=db,
        client=client,
        watcher=DisconnectWatcher(interval=disconnect_poll_s),
        clock=clock,
        pricing=pricing,
        loops=supervisor,
        breakers=Breakers(
            open_after=settings.upstream_circuit_breaker_open_after_failures,
            half_open_after_s=settings.upstream_circuit_breaker_half_open_after_ms / 1000,
            evict_after_s=settings.upstream_circuit_breaker_evict_after_ms / 1000,
            clock=clock),
        providers=providers,
        accounts=accounts,
        quotas=quotas,
        metrics=metrics,
        rows=RowWriter(db),
        worker=worker,
        shared_metrics=shared,
        primary_link=PrimaryLink(worker) if helper and worker is not None else None,
    )
    return ProxyApp(services)

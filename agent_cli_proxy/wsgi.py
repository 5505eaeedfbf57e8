"""The composition root: ``create_app`` builds every collaborator once and wires them.

Nothing in the package is a module-level singleton; tests build as many apps as they like,
each with its own database file, upstream pool and clock.
"""

from __future__ import annotations

from agent_cli_proxy.clock import SYSTEM_CLOCK, Clock
from agent_cli_proxy.config import Settings
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.upstream.client import UpstreamClient
from agent_cli_proxy.web.app import ProxyApp
from agent_cli_proxy.web.disconnects import DisconnectWatcher
from agent_cli_proxy.web.proxy import ProxyServices


def create_app(settings: Settings, db: Database, *, clock: Clock = SYSTEM_CLOCK,
               disconnect_poll_s: float = 0.25) -> ProxyApp:
    """Build the WSGI app over an open, migrated database. The caller owns ``db``."""
    # One pooled connection per worker thread is the most that can be in use at once.
    client = UpstreamClient(maxsize=settings.proxy_threads)
    services = ProxyServices(
        settings=settings,
        db=db,
        client=client,
        watcher=DisconnectWatcher(interval=disconnect_poll_s),
        clock=clock,
    )
    return ProxyApp(services)

"""``GET /metrics``: Prometheus text exposition (format 0.0.4).

The in-process families (requests, tokens, cost, durations, overhead, in-flight) come from
``services.metrics``; the scrape-time ones are read here on each scrape: today's (UTC)
``daily_usage`` rows as the original's ``*_today`` gauges, the price table's age and
health, and the background loops' state when the loop service can report it (the
``Background`` protocol only promises ``names()``; the supervisor also has ``status()``).

A scrape must keep working when one source is broken: a failed read is logged and its
families are left out, so Prometheus still gets ``up`` and the request counters.
Access control (loopback only, ``ADMIN_API_KEY``) is the router's, as for ``/admin/*``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

from werkzeug.wrappers import Request, Response

from agent_cli_proxy.clock import Clock
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.metrics import CONTENT_TYPE
from agent_cli_proxy.proxy_metrics import ProxyMetrics
from agent_cli_proxy.storage import reports
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.web.services import Background, PriceSource

_log = get_logger("web")


class MetricsServices(Protocol):
    """What the endpoint needs from ``ProxyServices`` (which has all of it)."""

    @property
    def db(self) -> Database: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def pricing(self) -> PriceSource: ...

    @property
    def loops(self) -> Background: ...

    @property
    def metrics(self) -> ProxyMetrics: ...


def _today_rows(services: MetricsServices) -> list[dict[str, Any]] | None:
    day = dt.datetime.fromtimestamp(services.clock.time(), dt.UTC).date().isoformat()
    try:
        return reports.usage_for_day(services.db, day)
    except Exception:
        _log.exception("metrics.source_failed", source="daily_usage", day=day)
        return None


def _pricing(services: MetricsServices) -> tuple[dict[str, Any] | None, bool | None]:
    try:
        return services.pricing.status(), bool(services.pricing.degraded)
    except Exception:
        _log.exception("metrics.source_failed", source="pricing")
        return None, None


def _loops(services: MetricsServices) -> Mapping[str, Mapping[str, Any]] | None:
    try:
        status = getattr(services.loops, "status", None)
        if callable(status):
            result = status()
            if isinstance(result, Mapping):
                return result
        # Only the protocol's names() (the loops whose thread runs): those are up.
        return {name: {"running": True} for name in services.loops.names()}
    except Exception:
        _log.exception("metrics.source_failed", source="loops")
        return None


def handle(services: MetricsServices, request: Request) -> Response:
    shared = getattr(services, "shared_metrics", None)
    # With several workers: every worker's calls, not only this one's.
    metrics = shared.combined() if shared is not None else services.metrics
    pricing, degraded = _pricing(services)
    breakers = getattr(services, "breakers", None)
    families = metrics.scrape_families(today=_today_rows(services), pricing=pricing,
                                       pricing_degraded=degraded, loops=_loops(services),
                                       breakers=breakers.snapshots() if breakers else None)
    response = Response(metrics.registry.render(families), status=200,
                        content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response

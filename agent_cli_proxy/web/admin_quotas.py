"""Admin views of subscription quotas: the latest snapshot per account, a refresh on
demand, the probe definitions, and the hourly history.

JSON field names are the original's (``snapshots`` of QuotaSnapshot rows; a refresh
answers its QuotaRefreshResult ``{timestamp, accounts, inserted}``), with additions only.
The quota service itself (``workers.quotas``) is handed over as ``services.quotas`` and
seen here through :class:`QuotaSource`; it is None when neither CLIPROXY_MGMT_KEY nor
CLIPROXY_AUTH_DIR is set, and then the stored snapshots (perhaps the original's) are
still served.
"""

from __future__ import annotations

import re
from typing import Any

from werkzeug.wrappers import Request, Response

from agent_cli_proxy.providers.quotas import VendorUrls, probe_definitions
from agent_cli_proxy.storage.quotas import latest_snapshots, snapshot_history
from agent_cli_proxy.storage.requests import iso_utc
from agent_cli_proxy.web import params
from agent_cli_proxy.web.errors import json_error, json_response
from agent_cli_proxy.web.services import ProxyServices, QuotaSource

MAX_HISTORY_HOURS = params.MAX_TREND_HOURS
_HOURS = re.compile(r"[0-9]{1,6}")
_NOT_CONFIGURED = ("quota probes are not configured: set CLIPROXY_MGMT_KEY (probes go "
                   "through CLIProxyAPI) or CLIPROXY_AUTH_DIR")


def _source(services: ProxyServices) -> QuotaSource | None:
    return services.quotas


def _status(source: QuotaSource | None) -> dict[str, Any]:
    return source.status() if source is not None else {"enabled": False,
                                                       "reason": _NOT_CONFIGURED}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def quotas(services: ProxyServices, request: Request) -> Response:
    """``GET /admin/quotas``: each account's newest snapshots; ``?refresh=true`` probes
    first and answers the refresh result, as the original does."""
    if _truthy(request.args.get("refresh")):
        return refresh(services, request)
    source = _source(services)
    rows = latest_snapshots(services.db, provider=params.text(request.args, "provider"),
                            account=params.text(request.args, "account"))
    body: dict[str, Any] = {"snapshots": [{**r, "window": r["quota_type"]} for r in rows]}
    if source is None:
        return json_response(body)  # the original's answer exactly (probes tell why)
    body["status"] = source.status()
    last = source.last_result()
    if last is not None:
        # How each account's last probe went (an error leaves no snapshot behind).
        body["accounts"] = [{k: v for k, v in a.items() if k != "windows"}
                            for a in last["accounts"]]
    return json_response(body)


def refresh(services: ProxyServices, request: Request) -> Response:
    """``POST /admin/quotas/refresh``: probe every account now (QuotaRefreshResult)."""
    source = _source(services)
    if source is None:
        return json_error(503, "quotas_not_configured", _NOT_CONFIGURED)
    return json_response(source.refresh())


def probes(services: ProxyServices, request: Request) -> Response:
    """``GET /admin/quotas/probes``: what is asked of each provider, ``$TOKEN$`` and all."""
    source = _source(services)
    found = (source.probes() if source is not None
             else [{**d, "via": None} for d in probe_definitions(VendorUrls())])
    return json_response({"probes": found, "status": _status(source)})


def history(services: ProxyServices, request: Request) -> Response:
    """``GET /admin/quotas/history?hours=24&provider=&account=``: hourly buckets."""
    raw = request.args.get("hours", "").strip()
    if raw and not (_HOURS.fullmatch(raw) and 1 <= int(raw) <= MAX_HISTORY_HOURS):
        return json_error(400, "invalid_parameter", "Invalid hours parameter",
                          parameter="hours", max=MAX_HISTORY_HOURS)
    hours = int(raw) if raw else 24
    # Whole hours: the first bucket starts on the hour, hours - 1 hours before this one.
    since = iso_utc((int(services.clock.time()) // 3600 - (hours - 1)) * 3600)
    buckets = snapshot_history(services.db, since=since,
                               provider=params.text(request.args, "provider"),
                               account=params.text(request.args, "account"))
    return json_response({"hours": hours, "since": since, "buckets": buckets})

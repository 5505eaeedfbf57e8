"""``GET /ready``: can this proxy do its job right now?

Each check answers ``pass``, ``warn`` or ``fail``; the overall status is the worst, and
only ``fail`` turns the HTTP status into 503 (take the instance out of rotation). The
database and the upstream are critical; stale or built-in prices are a ``warn``: calls
still flow and are still priced, just from older numbers, which is no reason to stop
serving traffic. So is a CLIProxyAPI management API that is down, disabled or refuses
CLIPROXY_MGMT_KEY (check ``accounts``, present when attribution is configured): calls
are served and recorded, only not attributed to accounts. Answers are cached for a few
seconds (``ready_cache``).
"""

from __future__ import annotations

import time
from typing import Any

from werkzeug.wrappers import Request, Response

from agent_cli_proxy.upstream.health import probe_upstream
from agent_cli_proxy.web.errors import json_response
from agent_cli_proxy.web.services import ProxyServices

_RANK = {"pass": 0, "warn": 1, "fail": 2}


def _database(services: ProxyServices) -> dict[str, Any]:
    started = time.monotonic()
    ok = services.db.ping()
    elapsed = round((time.monotonic() - started) * 1000, 1)
    if ok:
        return {"status": "pass", "responseTime": elapsed}
    return {"status": "fail", "responseTime": elapsed, "output": "database did not answer"}


def _pricing(services: ProxyServices) -> dict[str, Any]:
    status = services.pricing.status()
    check: dict[str, Any] = {"status": "pass", "source": status.get("source"),
                             "entries": status.get("entries")}
    age_s = status.get("age_s")
    if age_s is not None:
        check["ageMs"] = round(age_s * 1000)
    if services.pricing.degraded:
        check["status"] = "warn"
        if status.get("source") == "builtin":
            check["output"] = "using the built-in price table: no models.dev data fetched yet"
        else:
            limit = services.settings.ready_pricing_max_age_ms
            check["output"] = f"prices are older than {limit} ms"
        if status.get("last_error"):
            check["lastError"] = status["last_error"]
    return check


UPSTREAM_TIMEOUT_S = 1.0


def _upstream(services: ProxyServices) -> dict[str, Any]:
    probe = probe_upstream(services.client, services.settings.cli_proxy_api_url,
                           UPSTREAM_TIMEOUT_S)
    check: dict[str, Any] = {"status": "pass" if probe.ok else "fail",
                             "responseTime": probe.elapsed_ms, "output": probe.output}
    if probe.status is not None:
        check["httpStatus"] = probe.status
    return check


def _supervisor(services: ProxyServices) -> dict[str, Any]:
    loops = sorted(services.loops.names())
    if not loops:
        return {"status": "warn", "loops": [], "output": "no background loops are running"}
    return {"status": "pass", "loops": loops}


# Why account attribution is not working, by the management client's state.
_ACCOUNT_PROBLEMS = {
    "disabled": "the CLIProxyAPI management API is disabled: calls are not attributed to "
                "accounts",
    "unauthorized": "the CLIProxyAPI management API rejects CLIPROXY_MGMT_KEY: calls are not "
                    "attributed to accounts",
    "banned": "CLIProxyAPI has banned this proxy's IP after failed management key checks: "
              "calls are not attributed to accounts",
    "unreachable": "the CLIProxyAPI management API is unreachable: calls are not attributed "
                   "to accounts",
    "not_configured": "CLIPROXY_MGMT_KEY is not set",
}


def _accounts(services: ProxyServices) -> dict[str, Any] | None:
    """From the attribution service's last known state: no request is made here."""
    if services.accounts is None:
        return None
    try:
        status: dict[str, Any] = services.accounts.status()
    except Exception as exc:  # a defect there must not take /ready down
        return {"status": "warn", "output": f"account attribution status failed: {exc!r}"}
    state = status.get("state")
    check: dict[str, Any] = {"status": "pass", "state": state, "mode": status.get("mode"),
                             "version": status.get("version"),
                             "accounts": status.get("accounts")}
    problem = _ACCOUNT_PROBLEMS.get(str(state))
    if problem is not None:
        check["status"] = "warn"
        check["output"] = problem
        if status.get("last_error"):
            check["lastError"] = status["last_error"]
        if status.get("retry_after_s") is not None:
            check["retryAfterS"] = status["retry_after_s"]
    return check


def evaluate(services: ProxyServices) -> dict[str, Any]:
    started = time.monotonic()
    checks = {"database": _database(services), "pricing": _pricing(services),
              "upstream": _upstream(services), "supervisor": _supervisor(services)}
    accounts = _accounts(services)
    if accounts is not None:
        checks["accounts"] = accounts
    overall = max((c["status"] for c in checks.values()), key=_RANK.__getitem__)
    services.metrics.ready_checked(status=overall, duration_s=time.monotonic() - started)
    return {"status": overall, "checks": checks}


def handle(services: ProxyServices, request: Request) -> Response:
    body = services.ready_cache.get(services.clock.monotonic(), lambda: evaluate(services))
    return json_response(body, status=503 if body["status"] == "fail" else 200,
                         headers={"Cache-Control": "no-store"})

"""The admin API: read-only views of recorded data and of the proxy's own state.

Only callers on this machine may use it, decided by the socket address of the connection
(never by a header a client could set, and never by the configured listen address).
"""

from __future__ import annotations

import hashlib
import hmac

from werkzeug.wrappers import Request, Response

from agent_cli_proxy.config import Settings
from agent_cli_proxy.storage.costs import cost_audit_for
from agent_cli_proxy.storage.requests import get_request
from agent_cli_proxy.usage.pricing import PriceEntry, Rates
from agent_cli_proxy.web.addresses import client_address, is_loopback, outside_forwarded
from agent_cli_proxy.web.errors import json_error, json_response
from agent_cli_proxy.web.services import ProxyServices


def is_local(request: Request, trust_proxy_headers: bool = False) -> bool:
    """A connection from this machine that does not carry someone else's request.

    A reverse proxy on this host makes every outside client look local. Trusted
    (TRUST_PROXY_HEADERS), its X-Forwarded-For names the real client; in both modes any
    other forwarding header naming an outside address is refused (a local caller can only
    lock itself out that way, never let anyone in).
    """
    if not is_loopback(request.remote_addr or ""):
        return False
    if not is_loopback(client_address(request, trust_proxy_headers)):
        return False
    return not outside_forwarded(request, trust_proxy_headers)


def denial(request: Request, settings: Settings) -> Response | None:
    """Why this request may not use the admin API (or ``/metrics``), or None."""
    if not is_local(request, settings.trust_proxy_headers):
        return forbidden()
    key = settings.admin_api_key
    if key:
        token = request.headers.get("x-admin-token", "").strip()
        if not token:
            auth = request.headers.get("Authorization", "")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        # Digests of equal length, compared in constant time: neither how much of a guess
        # was right nor the key's length leaks, and any UTF-8 key works.
        if not hmac.compare_digest(_digest(token), _digest(key)):
            return json_error(401, "UNAUTHORIZED",
                              "ADMIN_API_KEY is set: send it as x-admin-token or "
                              "Authorization: Bearer")
    return None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def forbidden() -> Response:
    return json_error(403, "LOCAL_ONLY", "the admin API answers only on this machine")


def _rates(rates: Rates) -> dict[str, float | None]:
    return {"input": rates.input, "output": rates.output, "cache_read": rates.cache_read,
            "cache_write": rates.cache_write, "cache_write_1h": rates.cache_write_1h,
            "reasoning": rates.reasoning}


def _entry(entry: PriceEntry) -> dict[str, object]:
    return {"key": entry.key, "provider": entry.provider, "model": entry.model,
            "source": entry.source, "rates": _rates(entry.rates),
            "tiers": [{"min_input_tokens": t.min_input_tokens, "rates": _rates(t.rates)}
                      for t in entry.tiers]}


def pricing(services: ProxyServices, request: Request) -> Response:
    """``GET /admin/pricing?model=&provider=``: which price a model gets, and why."""
    model = request.args.get("model", "").strip()
    provider = request.args.get("provider", "").strip() or None
    body: dict[str, object] = {"pricing": services.pricing.status()}
    if model:
        match = services.pricing.table.match(model, provider)
        body.update({
            "model": model,
            "provider": provider,
            "match": None if match is None else {
                "rule": match.rule, "lookup": match.lookup, **_entry(match.entry)},
        })
    return json_response(body)


def cost_audit(services: ProxyServices, request: Request, row_id: int) -> Response:
    """``GET /admin/logs/<id>/cost-audit``: every cost computed for one call, oldest first."""
    if get_request(services.db, row_id) is None:
        return json_error(404, "not_found", f"no request log with id {row_id}")
    return json_response({"id": row_id, "audits": cost_audit_for(services.db, row_id)})


def breakers(services: ProxyServices, request: Request) -> Response:
    """``GET /admin/breakers``: every upstream's circuit breaker."""
    return json_response({"breakers": services.breakers.snapshots()})


def breaker(services: ProxyServices, request: Request, breaker_id: str) -> Response:
    found = services.breakers.find(breaker_id)
    if found is None:
        return json_error(404, "not_found", f"no breaker {breaker_id!r}")
    return json_response(found.snapshot())


def breaker_reset(services: ProxyServices, request: Request, breaker_id: str) -> Response:
    """``POST /admin/breakers/<id>/reset``: close it now (the upstream was fixed)."""
    found = services.breakers.find(breaker_id)
    if found is None:
        return json_error(404, "not_found", f"no breaker {breaker_id!r}")
    found.reset()
    return json_response({"ok": True, "providerId": breaker_id})

"""The admin API: read-only views of recorded data and of the proxy's own state.

Only callers on this machine may use it, decided by the socket address of the connection
(never by a header a client could set, and never by the configured listen address).
"""

from __future__ import annotations

import ipaddress

from werkzeug.wrappers import Request, Response

from agent_cli_proxy.storage.costs import cost_audit_for
from agent_cli_proxy.storage.requests import get_request
from agent_cli_proxy.usage.pricing import PriceEntry, Rates
from agent_cli_proxy.web.errors import json_error, json_response
from agent_cli_proxy.web.services import ProxyServices

_MAX_ROW_ID = 2**63 - 1  # SQLite's largest integer


def _loopback(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _forwarded_for(request: Request) -> list[str]:
    """Client addresses a proxy in front of us reported, from either header."""
    found = [part for value in request.headers.getlist("X-Forwarded-For")
             for part in value.split(",") if part.strip()]
    for value in request.headers.getlist("Forwarded"):
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, node = pair.partition("=")
                if name.strip().lower() == "for":
                    found.append(_node_address(node))
    return found


def _node_address(node: str) -> str:
    """The address in an RFC 7239 node: ``"[2001:db8::1]:4711"``, ``1.2.3.4:80``, …"""
    node = node.strip().strip('"')
    if node.startswith("["):
        return node[1:node.find("]")] if "]" in node else node
    return node.split(":")[0] if node.count(":") == 1 else node


def is_local(request: Request) -> bool:
    """A connection from this machine that does not carry someone else's request.

    A reverse proxy on this host makes every outside client look local, so any
    forwarded-for address that is not loopback is refused, whatever TRUST_PROXY_HEADERS
    says: a local caller can only lock itself out that way, never let anyone in.
    """
    if not _loopback(request.remote_addr or ""):
        return False
    return all(_loopback(addr) for addr in _forwarded_for(request))


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
    if row_id > _MAX_ROW_ID or get_request(services.db, row_id) is None:
        return json_error(404, "not_found", f"no request log with id {row_id}")
    return json_response({"id": row_id, "audits": cost_audit_for(services.db, row_id)})

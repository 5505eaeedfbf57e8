"""Refusing what a web page in the user's browser could make it send to a local proxy.

A proxy on loopback with no client keys spends tokens for anyone who can reach it, and
the admin API answers local callers. A malicious page can reach both: by DNS rebinding
(its own host name resolving to 127.0.0.1: the request then names that host in ``Host``)
or by a blind cross-site POST (the browser adds ``Origin`` / ``Sec-Fetch-Site``). Coding
tools and SDKs send neither a foreign ``Host`` nor those browser headers.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from werkzeug.wrappers import Request

from agent_cli_proxy.web.addresses import host_of, is_loopback


def _local_name(host: str, configured: str) -> bool:
    host = host_of(host).lower()
    return host in ("localhost", configured.strip().lower()) or is_loopback(host)


def foreign_browser_request(request: Request, configured_host: str) -> str | None:
    """Why this request looks like a web page's doing, or None."""
    host = request.headers.get("Host")
    if host and not _local_name(host, configured_host):
        return f"Host {host!r} is not this machine (DNS rebinding?)"
    origin = request.headers.get("Origin")
    if origin and origin != "null" and not _local_name(urlsplit(origin).netloc,
                                                       configured_host):
        return f"cross-site request from {origin!r}"
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return "cross-site request"
    return None

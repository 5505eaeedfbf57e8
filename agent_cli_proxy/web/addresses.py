"""Who is on the other end of a request: the socket peer, or behind a trusted reverse
proxy the client it forwarded. Used for the recorded ``source_ip`` and the admin check."""

from __future__ import annotations

import ipaddress

from werkzeug.wrappers import Request


def is_loopback(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _x_forwarded_for(request: Request) -> list[str]:
    return [part.strip() for value in request.headers.getlist("X-Forwarded-For")
            for part in value.split(",") if part.strip()]


def forwarded_for(request: Request) -> list[str]:
    """Client addresses a proxy in front of us reported, from any of the usual headers."""
    found = _x_forwarded_for(request) + _other_forwarded(request)
    return found


def _other_forwarded(request: Request) -> list[str]:
    """``Forwarded: for=`` and ``X-Real-IP``: never believed, but any of them naming an
    outside address means someone else's request came through a local proxy."""
    found = [v.strip() for v in request.headers.getlist("X-Real-IP") if v.strip()]
    for value in request.headers.getlist("Forwarded"):
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, node = pair.partition("=")
                if name.strip().lower() == "for":
                    found.append(host_of(node))
    return found


def host_of(node: str) -> str:
    """The host in a ``host:port`` form: an RFC 7239 node (``"[2001:db8::1]:4711"``), a
    Host header (``localhost:3100``), ``1.2.3.4:80`` …"""
    node = node.strip().strip('"')
    if node.startswith("["):
        return node[1:node.find("]")] if "]" in node else node
    return node.split(":")[0] if node.count(":") == 1 else node


def client_address(request: Request, trust_proxy_headers: bool) -> str:
    """Who is calling: the socket's peer, or behind a trusted reverse proxy on this host
    the address it appended to X-Forwarded-For (the last entry: earlier ones came from the
    client and can be anything). The header is believed only from a loopback peer: a
    client connecting directly could otherwise name any address it likes."""
    peer = request.remote_addr or ""
    if trust_proxy_headers and is_loopback(peer):
        forwarded = _x_forwarded_for(request)
        if forwarded:
            return forwarded[-1]
    return peer


def outside_forwarded(request: Request, trust_proxy_headers: bool) -> bool:
    """Does any forwarding header name a non-loopback client?"""
    # Trusted, X-Forwarded-For counts only by the trusted hop's entry (the client address).
    claimed = _other_forwarded(request) if trust_proxy_headers else forwarded_for(request)
    return not all(is_loopback(addr) for addr in claimed)

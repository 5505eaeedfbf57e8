"""What the proxy changes on the way through, and nothing more.

Requests and responses are forwarded as received except for the rules here:

* hop-by-hop headers (RFC 9110 §7.6.1, plus any the ``Connection`` header names) belong to
  one connection and are dropped in both directions; ``Host`` and ``Content-Length`` are
  recomputed for the upstream connection, and ``Expect`` is not forwarded;
* the client's credentials are replaced by the upstream's key (CLIProxyAPI authenticates
  the proxy, not the coding tool), in whichever header or ``key=``/``auth_token=`` query
  parameter the client used, so each API family still finds its key where it looks for it;
* ``Accept-Encoding`` is narrowed to codings the proxy can read (gzip, deflate): the client
  still receives the upstream's bytes unchanged, and the proxy can still read the usage.

Everything else (betas, ``anthropic-version``, request ids, rate-limit headers,
``Retry-After``) passes untouched, in both directions.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_plus

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Host and Content-Length describe the proxy's own upstream connection; Expect was
# already answered by waitress, which read the whole body before the proxy ran.
_RECOMPUTED = frozenset({"host", "content-length", "expect"})
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key"})
READABLE_CODINGS = frozenset({"gzip", "deflate", "identity"})

Headers = list[tuple[str, str]]


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(t.strip().lower() for t in value.split(",") if t.strip())
    return named


def _narrow_accept_encoding(value: str) -> str | None:
    tokens = value.split(",")
    kept = [t.strip() for t in tokens if t.split(";", 1)[0].strip().lower() in READABLE_CODINGS]
    if len(kept) == len(tokens):
        return value  # nothing to narrow: leave the client's bytes alone
    return ", ".join(kept) if kept else None


def passthrough_headers(client_headers: Iterable[tuple[str, str]]) -> Headers:
    """*client_headers* without what belongs to the client's connection, and with
    ``Accept-Encoding`` narrowed; credentials untouched."""
    client_headers = list(client_headers)
    dropped = HOP_BY_HOP | _RECOMPUTED | _connection_tokens(client_headers)
    out: Headers = []
    for name, value in client_headers:
        lower = name.lower()
        if lower in dropped:
            continue
        if lower == "accept-encoding":
            narrowed = _narrow_accept_encoding(value)
            if narrowed is not None:
                out.append((name, narrowed))
            continue
        out.append((name, value))
    return out


def upstream_request_headers(client_headers: Iterable[tuple[str, str]], api_key: str) -> Headers:
    """Headers to send upstream for a request the client sent with *client_headers*."""
    out: Headers = []
    credential_seen = False
    for name, value in passthrough_headers(client_headers):
        lower = name.lower()
        if lower in CREDENTIAL_HEADERS:
            credential_seen = True
            out.append((name, f"Bearer {api_key}" if lower == "authorization" else api_key))
            continue
        out.append((name, value))
    if not credential_seen:
        out.append(("Authorization", f"Bearer {api_key}"))
    return out


# CLIProxyAPI also takes a client key from these query parameters (``key`` is Gemini's).
CREDENTIAL_PARAMS = frozenset({"key", "auth_token"})


def replace_query_key(query: str, api_key: str) -> str:
    """Swap the value of credential query parameters, keeping the rest byte-identical,
    since re-encoding a query string can change what the upstream sees."""
    if "=" not in query:
        return query
    parts = query.split("&")
    for i, part in enumerate(parts):
        # Decoded, as the upstream decodes it: "%6Bey=" is "key=" too.
        name = unquote_plus(part.split("=", 1)[0])
        if name in CREDENTIAL_PARAMS:
            parts[i] = f"{name}={api_key}"
    return "&".join(parts)


def client_response_headers(upstream_headers: Iterable[tuple[str, str]], *,
                            body_changed: bool) -> Headers:
    """Headers to give the client for an upstream response.

    ``Content-Length`` is kept (so the client and waitress agree on framing without
    chunking) unless the proxy changes the body.
    """
    upstream_headers = list(upstream_headers)
    dropped = HOP_BY_HOP | _connection_tokens(upstream_headers)
    lengths = [v for n, v in upstream_headers if n.lower() == "content-length"]
    chunked = any(n.lower() == "transfer-encoding" for n, _ in upstream_headers)
    # A length next to chunking is to be ignored (RFC 9112 §6.3), and one that is not a
    # single plain number would make waitress fail after the row was opened: let waitress
    # frame the body itself in both cases.
    if body_changed or chunked or len(lengths) > 1 or not all(v.isdigit() for v in lengths):
        dropped = dropped | {"content-length"}
    return [(n, v) for n, v in upstream_headers if n.lower() not in dropped]

"""What changes on the way to a custom provider (the default upstream's rules are in
:mod:`agent_cli_proxy.providers.forwarding`).

* The URL is the provider's ``upstreamBaseUrl`` + (``upstreamPath`` or the request path,
  as the client sent it) + the query.
* Hop-by-hop headers go as for the default upstream; so do ``x-provider`` and
  ``x-proxy-key`` (meant for the proxy), and ``Forwarded``, ``X-Forwarded-*``,
  ``X-Real-IP`` and ``CF-*``: a third-party upstream has no business with the client's
  address or the path it took to the proxy.
* Credentials, by ``auth``: ``none`` removes every client credential (``Authorization``,
  ``x-api-key``, ``x-goog-api-key``, ``key=``/``auth_token=`` query parameters);
  ``preserve`` keeps them, except a managed proxy key, which never leaves the proxy (and a
  provider whose base URL is CLI_PROXY_API_URL gets CLI_PROXY_API_KEY, as the default
  upstream does); ``bearer`` and ``x-api-key`` replace them with the provider's token.
  Then the provider's ``headers`` are set (replacing the client's of the same name, so
  they may carry a static credential), then the token header.
* ``anthropic`` providers get ``anthropic-version: 2023-06-01`` when the client sent none.
* The body is forwarded as received, unless ``stripProviderField`` removes its
  ``provider`` member (the only case it is re-serialised).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Final
from urllib.parse import unquote_plus

from agent_cli_proxy.providers.custom_config import CustomProvider
from agent_cli_proxy.providers.custom_routing import BODY_FIELD, SELECT_HEADER
from agent_cli_proxy.providers.forwarding import (
    CREDENTIAL_HEADERS,
    CREDENTIAL_PARAMS,
    Headers,
    passthrough_headers,
    replace_query_key,
    upstream_request_headers,
)
from agent_cli_proxy.providers.routes import parse_json_object

ANTHROPIC_VERSION: Final = "2023-06-01"
PROXY_ONLY_HEADERS: Final = frozenset({SELECT_HEADER, "x-proxy-key"})
_CLIENT_TRAIL: Final = frozenset({"forwarded", "x-real-ip"})
_CLIENT_TRAIL_PREFIXES: Final = ("x-forwarded-", "cf-")


def upstream_url(provider: CustomProvider, raw_path: str, query: str) -> str:
    path = provider.upstream_path or raw_path
    return provider.upstream_base_url + path + (f"?{query}" if query else "")


def _bearer_token(value: str) -> str:
    return value[7:].strip() if value[:7].lower() == "bearer " else value.strip()


def _without(headers: Headers, names: Collection[str]) -> Headers:
    return [(n, v) for n, v in headers if n.lower() not in names]


def _uses_default_upstream(provider: CustomProvider, default_url: str) -> bool:
    return provider.upstream_base_url == default_url


def request_headers(client_headers: Iterable[tuple[str, str]], provider: CustomProvider, *,
                    default_url: str, default_key: str, proxy_keys: Collection[str]
                    ) -> Headers:
    """Headers for *provider*'s upstream. *proxy_keys*: the managed proxy keys the client
    presented (never forwarded); *default_url*/*default_key*: CLI_PROXY_API_URL/_KEY."""
    headers = [(n, v) for n, v in passthrough_headers(client_headers)
               if n.lower() not in PROXY_ONLY_HEADERS and n.lower() not in _CLIENT_TRAIL
               and not n.lower().startswith(_CLIENT_TRAIL_PREFIXES)]
    auth = provider.auth
    if auth.type == "preserve" and _uses_default_upstream(provider, default_url):
        headers = upstream_request_headers(headers, default_key)
    elif auth.type == "preserve":
        headers = [(n, v) for n, v in headers
                   if n.lower() not in CREDENTIAL_HEADERS or _bearer_token(v) not in proxy_keys]
    else:
        headers = _without(headers, CREDENTIAL_HEADERS)
    if provider.headers:
        headers = _without(headers, {n.lower() for n, _ in provider.headers})
        headers.extend(provider.headers)
    if auth.type in ("bearer", "x-api-key"):
        default_header = "Authorization" if auth.type == "bearer" else "x-api-key"
        header = auth.header or default_header
        headers = _without(headers, {header.lower()})
        if auth.token is not None:
            value = f"Bearer {auth.token}" if auth.type == "bearer" else auth.token
            headers.append((header, value))
    if provider.type == "anthropic" and not any(
            n.lower() == "anthropic-version" for n, _ in headers):
        headers.append(("anthropic-version", ANTHROPIC_VERSION))
    return headers


def request_query(query: str, provider: CustomProvider, *, default_url: str,
                  default_key: str, proxy_keys: Collection[str]) -> str:
    """The query for *provider*'s upstream: credential parameters follow the same rules as
    credential headers; every other byte stays as the client sent it."""
    if "=" not in query:
        return query
    if provider.auth.type == "preserve" and _uses_default_upstream(provider, default_url):
        return replace_query_key(query, default_key)
    kept: list[str] = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if unquote_plus(name) in CREDENTIAL_PARAMS and (
                provider.auth.type != "preserve" or unquote_plus(value) in proxy_keys):
            continue
        kept.append(part)
    return "&".join(kept)


def strip_provider_field(body: bytes) -> bytes:
    """*body* without its top-level ``provider`` member; unchanged (the same bytes) when it
    is not a JSON object or has no such member."""
    obj = parse_json_object(body)
    if obj is None or BODY_FIELD not in obj:
        return body
    del obj[BODY_FIELD]
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in the body) has no UTF-8 form: keep it escaped.
        return json.dumps(obj, separators=(",", ":")).encode("ascii")

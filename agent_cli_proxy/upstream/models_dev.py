"""Fetching the models.dev price document (``PRICING_URL``) over HTTP.

This module owns the one network call of the price source: a bounded GET of a JSON
document, decoded here (gzip included), parsed, and checked to be a JSON object. What the
document *means* is not its concern (``usage.pricing`` reads it) and neither is caching or
scheduling (``workers.pricing``). Every way the fetch can fail ends in one exception type,
:class:`PriceFetchError`, whose message says what went wrong in words fit for a log line
or ``/ready``.

It does not go through the upstream client: prices come from a different host with
different rules (no auth header to swap, no breaker, a body read whole rather than relayed).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError

from agent_cli_proxy import __version__
from agent_cli_proxy.config_values import display_url

# models.dev's api.json is ~2 MB today; the cap leaves room for growth while keeping a
# misconfigured PRICING_URL (a disk image, an endless stream) from eating the memory.
MAX_BYTES = 64 * 1024 * 1024
_CHUNK = 256 * 1024
_MAX_REDIRECTS = 5


class PriceFetchError(Exception):
    """The price document could not be fetched or was not a JSON object."""




def fetch_prices(url: str, *, timeout_s: float, connect_timeout_s: float | None = None,
                 pool: urllib3.PoolManager | None = None, max_bytes: int = MAX_BYTES,
                 now: Callable[[], float] = time.time) -> tuple[dict[str, Any], float]:
    """GET *url* and return ``(document, fetched_at)``; *fetched_at* is ``now()`` (epoch
    seconds) taken when the whole body has arrived.

    *timeout_s* bounds the whole fetch (connect, silence between bytes, and the total read
    time); *connect_timeout_s*, when given and shorter, bounds the connect alone. Raises
    :class:`PriceFetchError` for every failure.
    """
    shown = display_url(url)
    if not url.lower().startswith(("http://", "https://")):
        raise PriceFetchError(f"{shown} is not an http:// or https:// URL")
    own_pool = pool is None
    manager = urllib3.PoolManager() if pool is None else pool
    deadline = time.monotonic() + timeout_s
    connect = min(timeout_s, connect_timeout_s) if connect_timeout_s else timeout_s
    try:
        body, encoding = _get(manager, url, shown, connect, timeout_s, deadline, max_bytes)
    finally:
        if own_pool:
            manager.clear()
    data = _decode(body, encoding, shown, max_bytes)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are both here
        raise PriceFetchError(f"{shown} did not return JSON: {_short(exc)}") from None
    if not isinstance(document, dict):
        raise PriceFetchError(
            f"{shown} returned JSON {type(document).__name__}, expected an object")
    return document, now()


def _get(manager: urllib3.PoolManager, url: str, shown: str, connect_s: float, read_s: float,
         deadline: float, max_bytes: int) -> tuple[bytes, str]:
    """The raw (still encoded) body and its Content-Encoding."""
    # No retries: the refresh loop is the retry policy. Redirects are followed because
    # mirrors and CDNs use them.
    retries = urllib3.Retry(total=_MAX_REDIRECTS, connect=0, read=0, status=0, other=0,
                            redirect=_MAX_REDIRECTS, raise_on_redirect=True)
    headers = {"Accept": "application/json", "Accept-Encoding": "gzip",
               "User-Agent": f"agent-cli-proxy/{__version__}"}
    try:
        response = manager.request(
            "GET", url, headers=headers, retries=retries, preload_content=False,
            decode_content=False, timeout=urllib3.Timeout(connect=connect_s, read=read_s))
    except MaxRetryError as exc:
        raise PriceFetchError(f"could not fetch {shown}: {_reason(exc)}") from None
    except (HTTPError, OSError, ValueError) as exc:  # ValueError: a URL urllib3 rejects
        raise PriceFetchError(f"could not fetch {shown}: {_short(exc)}") from None
    complete = False
    try:
        if response.status >= 400:
            raise PriceFetchError(f"{shown} answered HTTP {response.status}")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise PriceFetchError(
                f"{shown} sent {declared} bytes, more than the {max_bytes}-byte limit")
        pieces: list[bytes] = []
        size = 0
        while True:
            try:
                piece = response.read(_CHUNK)
            except (HTTPError, OSError) as exc:
                raise PriceFetchError(f"reading {shown} failed: {_short(exc)}") from None
            if not piece:
                break
            size += len(piece)
            if size > max_bytes:
                raise PriceFetchError(
                    f"{shown} sent more than the {max_bytes}-byte limit")
            if time.monotonic() > deadline:
                raise PriceFetchError(f"{shown} took longer than {read_s:g} s")
            pieces.append(piece)
        complete = True
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        return b"".join(pieces), encoding
    finally:
        # A fully read connection can be reused; one abandoned mid-body cannot.
        if not complete:
            response.close()
        response.release_conn()


def _decode(body: bytes, encoding: str, shown: str, max_bytes: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise PriceFetchError(f"{shown} used Content-Encoding {encoding!r}; only gzip is asked for")
    # Decompress with an output bound: a small gzip body can expand without limit.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise PriceFetchError(f"{shown} sent a corrupt gzip body: {exc}") from None
    if len(data) > max_bytes:
        raise PriceFetchError(
            f"{shown} sent a body that expands beyond the {max_bytes}-byte limit")
    if not inflater.eof:
        raise PriceFetchError(f"{shown} sent a truncated gzip body")
    return data


def _reason(exc: MaxRetryError) -> str:
    reason = exc.reason
    if reason is None:
        return _short(exc)
    text = str(reason)
    # NewConnectionError reads "HTTPConnection(host=…, port=…): Failed to establish …
    # refused"; the connection's repr only repeats the URL already in the message.
    if ": " in text and text.startswith(("<", "HTTP")):
        text = text.split(": ", 1)[1]
    return text


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."

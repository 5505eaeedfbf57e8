"""A proxied request sent over a pooled keep-alive connection without urllib3's request
machinery.

urllib3's ``urlopen`` spends about 0.12 ms of CPU per exchange on this design's machines
(some 640 Python calls: timeouts and retries objects, ``http.client``'s request state
machine and per-header checks, then wrapping the response), a tenth of what the proxy
spends on a whole call. When the pool hands back a connection that is already open, the
request is plain and may not be retried anyway, :func:`send_on_pooled` does the same
exchange in far fewer steps:

* the request head is the one urllib3 and ``http.client`` would write, byte for byte
  (``Host``, ``Accept-Encoding: identity`` unless the client sent one, ``Content-Length``,
  then the headers in urllib3's order), written with the body in one ``sendall``;
* the answer is read by the standard library's ``http.client`` response (status line,
  headers, 1xx answers, chunked/length/close framing) and wrapped in urllib3's own
  ``HTTPResponse``, as urllib3 does, so reading, releasing and errors stay urllib3's;
* failures end as urllib3 would end them: a write that fails on the pooled connection
  (the upstream reset it while idle) is retried through urllib3 with the retry already
  counted, as the client's connection class makes urllib3 do; a broken or silent answer
  raises what ``urlopen`` raises, and the connection is closed and its pool slot given
  back, as ``urlopen`` does.

What differs from urllib3's own response, unused by the proxy: ``version_string``,
``retries`` and ``shutdown()`` are not set up, and the pool's ``num_requests`` does not
count the request.

Everything else (no open pooled connection, HTTPS, a method urllib3 may retry on a
gateway status, a header or target needing ``http.client``'s checks or encodings) returns
None and goes through ``urlopen`` as before.
"""

from __future__ import annotations

import errno
import http.client
import re
import socket
from collections.abc import Callable
from typing import Any

import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.util import SKIP_HEADER
from urllib3.util.response import assert_header_parsing

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.upstream.response_headers import FastHeadersResponse

_log = get_logger("upstream")

# A method or header name of token characters only (what http.client accepts is wider,
# and checked there); a request target without controls, spaces or non-ASCII.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(r"[\x00-\x20\x7f-\U0010ffff]")
# urllib3 sends Content-Length: 0 without a body for any method but these (body_to_chunks).
_NO_BODY_EXPECTED = frozenset({"GET", "HEAD", "DELETE", "TRACE", "OPTIONS", "CONNECT"})
# An error reading the answer that urllib3 reports as a read timeout (_raise_timeout).
_TIMEOUT_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
# Recent urllib3 versions join a folded header value's lines (older ones keep them as
# http.client returns them): whatever the installed one does, for the rare answer that
# has one.
_normalize_folded = getattr(urllib3.connection, "_normalize_header_values", None)


class Stale(Exception):
    """Writing the request on the pooled connection failed (the upstream had reset it
    while idle): the caller retries as urllib3 would with the client's connection class
    (see ``client.StaleConnectionError``, which treats a failed first write the same)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def request_head(method: str, target: str, host: str, headers: list[tuple[str, str]],
                 body: bytes | None) -> bytes | None:
    """The request head urllib3 2.x and ``http.client`` write for these arguments, or
    None when it takes their slower path (checks, encodings, chunked framing)."""
    if not _TOKEN.fullmatch(method) or _TARGET.search(target):
        return None
    # urllib3's HTTPHeaderDict: names case-insensitive, duplicates written together where
    # the name first appears, under its first spelling; SKIP_HEADER values not written.
    order: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower not in order:
            order[lower] = []
            names[lower] = name
        order[lower].append(value)
    if "transfer-encoding" in order or not all(_TOKEN.fullmatch(n) for n in names.values()):
        return None
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in order:
        lines.append(f"Host: {host}")
    if "accept-encoding" not in order:
        lines.append("Accept-Encoding: identity")
    if "content-length" not in order:
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        elif method not in _NO_BODY_EXPECTED:
            lines.append("Content-Length: 0")
    if "user-agent" not in order:
        return None  # urllib3 would add its own; the client always decides (client.send)
    for lower, values in order.items():
        name = names[lower]
        for value in values:
            if value == SKIP_HEADER:
                if lower not in ("user-agent", "host", "accept-encoding"):
                    return None  # urllib3 refuses it: let it say so
                continue
            if "\r" in value or "\n" in value:
                return None
            lines.append(f"{name}: {value}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        return None


def _host_header(conn: Any) -> str | None:
    """What http.client writes as ``Host`` for *conn* (None: a name it would encode)."""
    host: str = conn.host
    if not host.isascii() or "%" in host:
        return None
    if ":" in host:
        host = f"[{host}]"
    port = conn.port
    return host if port == conn.default_port else f"{host}:{port}"


def send_on_pooled(pool: HTTPConnectionPool, method: str, target: str,
                   headers: list[tuple[str, str]], body: bytes | None,
                   connect_timeout: float, read_timeout: float,
                   attach: Callable[[socket.socket], None]) -> urllib3.BaseHTTPResponse | None:
    """Send over a pooled open connection of *pool* and return urllib3's response with
    the headers read, or None (nothing sent; a connection taken is given back) when
    urllib3 must do it.

    The request is written under *connect_timeout* and the answer waited for under
    *read_timeout*, as urllib3 does. *attach* is called with the socket once the request
    is on the wire (SendHandle). Raises :class:`Stale` when writing fails, and what
    urllib3 would raise when the answer does (its ReadTimeoutError, a ProtocolError
    around the socket or parsing error, its own header checks' errors); the connection
    is then closed and its pool slot given back.
    """
    conn: Any = pool._get_conn()  # the client's _TrackedHTTPConnection
    sock: socket.socket | None = conn.sock
    host = _host_header(conn) if sock is not None else None
    head = (request_head(method, target, host, headers, body)
            if host is not None else None)
    if head is None:
        pool._put_conn(conn)  # urllib3 takes it again (the pool is last in, first out)
        return None
    assert sock is not None
    answer: http.client.HTTPResponse | None = None
    try:
        _timeout(sock, connect_timeout)
        try:
            sock.sendall(head + body if body else head)
        except OSError as exc:
            raise Stale(exc) from exc
        conn._requests_on_socket += 1
        attach(sock)
        try:
            _timeout(sock, read_timeout)
            answer = FastHeadersResponse(sock, method=method)
            answer.begin()
        except (OSError, http.client.HTTPException) as exc:
            raise _as_urllib3(exc, pool, target, read_timeout) from exc
        if answer.will_close:
            conn.close()  # as http.client's getresponse does; the answer keeps the socket
        try:
            assert_header_parsing(answer.msg)
        except (urllib3.exceptions.HeaderParsingError, TypeError) as exc:
            _log.warning("upstream.header_parsing", error=str(exc))
        items = answer.msg.items()
        if _normalize_folded is not None and any("\r\n" in value for _, value in items):
            items = _normalize_folded(answer.msg)
        return urllib3.HTTPResponse(
            body=answer, headers=urllib3.HTTPHeaderDict(items), status=answer.status,
            version=answer.version, reason=answer.reason, preload_content=False,
            decode_content=False, original_response=answer, enforce_content_length=True,
            request_method=method, request_url=target, pool=pool, connection=conn)
    except BaseException:
        # As urlopen: the connection is dropped (the upstream sees it close at once,
        # which also tells it to stop generating) and its slot goes back to the pool.
        if answer is not None:
            answer.close()
        conn.close()
        pool._put_conn(None)
        raise


def _timeout(sock: socket.socket, seconds: float) -> None:
    # Each settimeout() is a system call (it sets the descriptor's blocking mode).
    if sock.gettimeout() != seconds:
        sock.settimeout(seconds)


def _as_urllib3(exc: BaseException, pool: HTTPConnectionPool, target: str,
                read_timeout: float) -> Exception:
    """What urlopen raises for *exc* while reading the answer's head (no read retries
    for the methods sent here)."""
    if isinstance(exc, socket.timeout) or (
            isinstance(exc, OSError) and exc.errno in _TIMEOUT_ERRNOS):
        return ReadTimeoutError(pool, target, f"Read timed out. (read timeout={read_timeout})")
    return ProtocolError("Connection aborted.", exc)

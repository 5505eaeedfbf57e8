"""One urllib3 pool for every upstream call, and the errors it can end in.

The pool is sized to the number of worker threads (each thread holds at most one upstream
connection at a time) with ``block=False``, so a burst beyond it opens extra connections
instead of queueing. Responses are opened with ``preload_content=False`` and
``decode_content=False``: the relay streams the bytes exactly as the upstream sent them.
urllib3's own retries and redirects are off; whether a request may be retried is decided
by the caller, which knows whether the upstream could have started the work already.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util import parse_url

from agent_cli_proxy.config_values import display_url
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.upstream import exchange
from agent_cli_proxy.upstream.response_headers import FastHeadersResponse

ErrorKind = Literal["connect", "timeout", "protocol"]
_log = get_logger("upstream")
_current = threading.local()  # the SendHandle of the request this thread is sending


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``read`` is the longest silence allowed between two received bytes."""

    connect: float
    read: float


class UpstreamError(Exception):
    """The upstream could not be reached or stopped answering.

    ``kind`` tells the HTTP layer which status to answer with: ``connect`` (nothing was
    sent: 502), ``timeout`` (504) or ``protocol`` (the connection broke: 502).
    """

    def __init__(self, kind: ErrorKind, message: str, *, connecting: bool = False,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.connecting = connecting  # failed before the request could be sent
        self.code = code  # a more precise error code for the row, when there is one


def classify_error(exc: BaseException) -> UpstreamError:
    """Map a urllib3/socket failure to an :class:`UpstreamError` with a readable message."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, StaleConnectionError):
        return UpstreamError("connect", str(exc), connecting=True)
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2.x: test it first, or
    # a refused connection would be reported as a timeout.
    if isinstance(exc, NewConnectionError):
        if isinstance(exc.__context__, TimeoutError | socket.timeout):
            return UpstreamError("timeout", "upstream connect timed out", connecting=True)
        return UpstreamError("connect", f"upstream connection failed: {_reason(exc)}",
                             connecting=True)
    if isinstance(exc, ConnectTimeoutError):
        return UpstreamError("timeout", "upstream connect timed out", connecting=True)
    if isinstance(exc, ReadTimeoutError | TimeoutError | socket.timeout):
        return UpstreamError("timeout", "upstream stopped sending data (read timeout)")
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return classify_error(exc.reason)
    if isinstance(exc, ProtocolError | HTTPError | OSError):
        return UpstreamError("protocol", f"upstream connection broke: {_reason(exc)}")
    return UpstreamError("protocol", f"upstream failure: {exc!r}")


def _reason(exc: BaseException) -> str:
    """The innermost OS-level cause (``[Errno 111] Connection refused``): what a user can
    act on, without urllib3's wrapper text and object reprs."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    innermost: BaseException = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and not isinstance(cause, HTTPError):
            innermost = cause
        nested = [a for a in cause.args if isinstance(a, BaseException)]
        cause = nested[-1] if nested else (cause.__cause__ or cause.__context__)
    if isinstance(innermost, OSError) and innermost.strerror:
        return f"[Errno {innermost.errno}] {innermost.strerror}"
    text = str(innermost)
    return text.rsplit(": ", 1)[-1] if "connection" in text.lower() else text


class SendHandle:
    """Lets another thread abort a request that is still waiting for response headers.

    A non-streaming LLM call does all its work before the headers come back; if the client
    leaves (or the proxy shuts down) meanwhile, closing the upstream connection tells the
    upstream to stop generating. The connection reports its socket here once the request
    is on the wire.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._done = False
        self.abort_reason: str | None = None

    def _attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self._done:
                return
            self._sock = sock
            if self.abort_reason is not None:
                self._shutdown()

    def abort(self, reason: str) -> None:
        with self._lock:
            if self._done or self.abort_reason is not None:
                return
            self.abort_reason = reason
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _detach(self) -> None:
        # The request is answered and its socket is back in the pool (another request may
        # use it now); a later attempt attaches its own.
        with self._lock:
            self._sock = None

    def _finish(self) -> None:
        # From here on the socket belongs to the response (or is back in the pool).
        with self._lock:
            self._done = True
            self._sock = None


class StaleConnectionError(ConnectTimeoutError):
    """A pooled keep-alive connection was found reset when the request's first bytes were
    written: the upstream had closed it while idle and never saw the request.

    Subclassing urllib3's connect error makes its retry logic treat the request as never
    sent, so even a POST may go again on a fresh connection (within UPSTREAM_MAX_RETRIES).
    """

    @classmethod
    def on_write(cls, cause: OSError) -> StaleConnectionError:
        return cls("upstream closed the pooled connection before the request was sent "
                   f"({_reason(cause)})")


# A request body up to this size goes out in one write with the request head (see
# _Tracked.send); a larger one is written on its own, where one more system call is
# nothing next to copying the body.
COALESCE_BODY_BYTES = 256 * 1024


class _Tracked:
    """Connection mixin: reports the socket to the request's :class:`SendHandle`, tells
    a pooled connection the upstream reset before anything was sent from one that broke
    after the request (or part of it) went out, and writes a small request in one piece."""

    _requests_on_socket = 0
    _wrote = False
    _hold_head = False
    _held: bytes | None = None
    # http.client's response, reading a plain header block without the email parser.
    response_class: type[http.client.HTTPResponse] = FastHeadersResponse

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._requests_on_socket = 0

    def send(self, data: Any) -> None:
        # urllib3 writes the head (request line and headers) and then the body, two
        # sendall() calls: on loopback each costs tens of microseconds (the kernel runs the
        # receiver's TCP stack in the sender's call) and the upstream wakes twice. The head
        # is held back and goes out with the body, in one call.
        if self._hold_head:
            self._hold_head = False
            if isinstance(data, bytes):
                self._held = data
                return
        held, self._held = self._held, None
        if held is not None:
            if isinstance(data, bytes):
                data = held + data
            else:  # pragma: no cover - urllib3 hands bytes; anything else goes on its own
                super().send(held)  # type: ignore[misc]
                self._wrote = True
        super().send(data)  # type: ignore[misc]
        self._wrote = True

    def request(self, *args: Any, **kwargs: Any) -> None:
        reused = self._requests_on_socket > 0 and self.sock is not None  # type: ignore[attr-defined]
        self._wrote = False
        body = kwargs.get("body", args[2] if len(args) > 2 else None)
        # Only a body that urllib3 sends as one piece right after the head.
        self._hold_head = (isinstance(body, bytes) and 0 < len(body) <= COALESCE_BODY_BYTES
                           and not kwargs.get("chunked"))
        self._held = None
        try:
            super().request(*args, **kwargs)  # type: ignore[misc]
            if self._held is not None:  # no body followed after all: the head alone
                self.send(b"")
        except OSError as exc:
            # A write fails at once on a socket the peer has reset. urllib3 would swallow
            # EPIPE/ECONNRESET here (to read an early answer) and then fail reading, an
            # error it must treat as "the upstream may have started".
            if reused and not self._wrote:
                raise StaleConnectionError.on_write(exc) from exc
            raise
        finally:
            self._hold_head, self._held = False, None
        self._requests_on_socket += 1  # after the call: a fresh socket's connect() zeroes it
        _attach_current(self.sock)  # type: ignore[attr-defined]


class _TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})


@functools.lru_cache(maxsize=32)
def retry_policy(retries: int) -> urllib3.Retry | bool:
    """What may be tried again, *retries* times at most (UPSTREAM_MAX_RETRIES).

    A connection that could not be made carried nothing, so any request may be retried
    then, POSTs included; so may one whose pooled connection turned out to be reset before
    its first byte was written (:class:`StaleConnectionError`). Once the request went out,
    the upstream may have started work (and billing): only idempotent requests are
    retried, and only on a gateway's 502, 503 or 504. Nothing is retried after the
    response headers, so never once a byte went to the client. Backoff 0.2 s, 0.4 s,
    0.8 s … (at most 5 s) with jitter.

    One object per value (urllib3 never changes a Retry: each attempt makes a new one),
    not a new one per call.
    """
    if retries <= 0:
        return False
    return urllib3.Retry(
        total=retries, connect=retries, read=0, other=0, redirect=0, status=retries,
        allowed_methods=IDEMPOTENT, status_forcelist=RETRY_STATUSES,
        backoff_factor=0.2, backoff_max=5.0, backoff_jitter=0.1,
        # Not Retry-After: a worker thread must not sleep as long as an upstream asks.
        raise_on_status=False, respect_retry_after_header=False)


RATE_LIMIT_MAX_WAIT_S = 5.0


def _rate_limit_wait(response: urllib3.BaseHTTPResponse, method: str, attempt: int,
                     retries: int) -> float | None:
    """Seconds to wait before sending an idempotent request answered 429 again, or None to
    hand the 429 to the client.

    The upstream's Retry-After (seconds or an HTTP date) is honoured; without one the wait
    doubles from 0.5 s. A wait longer than :data:`RATE_LIMIT_MAX_WAIT_S` is the client's to
    make, not a worker thread's: the 429 goes back with its Retry-After. POSTs are never
    sent again (coding agents retry their own rate-limited calls).
    """
    if response.status != 429 or method.upper() not in IDEMPOTENT or attempt >= retries:
        return None
    value = response.headers.get("Retry-After")
    if value is None:
        return min(0.5 * 2.0 ** attempt, RATE_LIMIT_MAX_WAIT_S)
    try:
        wait = float(urllib3.Retry.DEFAULT.parse_retry_after(value))
    except urllib3.exceptions.InvalidHeader:
        return None  # unreadable: let the client decide
    return wait if wait <= RATE_LIMIT_MAX_WAIT_S else None


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Read off a small answer so its connection can be reused, or drop the connection."""
    try:
        response.drain_conn()
        response.release_conn()
    except (HTTPError, OSError):
        response.close()


@functools.lru_cache(maxsize=256)
def _target(url: str) -> tuple[str | None, str | None, int | None, str]:
    """(scheme, host, port, request URI) of *url*, as PoolManager finds them (parse_url,
    which also percent-encodes what must be): upstream URLs are a few, sent again and
    again."""
    parsed = parse_url(url)
    return parsed.scheme, parsed.host, parsed.port, parsed.request_uri


@functools.lru_cache(maxsize=16)
def _timeout(timeouts: Timeouts) -> urllib3.Timeout:
    # Shared: a pool clones the Timeout it is given for each request.
    return urllib3.Timeout(connect=timeouts.connect, read=timeouts.read)


def _attach_current(sock: socket.socket) -> None:
    """Report the socket of a request on the wire to this thread's SendHandle."""
    handle: SendHandle | None = getattr(_current, "handle", None)
    if handle is not None:
        handle._attach(sock)


def _after_stale(policy: urllib3.Retry | bool, method: str, target: str,
                 pool: HTTPConnectionPool, cause: OSError) -> urllib3.Retry:
    """The retry state urllib3 would be in after writing a request on a pooled connection
    failed (:class:`StaleConnectionError`, a connect error: any method may go again);
    raises what urllib3 raises when no retry is left."""
    error = StaleConnectionError.on_write(cause)
    if not isinstance(policy, urllib3.Retry):
        raise error from cause
    after = policy.increment(method, target, error=error, _pool=pool)  # may raise MaxRetryError
    after.sleep()
    return after


class UpstreamClient:
    """Sends requests through one shared, thread-safe :class:`urllib3.PoolManager`."""

    def __init__(self, *, maxsize: int, num_pools: int = 16) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=num_pools,
            maxsize=maxsize,
            block=False,
            retries=False,
        )
        self._pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeouts: Timeouts,
        handle: SendHandle | None = None,
        retries: int = 0,
        rate_limit_retries: int = 0,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request and return as soon as the response headers arrived.

        The body is not read: the caller owns the response and must either read it to the
        end and ``release_conn()`` or ``close()`` it. Raises :class:`UpstreamError`.
        *retries* is UPSTREAM_MAX_RETRIES (see :func:`retry_policy`); an idempotent request
        answered 429 is sent again up to *rate_limit_retries* times (RATE_LIMIT_MAX_RETRIES)
        when the wait it asks for is short (:func:`_rate_limit_wait`).
        """
        pairs = [(name, value) for name, value in headers
                 if value != urllib3.util.SKIP_HEADER]  # urllib3's sentinel is no value
        if not any(name.lower() == "user-agent" for name, _ in pairs):
            # Send no User-Agent rather than urllib3's own: the upstream sees the client.
            pairs.append(("User-Agent", urllib3.util.SKIP_HEADER))
        _current.handle = handle
        try:
            for attempt in range(rate_limit_retries + 1):
                response = self._send_once(method, url, pairs, body, timeouts, retries)
                wait = _rate_limit_wait(response, method, attempt, rate_limit_retries)
                if wait is None or (handle is not None and handle.abort_reason is not None):
                    return response
                _discard(response)
                if handle is not None:
                    handle._detach()  # the socket went back to the pool
                _log.info("upstream.rate_limited_retry", url=display_url(url),
                          wait_s=round(wait, 3), attempt=attempt + 1)
                time.sleep(wait)
            raise AssertionError("unreachable: the last attempt always returns")
        finally:
            _current.handle = None
            if handle is not None:
                handle._finish()

    def _send_once(self, method: str, url: str, headers: list[tuple[str, str]],
                   body: bytes | None, timeouts: Timeouts, retries: int
                   ) -> urllib3.BaseHTTPResponse:
        method = method.upper()
        policy: urllib3.Retry | bool = retry_policy(retries)
        try:
            # What PoolManager.request() does for a URL without fields or redirects, minus
            # parsing the same few URLs again on every call.
            scheme, host, port, request_uri = _target(url)
            pool = self._pool.connection_from_host(host, port=port, scheme=scheme)
            if (type(pool) is _HTTPPool and method not in IDEMPOTENT
                    and (body is None or len(body) <= COALESCE_BODY_BYTES)):
                # Plain HTTP, a method urllib3 would never send again once it went out,
                # a body sent with the head: an open pooled connection does the exchange
                # itself (exchange).
                try:
                    fast = exchange.send_on_pooled(pool, method, request_uri, headers, body,
                                                   timeouts.connect, timeouts.read,
                                                   _attach_current)
                except exchange.Stale as stale:
                    policy = _after_stale(policy, method, request_uri, pool, stale.cause)
                else:
                    if fast is not None:
                        return fast
            header_dict = urllib3.HTTPHeaderDict()
            for name, value in headers:
                header_dict.add(name, value)
            return pool.urlopen(
                method,
                request_uri,
                body=body,
                headers=header_dict,
                preload_content=False,
                decode_content=False,
                redirect=False,
                assert_same_host=False,
                retries=policy,
                timeout=_timeout(timeouts),
            )
        except (HTTPError, OSError) as exc:
            raise classify_error(exc) from exc
        except Exception as exc:
            # Anything else urllib3 raises (a header it refuses, …) is still a failed
            # request, never a reason to leave the caller's row unfinished. Its text is not
            # repeated: http.client quotes a refused header value, which may be a key.
            reason = ("a request header cannot be sent as it is" if "header" in str(exc).lower()
                      else type(exc).__name__)
            raise UpstreamError("protocol", f"could not send the request upstream: {reason}"
                                ) from exc

    def close(self) -> None:
        self._pool.clear()

"""The streaming relay: upstream bytes to the client as they arrive, closed exactly once.

A :class:`Relay` is the WSGI response body. Each ``next()`` reads whatever the upstream
has sent (never waiting to fill a buffer), hands a copy to the *tap* (usage parsing) and
yields the bytes unchanged, unless a *transform* was asked for (the one documented case:
hiding the usage chunk the proxy requested on the client's behalf).

``close()`` runs exactly once, whoever calls it (waitress at the end of the response, or
after the client went away): it returns a fully read connection to the pool, closes one
that is abandoned, and reports a :class:`RelayResult` to ``on_close``, which finalizes the
request row. ``abort()`` may be called from another thread (the disconnect watcher, a
shutdown) to unblock a read that is waiting on a silent upstream.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import urllib3
from urllib3.exceptions import HTTPError, ProtocolError

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.upstream.client import UpstreamError, classify_error

_log = get_logger("relay")
READ_SIZE = 64 * 1024
CLIENT_GONE = "client disconnected"

Outcome = Literal["completed", "aborted", "error"]


class RelayAborted(Exception):
    """The proxy stopped a response on purpose (shutdown) before the upstream ended it."""


class Tap(Protocol):
    """Receives a copy of every upstream byte; must not raise (the relay guards anyway)."""

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


class Transform(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class RelayResult:
    outcome: Outcome
    bytes_received: int
    error: UpstreamError | None = None
    abort_reason: str | None = None


def iter_raw(response: urllib3.BaseHTTPResponse, amt: int = READ_SIZE) -> Iterator[bytes]:
    """Yield the raw body as it arrives, each piece as soon as the socket has it.

    ``read(amt)`` would wait for ``amt`` bytes on a close-delimited body, delaying events.
    urllib3 >= 2.2 has ``read1``; on older versions chunked bodies are read per HTTP chunk
    and other bodies through http.client's own ``read1``.
    """
    read1 = getattr(response, "read1", None)
    if read1 is not None:
        while data := read1(amt, decode_content=False):
            yield data
        return
    # urllib3 < 2.2 (Debian 13 ships 2.3, older distributions less): no read1.
    if getattr(response, "chunked", False):  # pragma: no cover
        yield from response.read_chunked(decode_content=False)
        return
    fp = response._fp  # type: ignore[attr-defined]  # pragma: no cover
    while data := fp.read1(amt):  # pragma: no cover
        yield data
    if fp.length:  # pragma: no cover  # the upstream closed before the announced end
        raise ProtocolError("upstream answer ended early",
                            http.client.IncompleteRead(b"", fp.length))
    # http.client's read1 (3.11) never marks a Content-Length body as finished, as read()
    # does; unclosed, the pooled connection would refuse its next request
    # (ResponseNotReady). Closing the response leaves the socket open for reuse.
    fp.close()  # pragma: no cover


def _closed(result: RelayResult) -> None:
    """A closed relay's ``on_close``: the callback usually holds the relay itself (a
    reference cycle), and letting it go frees the whole call's objects at once instead of
    at the cyclic garbage collector's next pass."""


class Relay:
    """WSGI body iterator over an upstream response. See the module docstring."""

    def __init__(
        self,
        response: urllib3.BaseHTTPResponse,
        on_close: Callable[[RelayResult], None],
        *,
        tap: Tap | None = None,
        transform: Transform | None = None,
        client_gone: Callable[[], bool] | None = None,
        limit_bytes: int | None = None,
        deadline: tuple[float, str] | None = None,
    ) -> None:
        """*limit_bytes*: cut an answer growing past it (MAX_RESPONSE_BODY_BYTES).
        *deadline*: (``time.monotonic()`` value, setting name) by which the whole answer
        must have arrived (UPSTREAM_TIMEOUT_MS for non-streaming calls)."""
        self._response = response
        self._chunks = iter_raw(response)
        self._on_close = on_close
        self._tap = tap
        self._transform = transform
        self._client_gone = client_gone
        self._limit_bytes = limit_bytes
        self._deadline = deadline
        # Captured now, while the response owns the connection: urllib3 hands a fully read
        # connection back to the pool by itself, and abort() must never touch it then.
        self._sock = self._socket()
        self._lock = threading.Lock()
        self._closed = False
        self._eof = False
        self._received = 0
        self._primed = b""
        self._error: UpstreamError | None = None
        self._abort_reason: str | None = None

    # -- reading -------------------------------------------------------------------------

    def prime(self) -> None:
        """Read the first piece now, so a failure before any byte can still get a clean
        HTTP error response (once the client has the headers, it can only be cut off).

        Raises :class:`UpstreamError`; the caller then closes the relay.
        """
        self._primed = self._read()
        if not self._primed and self._error is not None:
            raise self._error

    def _read(self) -> bytes:
        """One transformed piece; ``b""`` at the end or after an error/abort."""
        while not self._eof:
            if self._abort_reason is not None:
                return b""
            if self._client_gone is not None and self._client_gone():
                self.abort(CLIENT_GONE)
                return b""
            if self._deadline is not None and not self._within_deadline():
                return b""
            try:
                data = next(self._chunks)
            except StopIteration:
                data = b""
            except (HTTPError, OSError, UpstreamError) as exc:
                if self._abort_reason is None:
                    self._error = classify_error(exc)
                    if self._deadline is not None and self._error.kind == "timeout":
                        # The read waited only until the deadline: name the total limit.
                        self._within_deadline(grace_s=0.05)
                return b""
            if not data:
                with self._lock:
                    if self._abort_reason is None:
                        self._eof = True
                if self._eof:
                    return self._finish_pieces()
                return b""
            self._received += len(data)
            if self._limit_bytes is not None and self._received > self._limit_bytes:
                self._error = UpstreamError(
                    "protocol", f"upstream answer larger than {self._limit_bytes} bytes "
                    "(MAX_RESPONSE_BODY_BYTES)", code="response_too_large")
                return b""
            self._feed_tap(data)
            try:
                out = self._transform.feed(data) if self._transform is not None else data
            except Exception as exc:
                _log.exception("passthrough.transform_failed")
                self._error = UpstreamError("protocol", f"proxy transform failed: {exc!r}",
                                            code="transform_failed")
                return b""
            if self._announced_body_read():
                return out + self._end_of_announced_body()
            if out:
                return out
        return b""

    def _announced_body_read(self) -> bool:
        if hasattr(self._response, "read1"):
            return getattr(self._response, "length_remaining", None) == 0
        # urllib3 < 2.2: iter_raw reads http.client's response, which does the counting.
        fp = getattr(self._response, "_fp", None)
        return getattr(fp, "length", None) == 0 and not getattr(fp, "chunked", False)

    def _end_of_announced_body(self) -> bytes:
        """The last byte of a Content-Length body is here: end now. Once this piece is
        sent the client has the whole answer and may hang up at once; ending only at the
        next read would let that look like an abort of a complete call."""
        with contextlib.suppress(StopIteration):
            while next(self._chunks):  # answers b"" at once: the length is used up
                pass
        with self._lock:
            if self._abort_reason is None:
                self._eof = True
        return self._finish_pieces() if self._eof else b""

    def _within_deadline(self, grace_s: float = 0.0) -> bool:
        """False (with the error set) once the deadline passed; else shorten the next
        read's wait to the time left."""
        assert self._deadline is not None
        at, setting = self._deadline
        left = at - time.monotonic()
        if left <= grace_s:
            self._error = UpstreamError("timeout", f"upstream answer not complete within "
                                        f"{setting}", code="upstream_timeout")
            return False
        self.set_read_timeout(left)
        return True

    def _finish_pieces(self) -> bytes:
        if self._tap is not None:
            try:
                self._tap.finish()
            except Exception:
                _log.exception("passthrough.tap_failed")
                self._tap = None
        return self._transform.finish() if self._transform is not None else b""

    def _feed_tap(self, data: bytes) -> None:
        if self._tap is None:
            return
        try:
            self._tap.feed(data)
        except Exception:
            # Usage parsing must never break the byte stream the client is receiving.
            _log.exception("passthrough.tap_failed")
            self._tap = None

    def __iter__(self) -> Relay:
        return self

    def __next__(self) -> bytes:
        if self._primed:
            piece, self._primed = self._primed, b""
            return piece
        piece = self._read()
        if piece:
            return piece
        # Headers are already out: the only honest signal of a broken response is to cut
        # the connection, which waitress does when the iterator raises. A client that has
        # gone needs no signal.
        if self._error is not None:
            raise self._error
        if self._abort_reason is not None and self._abort_reason != CLIENT_GONE:
            raise RelayAborted(self._abort_reason)
        raise StopIteration

    # -- ending --------------------------------------------------------------------------

    def _socket(self) -> socket.socket | None:
        conn = getattr(self._response, "connection", None)
        sock: socket.socket | None = getattr(conn, "sock", None)
        return sock

    def set_read_timeout(self, seconds: float) -> None:
        """How long each later read may wait for the upstream to send something."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.settimeout(seconds)

    def abort(self, reason: str) -> None:
        """Stop relaying; safe from any thread. Unblocks a read waiting on the upstream."""
        with self._lock:
            if self._abort_reason is not None or self._eof or self._closed:
                return
            self._abort_reason = reason
            if self._sock is not None:
                with contextlib.suppress(OSError):  # already closed by the other side
                    self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._eof:
            outcome: Outcome = "completed"
        elif self._error is not None:
            outcome = "error"
        else:
            outcome = "aborted"
            if self._abort_reason is None:
                # waitress closes an unfinished body when the client went away.
                self._abort_reason = CLIENT_GONE
        try:
            if self._eof:
                self._response.release_conn()
            else:
                self._response.close()
        except Exception:
            _log.exception("passthrough.close_failed")
        if outcome != "completed" and self._tap is not None:
            # Whatever usage arrived before the end still counts (aborted streams are billed).
            try:
                self._tap.finish()
            except Exception:
                _log.exception("passthrough.tap_failed")
        result = RelayResult(outcome, self._received, self._error, self._abort_reason)
        on_close, self._on_close = self._on_close, _closed
        try:
            on_close(result)
        except Exception:
            _log.exception("passthrough.on_close_failed")

    @property
    def closed(self) -> bool:
        return self._closed

"""How the proxy's waitress connections send: without the main loop spinning, and (HTTP/1.1)
kept open after a chunked answer.

Two behaviours of waitress (2.1 to 3.0) cost the proxy dearly, measured on this design's
2-core machines:

* **The main loop spins while a worker thread writes.** With ``send_bytes`` = 1 (each chunk
  goes out at once, which streaming needs) a worker thread appends its data to the
  channel's out-buffer and sends it itself, holding the buffer's lock. Meanwhile the main
  loop sees data in the buffer, polls the socket for "writable" (which it always is),
  fails to take the lock, and polls again: about 200 rounds per proxied call, each taking
  the GIL from the worker that is trying to finish the send. :class:`ProxyChannel` tells
  the loop not to poll for writing while a worker is inside ``write_soon`` (which sends by
  itself), and wakes the loop when the worker leaves data it could not send.
* **Every chunked answer ends with** ``Connection: close`` (every stream), so each
  streaming client reconnects for its next call. The chunked framing already tells the
  client where the body ends (the ``0`` chunk), so :class:`KeepAliveTask` keeps an
  HTTP/1.1 connection open after it, unless the client asked to close. A stream broken off
  mid-way is still ended by closing the connection (waitress does so when the body
  iterator raises, and never writes the last chunk then).

A third saving: waitress sends a response's head and the first piece of its body with two
``send`` calls; :class:`ProxyChannel` holds the head back and sends both in one.

A fourth: when a keep-alive client's next request has arrived by the time its answer is
done (wrk, an agent's burst of calls), waitress queues the connection again for another
thread and wakes that thread and its main loop: two wake-ups and a thread switch per
request, 12 % of a busy worker's time. :func:`serve_in_a_row` lets the thread that
served the request take the next one itself, up to :data:`REQUESTS_IN_A_ROW` in a row
(then it queues the connection as waitress would, so one client cannot keep a thread).

A fifth, for the same clients one step apart: when the next request is not there yet,
the thread waits for it on the socket a moment (:data:`NEXT_REQUEST_WAIT_S`) and reads
it itself, instead of handing the connection back to the main loop (which wakes, reads,
parses and queues it for a thread again). It waits only while the connection is idle
and clean (nothing unsent, nothing half-read), the server is quiet (:data:`QUIET_THREADS`)
and another thread is free, so no other connection ever waits for it; the main loop
leaves the socket alone meanwhile.

All rely on waitress internals (``write_soon``, ``_flush_outbufs_below_high_watermark``,
``build_response_header``, ``service``, ``received``, the server's ``add_task``,
``pull_trigger`` and ``task_dispatcher``) that are the same from 2.1 to 3.0; the tests
run at both.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress.task import WSGITask

from agent_cli_proxy.server_errors import JsonErrorChannel

_CLOSE_LINE = b"\r\nConnection: close"
REQUESTS_IN_A_ROW = 16
# How long a thread that has answered waits for the connection's next request. A client
# calling in a loop sends it within a fraction of a millisecond; any other goes back to
# the main loop this much later, and no thread is kept from other connections meanwhile.
NEXT_REQUEST_WAIT_S = 0.002
# The longest the main loop sleeps without an event (waitress's asyncore_loop_timeout,
# 1 s by default): it bounds how late a client hanging up is noticed during a request
# this thread read, the main loop not watching that socket until its next turn.
LOOP_TIMEOUT_S = 0.25
# ... and only while at most this many threads (itself included) are serving: under load
# the main loop is awake anyway, and more threads waiting on the interpreter lock cost
# more than the wake-ups saved (one worker at c=32: ~6 % fewer calls/s without it).
QUIET_THREADS = 2
# The connection this worker thread is serving, and whether its next request is waiting.
_serving = threading.local()


def serve_in_a_row(listener: Any) -> None:
    """Make *listener* (a waitress server) let a :class:`ProxyChannel`'s thread serve the
    connection's next request itself (see the module docstring)."""
    queue: Callable[[Any], None] = listener.add_task
    trigger: Callable[[], None] = listener.pull_trigger

    def add_task(task: Any) -> None:
        if getattr(_serving, "channel", None) is task:
            _serving.again = True  # ProxyChannel.service takes it
            return
        queue(task)

    def pull_trigger() -> None:
        # The loop is woken when the thread is done with the connection, not between two
        # of its requests, nor at the end of one when it looks for the next itself
        # (ProxyChannel.service wakes it then). A wake-up for unsent data always goes.
        channel = getattr(_serving, "channel", None)
        if channel is None or not (_serving.again or (
                not channel.requests and not channel.total_outbufs_len)):
            trigger()

    listener.add_task = add_task
    listener.pull_trigger = pull_trigger


class KeepAliveTask(WSGITask):
    """A WSGI task whose chunked HTTP/1.1 answer leaves the connection open."""

    def build_response_header(self) -> bytes:
        request: Any = self.request
        # Decided before waitress adds its own "Connection: close": whether anything but
        # the chunked framing would close the connection (the client asked, HTTP/1.0).
        keep = (self.version == "1.1" and not self.close_on_finish
                and request.headers.get("CONNECTION", "").lower() != "close")
        head: bytes = super().build_response_header()
        # Task.write() hands the head to the channel right now, and the first piece of
        # the body right after: the channel sends them in one piece.
        channel: Any = self.channel
        channel.head_next = True
        if keep and self.chunked_response and self.close_on_finish:
            # waitress closes after any answer without a Content-Length; the chunked
            # framing makes that needless. A WSGI app may not send a Connection header
            # (waitress refuses hop-by-hop headers), so this line is waitress's own.
            self.close_on_finish = False
            self.response_headers = [(n, v) for n, v in self.response_headers
                                     if (n.lower(), v.lower()) != ("connection", "close")]
            head = head.replace(_CLOSE_LINE, b"", 1)
        return head

    def service(self) -> None:
        try:
            super().service()
        finally:
            # A head still held (an answer without a body, or one the app broke off)
            # goes out now, as waitress would have sent it.
            channel: Any = self.channel
            channel.release_head()


class ProxyChannel(JsonErrorChannel):
    """A waitress channel whose main loop leaves the socket to a worker thread that is
    writing (see the module docstring), with :class:`KeepAliveTask` answers."""

    task_class = KeepAliveTask
    _task_writing = False
    head_next = False  # the next write_soon() is a response head (KeepAliveTask sets it)
    _held_head: bytes | None = None

    _waiting = False  # this connection's thread is reading its next request itself

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading = threading.Lock()  # who reads: the loop, or the waiting thread

    def service(self) -> None:
        server: Any = self.server
        for _ in range(REQUESTS_IN_A_ROW):
            _serving.channel, _serving.again = self, False
            try:
                super().service()
                again = _serving.again or self._next_request()
            finally:
                _serving.channel, _serving.again = None, False
            if not again:
                if self.connected:
                    server.pull_trigger()  # the loop watches the socket again
                return
        # Enough in a row: queued again like any connection, behind the others.
        server.add_task(self)
        server.pull_trigger()

    def readable(self) -> bool:
        if self._waiting:
            return False  # the thread reads the next request (service)
        return bool(super().readable())

    def handle_read(self) -> None:
        """waitress's, with one case more. The loop reads during a request too (a client
        hanging up must be noticed), so it may have been watching the socket when the
        thread began to wait on it: only one of them reads, and the loop may find that
        the thread read first (a would-block error, not the client's)."""
        with self._reading:
            if self._waiting:
                return
            try:
                data = self.recv(self.adj.recv_bytes)
            except BlockingIOError:
                return
            except OSError:
                if self.adj.log_socket_errors:
                    self.logger.exception("Socket error")
                self.handle_close()
                return
            if data:
                self.last_activity = time.time()
                self.received(data)
            else:
                self.connected = False  # the client closed

    def handle_write(self) -> None:
        """waitress's, except that with no request queued the loop still takes the
        out-buffer's lock (without waiting for it): a worker may be sending a ``100
        Continue`` then (received() in _next_request, or the end of waitress's own
        service()), and two threads sending the same bytes corrupt the buffer."""
        if not self.connected:
            return
        channel: Any = self  # waitress's private methods are not in its stubs
        if self.requests and self.total_outbufs_len < self.adj.send_bytes:
            flush = None  # a task is writing: not enough to be worth sending yet
        else:
            flush = channel._flush_some_if_lockable
        channel._flush_exception(flush)
        if self.close_when_flushed and not self.total_outbufs_len:
            self.close_when_flushed = False
            self.will_close = True
        if self.will_close:
            self.handle_close()

    def _next_request(self) -> bool:
        """Wait up to :data:`NEXT_REQUEST_WAIT_S` for the next request and read it here;
        True when it is complete and queued (for this thread, by ``add_task``). Anything
        else (no request yet, part of one, the client gone) is left to the main loop,
        which reads on from there."""
        dispatcher: Any = getattr(self.server, "task_dispatcher", None)
        if (not self.connected or self.will_close or self.close_when_flushed
                or self.requests or self.request is not None or self.total_outbufs_len
                or dispatcher is None or dispatcher.queue
                or dispatcher.active_count > QUIET_THREADS
                or dispatcher.active_count >= len(dispatcher.threads)):
            return False  # closing, half-read, a busy server, or no other thread free
        with self._reading:
            if self.requests or self.request is not None:
                return False  # the loop has just read (some of) it
            self._waiting = True
        try:
            sock: Any = self.socket
            try:
                waiting = select.poll()
                waiting.register(sock, select.POLLIN | select.POLLPRI)
                if not waiting.poll(NEXT_REQUEST_WAIT_S * 1000):
                    return False
                data = sock.recv(self.adj.recv_bytes)
            except (OSError, ValueError, TypeError):
                return False  # closed meanwhile; or an error the loop meets too, and closes
            if not data:
                return False  # the client closed: the loop sees it too, and closes
            self.last_activity = time.time()
            self.received(data)  # a complete request calls add_task: _serving.again
            again = bool(_serving.again)
        finally:
            with self._reading:
                self._waiting = False
        # The loop left the socket out of its watch meanwhile. Not woken for it now (that
        # wake-up is what the wait saves): it watches the socket again at its next turn,
        # within LOOP_TIMEOUT_S (server.make_server), or when service() ends.
        return again

    def writable(self) -> bool:
        # A worker inside write_soon() sends by itself (send_bytes = 1) and wakes the loop
        # (below) when something is left: polling for POLLOUT now would only spin.
        if self._task_writing:
            return False
        return bool(super().writable())

    def write_soon(self, data: Any) -> int:
        if self.head_next:
            self.head_next = False
            if isinstance(data, bytes) and data:
                # Held for the first piece of the body: one send (and one wake-up of
                # the client) instead of two for every answer.
                self._held_head = data
                return len(data)
        held, self._held_head = self._held_head, None
        if held is not None:
            if isinstance(data, bytes):
                data = held + data
            else:  # pragma: no cover - the proxy never answers with a file wrapper
                self._write_soon(held)
        return self._write_soon(data)

    def release_head(self) -> None:
        """Send a held response head that no body followed."""
        held, self._held_head = self._held_head, None
        self.head_next = False
        if held is not None and self.connected:
            self._write_soon(held)

    def _write_soon(self, data: Any) -> int:
        self._task_writing = True
        try:
            written: int = super().write_soon(data)
        finally:
            self._task_writing = False
            # Only the loop removes data from the buffer: anything still there now is the
            # loop's to send (the socket was full). It may have looked while this thread
            # was writing, so wake it to look again.
            if self.total_outbufs_len:
                self.server.pull_trigger()
        return written

    def _flush_outbufs_below_high_watermark(self) -> None:
        # Past the high watermark the worker waits for the loop to drain the buffer, so
        # the loop must poll for writing meanwhile.
        writing, self._task_writing = self._task_writing, False
        try:
            super()._flush_outbufs_below_high_watermark()  # type: ignore[misc]  # not in stubs
        finally:
            self._task_writing = writing

#!/usr/bin/env python3
"""A paced Anthropic-style SSE upstream for latency benchmarks (stdlib only).

``POST /v1/messages?events=N&interval_ms=M`` answers a chunked ``text/event-stream`` in
the shape of Anthropic's Messages stream: ``message_start`` and ``content_block_start`` at
once, then *N* ``content_block_delta`` events *M* ms apart, then ``content_block_stop``,
``message_delta`` (with usage) and ``message_stop``. Every event's JSON carries
``"sent_ns"``: the sender's ``time.time_ns()`` taken just before the event's bytes are
written, so a client on the same machine can compute each event's delay as
*receive time - sent_ns*. ``GET /healthz`` answers ``{"status":"ok"}``
(the proxy's readiness probe asks for it).

One thread runs everything with ``selectors`` and a timer heap, so hundreds of open streams
cost no threads. Throughput is not its job (nginx serves the throughput runs); how late it is
does not matter either, as each event is stamped when it is actually sent. Connections are
HTTP/1.1 keep-alive and set TCP_NODELAY (without it a small event may wait for an ACK).

Run: ``python bench/paced_upstream.py [--port 0]``; it prints ``PORT <n>`` once listening and
runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

MODEL = "claude-sonnet-4-5-20250929"
# The usage the final message_delta reports: what the proxy must record for each stream.
USAGE = {"input_tokens": 25, "cache_creation_input_tokens": 1000,
         "cache_read_input_tokens": 2000, "output_tokens": 42}
MAX_EVENTS = 100_000
MAX_HEADER_BYTES = 65_536


def _event(name: str, payload: dict[str, object]) -> bytes:
    payload["sent_ns"] = time.time_ns()
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n".encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def message_start() -> bytes:
    message: dict[str, object] = {
        "id": "msg_paced", "type": "message", "role": "assistant", "model": MODEL,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {**USAGE, "output_tokens": 1}}
    start = _event("message_start", {"type": "message_start", "message": message})
    return start + _event("content_block_start", {
        "type": "content_block_start", "index": 0,
        "content_block": {"type": "text", "text": ""}})


def text_delta(index: int) -> bytes:
    return _event("content_block_delta", {
        "type": "content_block_delta", "index": 0,
        "delta": {"type": "text_delta", "text": f" token{index}"}})


def message_end() -> bytes:
    stop = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    delta = _event("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": USAGE})
    return stop + delta + _event("message_stop", {"type": "message_stop"})


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
               b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
HEALTH_BODY = b'{"status":"ok"}'


def _plain(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class Conn:
    """One client connection: its unread bytes and the stream it is being sent, if any."""

    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    streaming: bool = False
    sent_events: int = 0
    total_events: int = 0
    interval_s: float = 0.0
    start: float = 0.0


class PacedServer:
    """The selector loop: accept, parse requests, and send events when they are due."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, None)
        self.timers: list[tuple[float, int, Conn]] = []
        self._seq = itertools.count()

    def serve(self) -> None:
        while True:
            timeout = None
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    self._accept()
                else:
                    self._readable(key.data)
            self._run_due_timers()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking on purpose: recv runs only once select says readable, and events are
        # small enough that sendall does not wait on a reader that keeps up.
        sock.setblocking(True)
        self.sel.register(sock, selectors.EVENT_READ, Conn(sock))

    def _close(self, conn: Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        conn.streaming = False
        conn.sock.close()

    def _readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        while not conn.streaming and self._handle_request(conn):
            pass

    def _handle_request(self, conn: Conn) -> bool:
        """Start answering the first complete request in the buffer; False if none yet."""
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbuf) > MAX_HEADER_BYTES:
                self._close(conn)
            return False
        head = bytes(conn.inbuf[:end]).decode("latin-1").split("\r\n")
        method, target = [*head[0].split(" "), "", ""][:2]
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if len(conn.inbuf) < end + 4 + length:
            return False
        del conn.inbuf[:end + 4 + length]
        url = urlsplit(target)
        if method == "GET" and url.path in ("/healthz", "/"):
            self._send(conn, _plain("200 OK", HEALTH_BODY))
            return True
        if method != "POST" or not url.path.endswith("/messages"):
            self._send(conn, _plain("404 Not Found", b'{"error":"not found"}'))
            return True
        query = parse_qs(url.query)
        conn.total_events = min(MAX_EVENTS, int(query.get("events", ["20"])[0]))
        conn.interval_s = float(query.get("interval_ms", ["10"])[0]) / 1000
        conn.sent_events = 0
        conn.streaming = True
        conn.start = time.monotonic()
        self._send(conn, STREAM_HEAD + _chunk(message_start()))
        self._schedule(conn)
        return False

    def _schedule(self, conn: Conn) -> None:
        due = conn.start + (conn.sent_events + 1) * conn.interval_s
        heapq.heappush(self.timers, (due, next(self._seq), conn))

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, conn = heapq.heappop(self.timers)
            if not conn.streaming:
                continue
            if conn.sent_events < conn.total_events:
                conn.sent_events += 1
                self._send(conn, _chunk(text_delta(conn.sent_events)))
                if conn.streaming:
                    self._schedule(conn)
            else:
                conn.streaming = False
                self._send(conn, _chunk(message_end()) + b"0\r\n\r\n")
                # A pipelined next request may already be buffered.
                while not conn.streaming and conn.inbuf and self._handle_request(conn):
                    pass

    def _send(self, conn: Conn, data: bytes) -> None:
        try:
            conn.sock.sendall(data)
        except OSError:
            self._close(conn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(4096)
    listener.setblocking(False)
    server = PacedServer(listener)

    def stop(_signum: int, _frame: object) -> None:
        # Raise: the interrupted select() would otherwise be retried (PEP 475).
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    try:
        server.serve()
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

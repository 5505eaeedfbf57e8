#!/usr/bin/env python3
"""A streaming client that measures time to first byte and per-event delay (stdlib only).

It holds ``--slots`` keep-alive connections in one thread with ``selectors`` (so one process
can keep 500 streams open) and runs ``--streams`` streams one after another on each. A
stream is ``POST <url>?events=N&interval_ms=M`` with an Anthropic Messages body; the
upstream is ``bench/paced_upstream.py`` (directly or through the proxy), which stamps each
event with ``"sent_ns"``. For every event the client takes ``time.time_ns()`` right after the
``recv`` that completed it: *delay = receive - sent_ns*. *TTFB* is from the request's
``sendall`` to the first response byte. Slots start spread over ``--ramp-s`` seconds, as real
clients are not synchronised.

Run: ``python bench/sse_client.py --url http://127.0.0.1:PORT/v1/messages [options]``; it
prints one JSON object: stream and event counts, errors, and the p50/p99/max of delays and
TTFBs in milliseconds.
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SENT_NS = re.compile(rb'"sent_ns":(\d+)')
REQUEST_BODY = json.dumps({
    "model": "claude-sonnet-4-5-20250929", "max_tokens": 1024, "stream": True,
    "messages": [{"role": "user", "content": "Write a haiku about benchmarks."}],
}, separators=(",", ":")).encode()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of *values*; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


class ResponseReader:
    """Incremental HTTP/1.1 response parser: status, headers, chunked or sized body.

    :meth:`feed` returns the complete SSE lines the new bytes finished; ``done`` turns True
    at the end of the body.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.status: int | None = None
        self.chunked = False
        self.remaining: int | None = None  # bytes left in the current chunk / sized body
        self.state = "size"  # chunked decoding: size, data, crlf, trailer
        self.done = False
        self.close = False  # the server will close the connection after this response
        self.lines = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        if self.status is None and not self._parse_head():
            return []
        body = self._chunked_body() if self.chunked else self._sized_body()
        self.lines += body
        *complete, rest = self.lines.split(b"\n")
        self.lines = bytearray(rest)
        return [bytes(line) for line in complete]

    def _parse_head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        self.status = int(head[0].split(" ")[1])
        for line in head[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "transfer-encoding" and "chunked" in value:
                self.chunked = True
            elif name == "content-length":
                self.remaining = int(value)
            elif name == "connection" and "close" in value:
                self.close = True
        if not self.chunked and self.remaining is None:
            raise ValueError("response has neither chunked encoding nor a length")
        return True

    def _sized_body(self) -> bytes:
        assert self.remaining is not None
        take = bytes(self.buf[:self.remaining])
        del self.buf[:len(take)]
        self.remaining -= len(take)
        self.done = self.remaining == 0
        return take

    def _chunked_body(self) -> bytes:
        out = bytearray()
        while not self.done:
            if self.state == "size":
                eol = self.buf.find(b"\r\n")
                if eol < 0:
                    break
                size = int(bytes(self.buf[:eol]).split(b";")[0], 16)
                del self.buf[:eol + 2]
                self.remaining = size
                self.state = "data" if size else "trailer"
            elif self.state == "data":
                assert self.remaining is not None
                if not self.buf:
                    break
                take = self.buf[:self.remaining]
                out += take
                del self.buf[:len(take)]
                self.remaining -= len(take)
                if self.remaining == 0:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(self.buf) < 2:
                    break
                del self.buf[:2]
                self.state = "size"
            else:  # trailer section: lines up to an empty one
                eol = self.buf.find(b"\r\n")
                if eol < 0:
                    break
                self.done = eol == 0
                del self.buf[:eol + 2]
        return bytes(out)


@dataclass
class Slot:
    """One client connection and the stream it is running."""

    index: int
    streams_left: int
    sock: socket.socket | None = None
    reader: ResponseReader = field(default_factory=ResponseReader)
    sent_at: int = 0
    got_first_byte: bool = False
    events: int = 0


@dataclass
class Results:
    delays_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    streams_ok: int = 0
    streams_failed: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self, expected_events: int) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float | None]:
            return {"p50": percentile(values, 50), "p99": percentile(values, 99),
                    "max": max(values) if values else None}

        return {"streams_ok": self.streams_ok, "streams_failed": self.streams_failed,
                "events": len(self.delays_ms), "expected_events": expected_events,
                "delay_ms": stats(self.delays_ms), "ttfb_ms": stats(self.ttfb_ms),
                "errors": self.errors[:10]}


class StreamClient:
    def __init__(self, url: str, events: int, interval_ms: float, timeout_s: float) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        path = parts.path or "/v1/messages"
        self.request = (
            f"POST {path}?events={events}&interval_ms={interval_ms:g} HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\nContent-Type: application/json\r\n"
            "Accept: text/event-stream\r\nanthropic-version: 2023-06-01\r\n"
            "x-api-key: sk-ant-bench\r\nUser-Agent: agent-cli-proxy-bench/1\r\n"
            f"Content-Length: {len(REQUEST_BODY)}\r\n\r\n"
        ).encode() + REQUEST_BODY
        # message_start, content_block_start, the deltas, content_block_stop,
        # message_delta, message_stop
        self.events_per_stream = events + 5
        self.timeout_s = timeout_s
        self.sel = selectors.DefaultSelector()
        self.results = Results()

    def run(self, slots: int, streams: int, ramp_s: float) -> Results:
        starts = [(i * ramp_s / max(1, slots), i) for i in range(slots)]
        heapq.heapify(starts)
        t0 = time.monotonic()
        deadline = t0 + ramp_s + self.timeout_s
        open_slots = 0
        all_slots = [Slot(i, streams) for i in range(slots)]
        while starts or open_slots:
            now = time.monotonic()
            if now > deadline:
                self.results.errors.append(f"timed out with {open_slots} streams open")
                break
            while starts and t0 + starts[0][0] <= now:
                _, i = heapq.heappop(starts)
                if self._open(all_slots[i]):
                    open_slots += 1
            timeout = (t0 + starts[0][0] - now) if starts else 1.0
            for key, _ in self.sel.select(max(0.0, timeout)):
                if not self._readable(key.data):
                    open_slots -= 1
        for slot in all_slots:
            if slot.sock is not None:
                slot.sock.close()
        return self.results

    def _open(self, slot: Slot) -> bool:
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout_s)
        except OSError as exc:
            self._fail(slot, f"connect: {exc}")
            return False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        slot.sock = sock
        self.sel.register(sock, selectors.EVENT_READ, slot)
        return self._send(slot)

    def _send(self, slot: Slot) -> bool:
        assert slot.sock is not None
        slot.reader = ResponseReader()
        slot.got_first_byte = False
        slot.events = 0
        slot.sent_at = time.perf_counter_ns()
        try:
            slot.sock.sendall(self.request)
        except OSError as exc:
            self._fail(slot, f"send: {exc}")
            return False
        return True

    def _readable(self, slot: Slot) -> bool:
        """Handle new bytes on *slot*; False once the slot is finished (or failed)."""
        assert slot.sock is not None
        try:
            data = slot.sock.recv(65536)
        except OSError as exc:
            return self._fail(slot, f"recv: {exc}")
        received_ns, received_perf = time.time_ns(), time.perf_counter_ns()
        if not data:
            return self._fail(slot, "connection closed mid-response")
        if not slot.got_first_byte:
            slot.got_first_byte = True
            self.results.ttfb_ms.append((received_perf - slot.sent_at) / 1e6)
        try:
            lines = slot.reader.feed(data)
        except ValueError as exc:
            return self._fail(slot, str(exc))
        for line in lines:
            match = SENT_NS.search(line)
            if match:
                slot.events += 1
                self.results.delays_ms.append((received_ns - int(match.group(1))) / 1e6)
        if not slot.reader.done:
            return True
        if slot.reader.status != 200 or slot.events != self.events_per_stream:
            return self._fail(slot, f"status {slot.reader.status}, {slot.events} events "
                                    f"of {self.events_per_stream}")
        self.results.streams_ok += 1
        slot.streams_left -= 1
        if slot.streams_left == 0:
            self._close(slot)
            return False
        if slot.reader.close:
            # waitress ends every response without a length (all streams) with
            # "Connection: close", so the next stream needs a new connection.
            self._close(slot)
            return self._open(slot)
        return self._send(slot)

    def _fail(self, slot: Slot, message: str) -> bool:
        self.results.streams_failed += slot.streams_left
        self.results.errors.append(f"slot {slot.index}: {message}")
        slot.streams_left = 0
        self._close(slot)
        return False

    def _close(self, slot: Slot) -> None:
        if slot.sock is not None:
            self.sel.unregister(slot.sock)
            slot.sock.close()
            slot.sock = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://host:port/v1/messages")
    parser.add_argument("--slots", type=int, default=1, help="concurrent connections")
    parser.add_argument("--streams", type=int, default=10, help="streams per connection")
    parser.add_argument("--events", type=int, default=20, help="text deltas per stream")
    parser.add_argument("--interval-ms", type=float, default=10.0, help="gap between deltas")
    parser.add_argument("--ramp-s", type=float, default=0.0, help="spread of slot starts")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="whole-run limit")
    args = parser.parse_args(argv)
    client = StreamClient(args.url, args.events, args.interval_ms, args.timeout_s)
    results = client.run(args.slots, args.streams, args.ramp_s)
    expected = args.slots * args.streams * client.events_per_stream
    print(json.dumps(results.summary(expected)))
    return 0 if results.streams_failed == 0 and not results.errors else 1


if __name__ == "__main__":
    sys.exit(main())

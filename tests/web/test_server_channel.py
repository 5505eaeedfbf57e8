"""How the proxy's waitress connections behave on the wire (agent_cli_proxy.server_channel):
streams keep an HTTP/1.1 connection open, a broken stream still closes it, and the main
loop leaves writing to the worker thread that is sending."""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from agent_cli_proxy import server_channel
from tests import wire
from tests.conftest import RunningProxy
from tests.fake_upstream import FakeUpstream, Script

STREAM = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True,
                     "messages": [{"role": "user", "content": "hi"}]}).encode()
PLAIN = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 100,
                    "messages": [{"role": "user", "content": "hi"}]}).encode()


def connect(proxy: RunningProxy) -> http.client.HTTPConnection:
    url = urlsplit(proxy.url)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=10)


def post(conn: http.client.HTTPConnection, body: bytes,
         headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request("POST", "/v1/messages", body=body,
                 headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    return resp, resp.read()


def test_streams_keep_the_connection_open_for_the_next_call(proxy: RunningProxy) -> None:
    canned = wire.messages_stream()
    conn = connect(proxy)
    try:
        resp, body = post(conn, STREAM)
        assert resp.status == 200
        assert resp.getheader("Transfer-Encoding") == "chunked"
        assert resp.getheader("Connection") is None
        assert body == canned.body
        sock = conn.sock
        assert sock is not None  # http.client closes it when the server says close
        # The same socket serves a second stream and then a call with a Content-Length.
        resp, body = post(conn, STREAM)
        assert body == canned.body
        resp, body = post(conn, PLAIN)
        assert resp.status == 200 and json.loads(body)["type"] == "message"
        assert conn.sock is sock
    finally:
        conn.close()
    rows = proxy.final_rows(3)
    assert [r["lifecycle_status"] for r in rows] == ["completed"] * 3
    assert [r["completion_tokens"] for r in rows[:2]] == [canned.usage.completion_tokens] * 2


def test_a_client_asking_to_close_gets_a_closed_connection(proxy: RunningProxy) -> None:
    conn = connect(proxy)
    try:
        resp, body = post(conn, STREAM, {"Connection": "close"})
        assert resp.status == 200 and body == wire.messages_stream().body
        assert resp.getheader("Connection") == "close"
        assert conn.sock is None
    finally:
        conn.close()


def test_http_1_0_streams_still_end_with_the_connection(proxy: RunningProxy) -> None:
    url = urlsplit(proxy.url)
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(STREAM), STREAM))
        reply = b""
        while data := sock.recv(65536):  # ends: the proxy closes the connection
            reply += data
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b"transfer-encoding" not in head.lower()
    assert body == wire.messages_stream().body


def test_a_stream_broken_mid_way_still_cuts_the_connection(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    canned = wire.messages_stream()
    upstream.script(Script(content_type=canned.content_type, pieces=canned.pieces,
                           drop_after=2))
    url = urlsplit(proxy.url)
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(STREAM), STREAM))
        reply = b""
        try:
            while data := sock.recv(65536):  # ends only because the proxy closes
                reply += data
        except ConnectionResetError:
            pass
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    # No last chunk: the client can tell the stream is incomplete.
    assert not body.endswith(b"0\r\n\r\n")
    (row,) = proxy.final_rows()
    assert row["lifecycle_status"] == "error"


@pytest.fixture
def write_rounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How often the main loop ran handle_write on a connection while one of its requests
    was being served (counted per call into the list)."""
    rounds = [0]
    original = server_channel.ProxyChannel.handle_write

    def counting(self: Any) -> None:
        if self.requests:
            rounds[0] += 1
        original(self)

    monkeypatch.setattr(server_channel.ProxyChannel, "handle_write", counting)
    yield rounds


def test_the_main_loop_leaves_sending_to_the_worker(
        proxy: RunningProxy, write_rounds: list[int]) -> None:
    # Before server_channel, the loop polled the (always writable) socket and tried the
    # locked out-buffer about 200 times per call while the worker was sending.
    conn = connect(proxy)
    try:
        for body in (STREAM, PLAIN) * 10:
            resp, _ = post(conn, body)
            assert resp.status == 200
    finally:
        conn.close()
    assert write_rounds[0] <= 5


@pytest.fixture
def channel_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every piece the proxy's channels hand to waitress to send."""
    writes: list[bytes] = []
    original = server_channel.ProxyChannel._write_soon

    def recording(self: Any, data: Any) -> int:
        writes.append(bytes(data))
        return original(self, data)

    monkeypatch.setattr(server_channel.ProxyChannel, "_write_soon", recording)
    yield writes


def test_an_answer_s_head_and_body_go_out_together(
        proxy: RunningProxy, channel_writes: list[bytes]) -> None:
    conn = connect(proxy)
    try:
        resp, body = post(conn, PLAIN)
    finally:
        conn.close()
    assert resp.status == 200
    (write,) = channel_writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b"\r\n\r\n" + body)


@pytest.mark.parametrize("method, script", [
    ("HEAD", Script(pieces=[b'{"data":[]}'], framing="length")),
    ("POST", Script(status=204, pieces=[], framing="length")),
    ("POST", Script(pieces=[], framing="chunked")),
])
def test_answers_without_a_body_still_get_their_head(
        proxy: RunningProxy, upstream: FakeUpstream, method: str, script: Script) -> None:
    upstream.script(script)
    conn = connect(proxy)
    try:
        conn.request(method, "/v1/models", body=b"{}" if method == "POST" else None)
        resp = conn.getresponse()
        assert resp.read() == b""
        assert resp.status == script.status
        # The connection is still good for the next call (waitress 2.1 closes it, without
        # saying so, after a HEAD whose Content-Length it did not write).
        if method == "HEAD":
            conn.close()
        conn.request("GET", "/v1/models")
        again = conn.getresponse()
        assert again.status == 200 and again.read()
    finally:
        conn.close()


def _answer(replies: Any) -> tuple[bytes, Any]:
    """One answer read off *replies*: its status line and its JSON body."""
    head = [replies.readline()]
    while head[-1] not in (b"\r\n", b""):
        head.append(replies.readline())
    length = next((int(line.split(b":")[1]) for line in head
                   if line.lower().startswith(b"content-length:")), 0)
    return head[0], json.loads(replies.read(length) or b"null")


def test_a_connection_s_waiting_requests_are_served_by_the_same_thread(
        proxy: RunningProxy) -> None:
    """Pipelined requests (or the next call arriving while the last is finalized) go to
    the thread that served the one before, at most REQUESTS_IN_A_ROW in a row, in order."""
    threads: list[int] = []
    health = proxy.app.endpoints["health"]

    def recording(services: Any, request: Any) -> Any:
        threads.append(threading.get_ident())
        return health(services, request)

    proxy.app.endpoints["health"] = recording
    dispatcher = proxy.server.task_dispatcher
    queue = dispatcher.add_task
    queued: list[object] = []

    def counting(task: Any) -> None:
        queued.append(task)
        queue(task)

    dispatcher.add_task = counting
    url = urlsplit(proxy.url)
    count = 3 * server_channel.REQUESTS_IN_A_ROW
    request = f"GET /health HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request * count)
        replies = sock.makefile("rb")
        for _ in range(count):  # every answer, in order, from the one stream
            assert _answer(replies) == (b"HTTP/1.1 200 OK\r\n", {"status": "ok"})
    runs = [len(list(group)) for _, group in itertools.groupby(threads)]
    assert sum(runs) == count
    # Some ran on in their thread (waitress alone: a switch for each). Every
    # REQUESTS_IN_A_ROW the connection is queued again, behind any other; with nothing
    # else queued, the thread that queued it may well take it back.
    assert len(runs) < count
    # What the threads were woken for: waitress alone queues the connection once per
    # request; here once when it first has one, once per run.
    assert len(queued) <= count // 2


@pytest.fixture
def loop_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Requests the main loop read from a socket (its handle_read calls that got data)."""
    reads = [0]
    original = server_channel.ProxyChannel.handle_read

    def counting(self: Any) -> None:
        before = (len(self.requests), self.request)
        original(self)
        if (len(self.requests), self.request) != before:
            reads[0] += 1

    monkeypatch.setattr(server_channel.ProxyChannel, "handle_read", counting)
    yield reads


def _health_calls(proxy: RunningProxy, count: int, pause_s: float = 0.0) -> None:
    url = urlsplit(proxy.url)
    request = f"GET /health HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        replies = sock.makefile("rb")
        for _ in range(count):
            sock.sendall(request)
            assert _answer(replies) == (b"HTTP/1.1 200 OK\r\n", {"status": "ok"})
            if pause_s:
                threading.Event().wait(pause_s)  # a client that thinks between calls


def test_a_call_right_after_the_last_is_read_by_the_thread_that_answered(
        proxy: RunningProxy, loop_reads: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    # One client calling in a loop: after the first request, the thread that answered
    # reads each next one itself, and the loop stays asleep. (A longer wait than 2 ms:
    # a loaded test machine may take longer to send the next call.)
    monkeypatch.setattr(server_channel, "NEXT_REQUEST_WAIT_S", 1.0)
    _health_calls(proxy, 2 * server_channel.REQUESTS_IN_A_ROW)
    # The first request, and one per REQUESTS_IN_A_ROW at most (the connection is
    # queued again then, and its thread may be another one, or read nothing yet).
    assert loop_reads[0] <= 4


def test_a_call_after_the_wait_is_read_by_the_main_loop(
        proxy: RunningProxy, loop_reads: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_channel, "NEXT_REQUEST_WAIT_S", 0.001)
    _health_calls(proxy, 3, pause_s=0.05)
    assert loop_reads[0] == 3


def test_no_waiting_for_a_next_call_while_the_server_is_busy(
        proxy: RunningProxy, loop_reads: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_channel, "QUIET_THREADS", 0)
    _health_calls(proxy, 4, pause_s=0.01)
    assert loop_reads[0] == 4


def test_a_100_continue_right_after_an_answer_is_sent_once(proxy: RunningProxy) -> None:
    # The thread that answered reads the next head itself and sends the 100 Continue while
    # the connection has no request queued; the main loop (kept busy by another client)
    # must not send the same bytes too (it corrupted the out-buffer: answers lost).
    url = urlsplit(proxy.url)
    stop = threading.Event()

    def busy() -> None:
        with socket.create_connection((url.hostname, url.port), timeout=10) as other:
            replies = other.makefile("rb")
            while not stop.is_set():
                other.sendall(f"GET /health HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
                _answer(replies)

    pinger = threading.Thread(target=busy, daemon=True)
    pinger.start()
    try:
        with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
            replies = sock.makefile("rb")
            for _ in range(150):
                sock.sendall(f"GET /health HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
                assert _answer(replies)[0].startswith(b"HTTP/1.1 200 ")
                sock.sendall(f"POST /health HTTP/1.1\r\nHost: {url.netloc}\r\n"
                             "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n".encode())
                assert replies.readline().startswith(b"HTTP/1.1 100 ")
                assert replies.readline() == b"\r\n"
                sock.sendall(b"hello")
                assert _answer(replies)[0].startswith(b"HTTP/1.1 405 ")  # GET only
    finally:
        stop.set()
        pinger.join(timeout=10)


def test_a_hang_up_during_a_call_the_thread_read_itself_is_noticed_soon(
        proxy: RunningProxy) -> None:
    # The main loop does not watch a socket while the thread waits on it, and is not
    # woken when the thread gets a request: it looks again within LOOP_TIMEOUT_S (its
    # 1 s default would make this late about half the time).
    assert proxy.server.adj.asyncore_loop_timeout == server_channel.LOOP_TIMEOUT_S
    health = proxy.app.endpoints["health"]
    calls: list[float] = []
    noticed: list[float] = []

    def waiting_for_a_hang_up(services: Any, request: Any) -> Any:
        calls.append(time.monotonic())
        gone = request.environ["waitress.client_disconnected"]
        if len(calls) == 2:
            while not gone() and time.monotonic() - calls[-1] < 3:
                threading.Event().wait(0.005)
            noticed.append(time.monotonic())
        return health(services, request)

    proxy.app.endpoints["health"] = waiting_for_a_hang_up
    url = urlsplit(proxy.url)
    request = f"GET /health HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        replies = sock.makefile("rb")
        sock.sendall(request)
        assert _answer(replies)[0].startswith(b"HTTP/1.1 200 ")
        sock.sendall(request)  # at once: the thread that answered reads it
        while len(calls) < 2:
            threading.Event().wait(0.005)
        replies.close()
    hung_up = time.monotonic()
    while not noticed:
        threading.Event().wait(0.005)
    assert noticed[0] - hung_up < server_channel.LOOP_TIMEOUT_S + 0.25

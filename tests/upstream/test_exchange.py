"""A request over a pooled connection (upstream.exchange) is the one urllib3 would send,
byte for byte, its answer reads the same and its failures end the same; anything unusual
is left to urllib3."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from agent_cli_proxy.upstream import client as client_module
from agent_cli_proxy.upstream import exchange
from agent_cli_proxy.upstream.client import Timeouts, UpstreamClient
from agent_cli_proxy.upstream.relay import iter_raw

TIMEOUTS = Timeouts(connect=5, read=5)
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Trace: a\r\nX-Trace: b\r\n\r\n" \
          b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


class Recorder:
    """A keep-alive loopback upstream that records each request's bytes and answers
    each with *answer* (or the next of *later* answers, then *answer* again)."""

    def __init__(self, answer: bytes, *later: bytes) -> None:
        self.answer = answer
        self.later = list(later)
        self.requests: list[bytes] = []
        self.hung_up = threading.Event()  # a client closed its connection
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        self.hung_up.set()
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(data) < length:
                    data += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + data[:length])
                data = data[length:]
                conn.sendall(self.later.pop(0) if len(self.requests) > 1 and self.later
                             else self.answer)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    yield rec
    rec.server.close()


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each send went through the pooled fast path (or failed there)."""
    calls: list[bool] = []
    original = exchange.send_on_pooled

    def spy(*args: Any, **kwargs: Any) -> Any:
        try:
            answer = original(*args, **kwargs)
        except Exception:
            calls.append(True)  # it sent the request, and failed as urlopen would
            raise
        calls.append(answer is not None)
        return answer

    monkeypatch.setattr(exchange, "send_on_pooled", spy)
    return calls


def send_and_read(client: UpstreamClient, url: str, headers: list[tuple[str, str]],
                  body: bytes | None, method: str = "POST") -> tuple[int, list[tuple[str, str]],
                                                                   bytes]:
    response = client.send(method, url, headers, body, TIMEOUTS)
    data = b"".join(iter_raw(response))  # as the relay reads it
    response.release_conn()
    return response.status, list(response.headers.items()), data


HEADER_SETS = [
    pytest.param([("Content-Type", "application/json"), ("User-Agent", "OpenAI/Python 1.99.0"),
                  ("Authorization", "Bearer k")], b'{"model":"m"}', id="typical"),
    pytest.param([("Content-Type", "application/json")], b"{}", id="no-user-agent"),
    pytest.param([("X-A", "1"), ("x-b", "2"), ("x-a", "3"), ("User-Agent", "t")], b"{}",
                 id="repeated-names"),
    pytest.param([("Accept-Encoding", "gzip"), ("User-Agent", "t")], b"{}", id="accept-encoding"),
    pytest.param([("User-Agent", "t"), ("X-Name", "café")], b"{}", id="latin-1-value"),
    pytest.param([("User-Agent", "t")], None, id="post-without-body"),
    pytest.param([("User-Agent", urllib3.util.SKIP_HEADER), ("X-A", "1")], b"x", id="skip-ua"),
]


@pytest.mark.parametrize("method", ["POST", "PATCH", "MKCOL", "PURGE"])
def test_a_bodiless_request_is_framed_as_urllib3_frames_it(
        recorder: Recorder, fast_calls: list[bool], method: str) -> None:
    client = UpstreamClient(maxsize=2)
    try:
        for _ in range(2):
            send_and_read(client, recorder.url + "/v1/x", [("User-Agent", "t")], None,
                          method=method)
    finally:
        client.close()
    assert fast_calls == [False, True]
    assert recorder.requests[0] == recorder.requests[1]
    assert b"\r\nContent-Length: 0\r\n" in recorder.requests[1]


@pytest.mark.parametrize(("headers", "body"), HEADER_SETS)
def test_the_pooled_request_is_the_one_urllib3_sends(
        recorder: Recorder, fast_calls: list[bool], headers: list[tuple[str, str]],
        body: bytes | None) -> None:
    client = UpstreamClient(maxsize=2)
    try:
        first = send_and_read(client, recorder.url + "/v1/x?a=1", headers, body)
        second = send_and_read(client, recorder.url + "/v1/x?a=1", headers, body)
    finally:
        client.close()
    assert fast_calls == [False, True]  # a new connection, then the pooled one
    assert recorder.requests[0] == recorder.requests[1]
    assert first == second == (200, [("Content-Length", "2")], b"ok")


def test_a_chunked_answer_reads_the_same(fast_calls: list[bool]) -> None:
    rec = Recorder(CHUNKED)
    client = UpstreamClient(maxsize=2)
    try:
        answers = [send_and_read(client, rec.url + "/v1/x", [("User-Agent", "t")], b"{}")
                   for _ in range(3)]
    finally:
        client.close()
        rec.server.close()
    assert fast_calls == [False, True, True]  # the connection stays open after each
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][2] == b"abcde"
    assert ("X-Trace", "a") in answers[0][1] and ("X-Trace", "b") in answers[0][1]


def test_an_idempotent_method_stays_with_urllib3(recorder: Recorder,
                                                  fast_calls: list[bool]) -> None:
    # urllib3 may send it again on a gateway status: its retry logic keeps it.
    client = UpstreamClient(maxsize=2)
    try:
        for _ in range(2):
            send_and_read(client, recorder.url + "/v1/models", [("User-Agent", "t")], None,
                          method="GET")
    finally:
        client.close()
    assert fast_calls == []


@pytest.mark.parametrize(("method", "target", "headers"), [
    ("POST", "/v1/x", [("X-A", "a\r\nX-Injected: 1"), ("User-Agent", "t")]),
    ("POST", "/v1/x", [("Bad Name", "1"), ("User-Agent", "t")]),
    ("POST", "/v1/x", [("X-A\nX-Injected", "1"), ("User-Agent", "t")]),
    ("PO(ST", "/v1/x", [("User-Agent", "t")]),
    ("POST", "/v1/x", [("X-Price", "€"), ("User-Agent", "t")]),
    ("POST", "/v1/x", [("Transfer-Encoding", "chunked"), ("User-Agent", "t")]),
    ("POST", "/v1/x", [("X-A", urllib3.util.SKIP_HEADER), ("User-Agent", "t")]),
    ("POST", "/v1/x", [("X-A", "1")]),  # urllib3 would add its own User-Agent
    ("POST", "/v1/a b", [("User-Agent", "t")]),
    ("POST", "/v1/é", [("User-Agent", "t")]),
])
def test_what_needs_urllib3s_checks_is_left_to_it(method: str, target: str,
                                                  headers: list[tuple[str, str]]) -> None:
    assert exchange.request_head(method, target, "h:1", headers, b"{}") is None


def test_a_refused_header_still_fails_as_before(recorder: Recorder,
                                                fast_calls: list[bool]) -> None:
    client = UpstreamClient(maxsize=2)
    try:
        send_and_read(client, recorder.url + "/v1/x", [("User-Agent", "t")], b"{}")
        with pytest.raises(client_module.UpstreamError) as caught:
            client.send("POST", recorder.url + "/v1/x",
                        [("User-Agent", "t"), ("X-A", "a\r\nX-Injected: 1")], b"{}", TIMEOUTS)
    finally:
        client.close()
    assert fast_calls == [False, False]
    assert caught.value.message == ("could not send the request upstream: "
                                    "a request header cannot be sent as it is")
    assert len(recorder.requests) == 1


def test_host_header_is_http_clients() -> None:
    class Conn:
        default_port = 80

        def __init__(self, host: str, port: int) -> None:
            self.host, self.port = host, port

    assert exchange._host_header(Conn("127.0.0.1", 80)) == "127.0.0.1"
    assert exchange._host_header(Conn("127.0.0.1", 8317)) == "127.0.0.1:8317"
    assert exchange._host_header(Conn("::1", 8317)) == "[::1]:8317"
    assert exchange._host_header(Conn("bücher.example", 80)) is None  # IDNA: urllib3's


def test_an_answer_urllib3_refuses_drops_the_connection_at_once(fast_calls: list[bool]) -> None:
    # Two lengths that disagree: urllib3's response refuses them. The connection must be
    # closed (the upstream sees it go) and its pool slot given back, as urlopen does.
    rec = Recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                   b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")
    client = UpstreamClient(maxsize=2)
    try:
        send_and_read(client, rec.url + "/v1/x", [("User-Agent", "t")], b"{}")
        with pytest.raises(client_module.UpstreamError) as caught:
            client.send("POST", rec.url + "/v1/x", [("User-Agent", "t")], b"{}", TIMEOUTS)
        assert caught.value.kind == "protocol"
        assert rec.hung_up.wait(10)
        pool = client._pool.connection_from_url(rec.url)
        assert pool.pool is not None and pool.pool.qsize() == 2  # every slot is back
        assert send_and_read(client, rec.url + "/v1/x", [("User-Agent", "t")], b"{}")[0] == 200
    finally:
        client.close()
        rec.server.close()
    assert fast_calls == [False, True, False]  # the last one on a new connection

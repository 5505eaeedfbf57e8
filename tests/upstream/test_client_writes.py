"""The upstream connection writes a small request (head and body) in one piece."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from agent_cli_proxy.upstream import client


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A loopback server that reads one request (head + Content-Length body)."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            received.append(head + b"\r\n\r\n" + body)
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server, received
    thread.join(5)
    server.close()


def writes_of(body: bytes, listener: tuple[socket.socket, list[bytes]],
              monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    server, received = listener
    sent: list[bytes] = []
    original = http.client.HTTPConnection.send

    def recording(self: http.client.HTTPConnection, data: bytes) -> None:
        sent.append(bytes(data))
        original(self, data)

    monkeypatch.setattr(http.client.HTTPConnection, "send", recording)
    conn = client._TrackedHTTPConnection("127.0.0.1", server.getsockname()[1])
    try:
        conn.request("POST", "/v1/messages", body=body,
                     headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 204
    finally:
        conn.close()
    assert received == [b"".join(sent)]  # the upstream got exactly what was written
    return sent


def test_a_small_request_is_one_write(listener: tuple[socket.socket, list[bytes]],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"model":"m","messages":[]}'
    (write,) = writes_of(body, listener, monkeypatch)
    assert write.startswith(b"POST /v1/messages HTTP/1.1\r\n")
    assert write.endswith(b"\r\n\r\n" + body)


def test_a_large_body_goes_on_its_own(listener: tuple[socket.socket, list[bytes]],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"x" * (client.COALESCE_BODY_BYTES + 1)
    head, rest = writes_of(body, listener, monkeypatch)
    assert head.endswith(b"\r\n\r\n") and rest == body

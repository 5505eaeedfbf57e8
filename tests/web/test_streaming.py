"""Streaming: every piece reaches the client as it arrives; hang-ups and failures recorded."""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import threading
from urllib.parse import urlsplit

import pytest

from tests import wire
from tests.conftest import RunningProxy, start_proxy, wait_until
from tests.fake_upstream import FakeUpstream, Script

STREAM_REQUEST = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True,
                             "messages": [{"role": "user", "content": "hi"}]}).encode()


def open_stream(proxy: RunningProxy, body: bytes = STREAM_REQUEST,
                path: str = "/v1/messages") -> tuple[http.client.HTTPConnection,
                                                     http.client.HTTPResponse]:
    url = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    conn.raw_socket = conn.sock  # type: ignore[attr-defined]  # getresponse may drop it
    return conn, conn.getresponse()


def read_until(resp: http.client.HTTPResponse, expected: bytes) -> bytes:
    """Read what has arrived until *expected* is a prefix; blocks (and times out) if the
    proxy holds bytes back."""
    got = b""
    while len(got) < len(expected):
        data = resp.read1(65536)
        assert data, "stream ended early"
        got += data
    assert got == expected
    return got


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_each_piece_reaches_the_client_while_upstream_is_still_sending(
        proxy: RunningProxy, upstream: FakeUpstream, framing: str) -> None:
    canned = wire.messages_stream()
    script = upstream.script(Script(content_type=canned.content_type, pieces=canned.pieces,
                                    framing=framing, pause_after=1))
    conn, resp = open_stream(proxy)
    try:
        assert resp.status == 200
        # The upstream is paused after its first event; the client must already have it.
        first = read_until(resp, canned.pieces[0])
        assert wait_until(proxy.rows)[0]["lifecycle_status"] == "pending"
        script.release.set()
        rest = resp.read()
    finally:
        conn.close()
    assert first + rest == canned.body
    (row,) = proxy.final_rows()
    assert row["lifecycle_status"] == "completed"
    assert row["completion_tokens"] == 42


def test_a_locked_database_does_not_hold_back_the_answer(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    """Another process holding SQLite's write lock (a long CLI job) delays the call's
    rows, not its answer: the whole stream, its end included, reaches the client while
    the lock is held, and the row is complete once the lock is released."""
    canned = wire.messages_stream()
    upstream.script(Script(content_type=canned.content_type, pieces=canned.pieces))
    other = sqlite3.connect(proxy.settings.db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        conn, resp = open_stream(proxy)
        assert resp.status == 200
        assert resp.read() == canned.body
        conn.close()
        assert proxy.rows() == []  # nothing could be written yet
    finally:
        other.execute("ROLLBACK")
        other.close()
    (row,) = proxy.final_rows()
    assert (row["lifecycle_status"], row["total_tokens"]) == (
        "completed", canned.usage.total_tokens)


def test_client_hang_up_closes_upstream_and_records_aborted_with_tokens_so_far(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    canned = wire.messages_stream()
    script = upstream.script(Script(content_type=canned.content_type, pieces=canned.pieces,
                                    pause_after=2))
    conn, resp = open_stream(proxy)
    read_until(resp, canned.pieces[0] + canned.pieces[1])
    conn.raw_socket.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
    resp.close()
    conn.close()

    assert upstream.client_gone.wait(10), "the proxy kept the upstream stream open"
    (row,) = proxy.final_rows()
    script.release.set()
    assert row["lifecycle_status"] == "aborted"
    assert row["status"] == 499
    assert row["error_code"] == "aborted"
    assert row["incomplete"] == 1
    assert "client disconnected" in row["error_message"]
    # message_start already reported the input side and one output token.
    assert row["prompt_tokens"] == 25
    assert row["cache_read_tokens"] == 2000
    assert row["completion_tokens"] == 1


def test_upstream_dropping_mid_stream_cuts_the_client_and_records_error(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    canned = wire.messages_stream()
    upstream.script(Script(content_type=canned.content_type, pieces=canned.pieces,
                           drop_after=2))
    conn, resp = open_stream(proxy)
    try:
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()
    (row,) = proxy.final_rows()
    assert row["lifecycle_status"] == "error"
    assert row["error_code"] == "stream_error"
    assert row["status"] == 200  # what the client had already been told
    assert row["prompt_tokens"] == 25


def test_upstream_silent_before_headers_gives_504(make_settings,
                                                  upstream: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(upstream_timeout_ms=200,
                                      upstream_stream_first_byte_timeout_ms=200))
    gate = threading.Event()
    upstream.script(Script(pieces=[b"{}"], delay_headers=gate))
    try:
        conn, resp = open_stream(proxy)
        body = resp.read()
        conn.close()
        assert resp.status == 504
        assert json.loads(body)["error"]["code"] == "upstream_timeout"
        (row,) = proxy.final_rows()
        assert row["lifecycle_status"] == "error"
        assert row["error_code"] == "upstream_timeout"
        assert row["status"] == 504
        # The row names the limit that fired (a stream waits for its first byte).
        assert "UPSTREAM_STREAM_FIRST_BYTE_TIMEOUT_MS=200" in row["error_message"]
    finally:
        gate.set()
        proxy.stop()


def test_a_single_huge_line_does_not_corrupt_the_stream(proxy: RunningProxy,
                                                        upstream: FakeUpstream) -> None:
    canned = wire.messages_stream()
    huge = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"' + b"z" * (12 * 1024 * 1024) + b'"}}\n\n')
    pieces = [*canned.pieces[:3], huge[:5_000_000], huge[5_000_000:], *canned.pieces[3:]]
    upstream.script(Script(content_type=canned.content_type, pieces=pieces))
    conn, resp = open_stream(proxy)
    try:
        received = resp.read()
    finally:
        conn.close()
    assert received == b"".join(pieces)
    (row,) = proxy.final_rows()
    assert row["completion_tokens"] == 42
    assert row["prompt_tokens"] == 25


def test_many_concurrent_streams_each_hold_a_thread(make_settings,
                                                    upstream: FakeUpstream) -> None:
    streams = 24  # far beyond waitress's default of 4 threads
    proxy = start_proxy(make_settings(proxy_threads=streams + 4))
    canned = wire.messages_stream()
    scripts = [upstream.script(Script(content_type=canned.content_type, pieces=canned.pieces,
                                      pause_after=1)) for _ in range(streams)]
    opened = []
    try:
        for _ in range(streams):
            conn, resp = open_stream(proxy)
            read_until(resp, canned.pieces[0])
            opened.append((conn, resp))
        for script in scripts:
            script.release.set()
        for conn, resp in opened:
            assert canned.pieces[0] + resp.read() == canned.body
            conn.close()
        rows = proxy.final_rows(streams)
        assert {r["lifecycle_status"] for r in rows} == {"completed"}
    finally:
        for script in scripts:
            script.release.set()
        proxy.stop()


def test_shutdown_cuts_open_streams_and_records_them_aborted(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    canned = wire.messages_stream()
    script = upstream.script(Script(content_type=canned.content_type, pieces=canned.pieces,
                                    pause_after=2))
    conn, resp = open_stream(proxy)
    try:
        read_until(resp, canned.pieces[0] + canned.pieces[1])
        assert proxy.app.services.watcher.abort_all("shutdown") == 1
        # The client must see a broken stream, not a clean (and misleading) end.
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()
        script.release.set()
    (row,) = proxy.final_rows()
    assert row["lifecycle_status"] == "aborted"
    assert row["error_message"] == "shutdown"
    assert row["prompt_tokens"] == 25

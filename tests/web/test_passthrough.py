"""Pass-through rules: what changes on the way (credentials, hop-by-hop) and what does not."""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from urllib.parse import urlsplit

from tests.conftest import RunningProxy, start_proxy
from tests.fake_upstream import FakeUpstream, Script


def request(proxy: RunningProxy, method: str, target: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_health(proxy: RunningProxy) -> None:
    status, headers, body = request(proxy, "GET", "/health")
    assert (status, body) == (200, b'{"status":"ok"}')
    assert headers["content-type"] == "application/json"


def test_unknown_path_is_json_404(proxy: RunningProxy, upstream: FakeUpstream) -> None:
    status, headers, body = request(proxy, "GET", "/nope")
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert b"/nope" in body
    assert upstream.requests == []


def test_non_llm_calls_pass_through_without_a_row(proxy: RunningProxy,
                                                  upstream: FakeUpstream) -> None:
    status, _, body = request(proxy, "GET", "/v1/models?limit=5&after=x%2Fy")
    assert status == 200
    assert b'"gpt-5"' in body
    assert upstream.last().path == "/v1/models"
    assert upstream.last().query == "limit=5&after=x%2Fy"

    status, _, body = request(proxy, "POST", "/v1/messages/count_tokens",
                              b'{"model":"claude-sonnet-4-5","messages":[]}',
                              {"Content-Type": "application/json"})
    assert (status, body) == (200, b'{"input_tokens":42}')
    status, _, _ = request(proxy, "GET", "/api/tags")
    assert status == 404  # the upstream's answer, relayed
    status, _, _ = request(proxy, "HEAD", "/")  # Claude Code's connectivity probe
    assert (status, upstream.last().method, upstream.last().path) == (404, "HEAD", "/")
    assert proxy.rows() == []


def test_query_string_and_percent_encoding_preserved(proxy: RunningProxy,
                                                     upstream: FakeUpstream) -> None:
    request(proxy, "POST", "/v1/messages?beta=true&x=a%20b", b'{"model":"m","messages":[]}',
            {"Content-Type": "application/json"})
    assert upstream.last().query == "beta=true&x=a%20b"
    request(proxy, "POST", "/v1beta/models/gemini-2.5-flash%3AgenerateContent", b"{}",
            {"Content-Type": "application/json"})
    assert upstream.last().path == "/v1beta/models/gemini-2.5-flash%3AgenerateContent"


def test_client_credentials_replaced_by_upstream_key(proxy: RunningProxy,
                                                     upstream: FakeUpstream) -> None:
    body = b'{"model":"claude-sonnet-4-5","messages":[]}'
    request(proxy, "POST", "/v1/messages", body,
            {"x-api-key": "sk-ant-client", "anthropic-version": "2023-06-01",
             "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"})
    rec = upstream.last()
    assert rec.header("x-api-key") == "upstream-secret"
    assert rec.header("authorization") is None
    assert rec.header("anthropic-beta") == "claude-code-20250219,interleaved-thinking-2025-05-14"
    assert rec.header("anthropic-version") == "2023-06-01"

    request(proxy, "POST", "/v1/chat/completions", b'{"model":"gpt-5","messages":[]}',
            {"Authorization": "Bearer sk-client"})
    assert upstream.last().header("authorization") == "Bearer upstream-secret"

    request(proxy, "POST", "/v1beta/models/gemini-2.5-pro:generateContent?key=client-key&alt=x",
            b"{}", {"x-goog-api-key": "client-key"})
    rec = upstream.last()
    assert rec.header("x-goog-api-key") == "upstream-secret"
    assert rec.query == "key=upstream-secret&alt=x"

    request(proxy, "GET", "/v1/models")
    assert upstream.last().header("authorization") == "Bearer upstream-secret"


def test_hop_by_hop_headers_dropped_end_to_end_headers_kept(proxy: RunningProxy,
                                                            upstream: FakeUpstream) -> None:
    upstream.script(Script(
        429, pieces=[b'{"error":{"type":"rate_limit_error","message":"slow down"}}'],
        headers=[("Retry-After", "17"), ("x-request-id", "req_123"),
                 ("anthropic-ratelimit-requests-remaining", "0"), ("Keep-Alive", "timeout=5"),
                 ("X-Custom-Hop", "1"), ("Connection", "X-Custom-Hop")],
        framing="length"))
    status, headers, body = request(
        proxy, "POST", "/v1/messages", b'{"model":"claude-opus-4-1","messages":[]}',
        {"Content-Type": "application/json", "Keep-Alive": "300", "X-Trace": "t1",
         "Accept-Encoding": "gzip, br, zstd"})
    assert status == 429
    assert body == b'{"error":{"type":"rate_limit_error","message":"slow down"}}'
    assert headers["retry-after"] == "17"
    assert headers["x-request-id"] == "req_123"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert "keep-alive" not in headers
    assert "x-custom-hop" not in headers
    rec = upstream.last()
    assert rec.header("Keep-Alive") is None
    assert rec.header("X-Trace") == "t1"
    assert rec.header("Accept-Encoding") == "gzip"  # only what the proxy can read
    request(proxy, "GET", "/v1/models", headers={"Accept-Encoding": "gzip,deflate"})
    assert upstream.last().header("Accept-Encoding") == "gzip,deflate"  # nothing to narrow

    (row,) = proxy.final_rows()
    assert uuid.UUID(row["request_id"]).version == 4  # the original's randomUUID() kind
    assert row["lifecycle_status"] == "error"
    assert row["status"] == 429
    assert row["error_code"] == "upstream_error"
    assert row["error_message"].startswith("upstream HTTP 429: ")
    assert "slow down" in row["error_message"]


def test_oversized_bodies_get_413_before_they_are_read_and_no_row(
        make_settings, upstream: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(max_request_body_bytes=100))
    try:
        big = b'{"model":"gpt-5","messages":[],"pad":"' + b"x" * 100 + b'"}'
        status, headers, body = request(proxy, "POST", "/v1/chat/completions", big,
                                        {"Content-Type": "application/json"})
        assert status == 413
        assert headers["content-type"] == "application/json"
        assert b"request body exceeds 100 bytes" in body
        # One byte over is refused from the Content-Length, before the body is read: the
        # client sends only the headers and still gets its answer.
        url = urlsplit(proxy.url)
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 101\r\n\r\n")
            reply = b""
            while data := sock.recv(65536):
                reply += data
        head, _, payload = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413")
        assert b"Content-Type: application/json" in head
        assert json.loads(payload) == {"type": "error", "error": {  # Anthropic's shape
            "type": "request_too_large", "message": "request body exceeds 100 bytes",
            "code": "request_too_large", "limit": 100}}
        exact = b'{"model":"gpt-5","pad":"' + b"x" * 74 + b'"}'
        assert len(exact) == 100
        assert request(proxy, "POST", "/v1/chat/completions", exact,
                       {"Content-Type": "application/json"})[0] == 200

        # Chunked upload, no Content-Length: counted while read.
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            chunk = b'{"model":"gpt-5","pad":"' + b"y" * 120 + b'"}'
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                         + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))
            reply = b""
            while data := sock.recv(65536):
                reply += data
        assert reply.startswith(b"HTTP/1.1 413")
        assert b"request body exceeds 100 bytes" in reply
        assert len(upstream.requests) == 1  # only the one that fitted
        assert len(proxy.final_rows()) == 1
    finally:
        proxy.stop()


def test_unreachable_upstream_gives_502_json_and_error_row(make_settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    proxy = start_proxy(make_settings(cli_proxy_api_url=f"http://127.0.0.1:{dead_port}"))
    try:
        status, headers, body = request(proxy, "POST", "/v1/chat/completions",
                                        b'{"model":"gpt-5","messages":[]}',
                                        {"Content-Type": "application/json"})
        assert status == 502
        assert headers["content-type"] == "application/json"
        assert b"upstream_unavailable" in body
        (row,) = proxy.final_rows()
        assert row["lifecycle_status"] == "error"
        assert row["status"] == 502
        assert row["error_code"] == "upstream_unavailable"
        assert "refused" in row["error_message"].lower()
        # Non-LLM calls get the same clear error, without a row.
        status, _, _ = request(proxy, "GET", "/v1/models")
        assert status == 502
        assert len(proxy.rows()) == 1
    finally:
        proxy.stop()

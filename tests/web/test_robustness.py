"""Bad input never crashes the proxy: every request gets an answer, every row an ending."""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_cli_proxy.providers.openai_chat import inject_include_usage
from tests.conftest import RunningProxy, start_proxy
from tests.fake_upstream import FakeUpstream
from tests.web.test_relay_formats import post

LLM_PATHS = ["/v1/chat/completions", "/v1/responses", "/v1/messages",
             "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
             "/v1internal:generateContent"]


def raw_exchange(proxy: RunningProxy, payload: bytes) -> bytes:
    url = urlsplit(proxy.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        # No half-close (SHUT_WR): waitress, watching for hang-ups, would take it for one.
        sock.sendall(payload)
        reply = b""
        try:
            while data := sock.recv(65536):
                reply += data
        except ConnectionResetError:
            pass  # waitress may reset a connection whose request it refuses
    return reply


def health(proxy: RunningProxy) -> int:
    url = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def test_malformed_http_is_answered_and_the_server_lives_on(proxy: RunningProxy) -> None:
    # waitress drops these connections (silently, or with a 4xx); what matters is that
    # the proxy keeps serving afterwards.
    raw_exchange(proxy, b"NOT HTTP AT ALL\r\nConnection: close\r\n\r\n")
    reply = raw_exchange(proxy, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                         + b"a" * 300_000 + b"\r\n\r\n")
    if reply:  # when waitress answers by itself, it answers in JSON too
        head, _, body = reply.partition(b"\r\n\r\n")
        assert b" 431 " in head.split(b"\r\n")[0] and b"application/json" in head
        assert json.loads(body)["error"]["code"] == "request_headers_too_large"
    bad_chunks = raw_exchange(proxy, b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    head, _, body = bad_chunks.partition(b"\r\n\r\n")
    assert b" 400 " in head.split(b"\r\n")[0]
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["code"] == "bad_request"  # Anthropic's
    odd = (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: \xff\xfe junk\r\n"
           b"X-Agent-Name: \xe2\x98\x83\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert raw_exchange(proxy, odd).startswith(b"HTTP/1.1 200")
    assert raw_exchange(proxy, b"GET /v1/%zz%%/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close"
                               b"\r\n\r\n").startswith(b"HTTP/1.1 ")
    assert health(proxy) == 200


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(LLM_PATHS), body=st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.sampled_from(["model", "stream", "stream_options",
                                                    "messages", "x"]), inner, max_size=4),
                 max_leaves=8).map(lambda v: json.dumps(v).encode())))
def test_any_body_gets_an_answer_and_a_finished_row(proxy: RunningProxy,
                                                    upstream: FakeUpstream, path: str,
                                                    body: bytes) -> None:
    url = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status < 500
    # Forwarded unchanged, except a chat stream gets the usage the proxy needs.
    injected = inject_include_usage(body) if path == "/v1/chat/completions" else None
    assert upstream.last().body == (injected or body)
    rows = proxy.rows()
    proxy.final_rows(len(rows))


def test_sockets_numbered_above_1024_are_served(make_settings, upstream: FakeUpstream) -> None:
    # Hundreds of open streams hold two descriptors each; select() cannot watch one above
    # 1024 and waitress's loop would die. Taking the low numbers first puts every socket
    # of this proxy above that line.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip(f"the descriptor limit ({hard}) is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        proxy = start_proxy(make_settings())
        try:
            status, _, body = post(proxy, "/v1/chat/completions",
                                   {"model": "gpt-5", "messages": []})
            assert status == 200 and json.loads(body)["usage"]
            assert health(proxy) == 200
        finally:
            proxy.stop()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

"""Edge cases found in review: ambiguous paths, odd framing, hang-ups before headers."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningProxy, start_proxy, wait_until
from tests.fake_upstream import FakeUpstream, Script
from tests.web.test_passthrough import request


@pytest.mark.parametrize("target", ["/v1/./chat/completions", "/v1/x/../chat/completions",
                                    "/v1/%2e%2e/v0/management/config",
                                    "/v1//chat/completions"])
def test_ambiguous_paths_are_refused(proxy: RunningProxy, upstream: FakeUpstream,
                                     target: str) -> None:
    status, _, body = request(proxy, "POST", target, b'{"model":"gpt-5"}')
    # Refused by the handler (400), or for "//" already by the routing table (404).
    assert (status, json.loads(body)["error"]["code"]) in ((400, "ambiguous_path"),
                                                          (404, "not_found"))
    assert upstream.requests == []


def test_encoded_path_is_classified_as_the_upstream_will_route_it(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    status, _, _ = request(proxy, "POST", "/v1/%63hat/completions",
                           b'{"model":"gpt-5","messages":[]}')
    assert upstream.last().path == "/v1/%63hat/completions"  # forwarded as sent
    (row,) = proxy.final_rows()  # and recorded: it is the chat endpoint
    assert row["path"] == "/v1/%63hat/completions"
    assert status == 404  # this fake routes on the raw path; CLIProxyAPI would decode


def test_absolute_form_target_keeps_its_raw_path(proxy: RunningProxy,
                                                 upstream: FakeUpstream) -> None:
    url = urlsplit(proxy.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"GET http://example.test/v1/models/a%2Fb%3Fx?alt=sse HTTP/1.1\r\n"
                     b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass
    assert (upstream.last().path, upstream.last().query) == ("/v1/models/a%2Fb%3Fx", "alt=sse")


def test_urllib3_sentinel_header_value_is_not_forwarded(proxy: RunningProxy,
                                                         upstream: FakeUpstream) -> None:
    # urllib3 raises on this value; it must neither crash the call nor strand its row.
    status, _, _ = request(proxy, "POST", "/v1/chat/completions",
                           b'{"model":"gpt-5","messages":[]}',
                           {"X-Trace": "@@@SKIP_HEADER@@@"})
    assert status == 200
    assert upstream.last().header("X-Trace") is None
    (row,) = proxy.final_rows()
    assert row["lifecycle_status"] == "completed"


@pytest.mark.parametrize(("framing", "length", "pieces"), [
    ("close", "10, 10", [b'{"id":', b'"x"}']),  # repeated value: waitress cannot parse it
    ("chunked", "3", [b'{"id":', b'"x"}']),  # a length beside chunking must be ignored
])
def test_odd_upstream_content_length_is_not_trusted(proxy: RunningProxy,
                                                    upstream: FakeUpstream, framing: str,
                                                    length: str, pieces: list[bytes]) -> None:
    upstream.script(Script(pieces=pieces, framing=framing,
                           headers=[("Content-Length", length)]))
    status, headers, body = request(proxy, "POST", "/v1/messages",
                                    b'{"model":"claude-haiku-4-5"}')
    assert (status, body) == (200, b'{"id":"x"}')
    assert headers.get("content-length") in (None, "10")
    (row,) = proxy.final_rows()
    assert row["lifecycle_status"] == "completed"


def test_client_leaving_before_headers_closes_the_upstream(proxy: RunningProxy,
                                                           upstream: FakeUpstream) -> None:
    gate = threading.Event()
    upstream.script(Script(pieces=[b"{}"], delay_headers=gate))
    url = urlsplit(proxy.url)
    try:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.request("POST", "/v1/messages", body=b'{"model":"claude-haiku-4-5"}')
        wait_until(lambda: upstream.requests, what="the upstream request")
        # Written beside the call, a moment after it starts.
        assert wait_until(proxy.rows)[0]["lifecycle_status"] == "pending"
        conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        conn.close()
        # A non-streaming call does all its work before the headers: stop it now.
        assert upstream.client_gone.wait(10), "the upstream kept generating for nobody"
        (row,) = proxy.final_rows()
    finally:
        gate.set()
    assert row["lifecycle_status"] == "aborted"
    assert row["status"] == 499
    assert row["error_message"] == "client disconnected"


def test_shutdown_aborts_calls_waiting_for_headers(proxy: RunningProxy,
                                                   upstream: FakeUpstream) -> None:
    gate = threading.Event()
    upstream.script(Script(pieces=[b"{}"], delay_headers=gate))
    url = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("POST", "/v1/messages", body=b'{"model":"claude-haiku-4-5"}')
        wait_until(lambda: upstream.requests, what="the upstream request")
        assert proxy.app.services.watcher.abort_all("shutdown") == 1
        resp = conn.getresponse()
        assert resp.status == 499
        (row,) = proxy.final_rows()
        assert (row["lifecycle_status"], row["error_message"]) == ("aborted", "shutdown")
    finally:
        gate.set()
        conn.close()


def test_trusted_forwarded_for_names_the_client(make_settings,
                                                upstream: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(trust_proxy_headers=True))
    try:
        request(proxy, "POST", "/v1/messages", b'{"model":"claude-haiku-4-5"}',
                {"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
        (row,) = proxy.final_rows()
    finally:
        proxy.stop()
    # The last address is the one the trusted hop appended; the first is only a claim.
    assert row["source_ip"] == "10.0.0.1"
    assert upstream.last().header("X-Forwarded-For") == "203.0.113.7, 10.0.0.1"


def test_untrusted_forwarded_for_is_not_believed(proxy: RunningProxy) -> None:
    request(proxy, "POST", "/v1/messages", b'{"model":"claude-haiku-4-5"}',
            {"X-Forwarded-For": "203.0.113.7"})
    (row,) = proxy.final_rows()
    assert row["source_ip"] == "127.0.0.1"


def test_no_user_agent_of_our_own_and_query_credentials_swapped(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    url = urlsplit(proxy.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/models?auth_token=client-secret&x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Connection: close\r\n\r\n")
        while sock.recv(65536):
            pass
    rec = upstream.last()
    assert rec.header("User-Agent") is None
    assert rec.query == "auth_token=upstream-secret&x=1"


def test_percent_encoded_credential_parameters_are_swapped_too(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    request(proxy, "GET", "/v1beta/models?%6Bey=client-secret&auth%5Ftoken=other&x=1")
    assert upstream.last().query == "key=upstream-secret&auth_token=upstream-secret&x=1"


def test_a_body_repeating_model_is_refused(proxy: RunningProxy, upstream: FakeUpstream) -> None:
    # The proxy would record the last model while CLIProxyAPI serves the first.
    status, _, body = request(proxy, "POST", "/v1/messages",
                              b'{"model":"claude-opus-4-1","model":"claude-haiku-4-5"}',
                              {"Content-Type": "application/json"})
    assert status == 400
    assert json.loads(body)["error"]["code"] == "ambiguous_body"
    assert upstream.requests == [] and proxy.rows() == []


def test_codex_chatgpt_login_route_is_recorded(proxy: RunningProxy,
                                               upstream: FakeUpstream) -> None:
    upstream.script(Script(pieces=[b'{"id":"r","object":"response","model":"gpt-5-codex",'
                                   b'"usage":{"input_tokens":10,"output_tokens":2}}'],
                           framing="length"))
    status, _, _ = request(proxy, "POST", "/backend-api/codex/responses",
                           b'{"model":"gpt-5-codex","input":"hi"}',
                           {"Content-Type": "application/json"})
    assert status == 200
    assert upstream.last().path == "/backend-api/codex/responses"
    (row,) = proxy.final_rows()
    assert (row["provider"], row["prompt_tokens"], row["completion_tokens"]) == ("openai", 10, 2)


def test_with_client_keys_an_unrecordable_call_is_refused(make_settings,
                                                          upstream: FakeUpstream) -> None:
    from agent_cli_proxy.storage.api_keys import create_key
    proxy = start_proxy(make_settings(proxy_require_api_key=True))
    try:
        _, key = create_key(proxy.db, "k", allowed_providers=None, allowed_accounts=None,
                            now_iso="2026-11-21T00:00:00.000Z")
        with proxy.db.write() as conn:  # keys still check out, but rows cannot be written
            conn.execute("ALTER TABLE request_logs RENAME TO request_logs_gone")
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        status, _, body = request(proxy, "POST", "/v1/messages", b'{"model":"m"}', headers)
        assert (status, json.loads(body)["error"]["code"]) == (503, "recording_failed")
        assert upstream.requests == []  # never served unrecorded
        proxy.db.close()  # and with no database at all, keys cannot be checked: 503 too
        status, _, body = request(proxy, "POST", "/v1/messages", b'{"model":"m"}', headers)
        assert (status, json.loads(body)["error"]["code"]) == (503, "key_check_unavailable")
    finally:
        proxy.stop()


def test_idempotent_calls_are_retried_on_gateway_errors_posts_are_not(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    for _ in range(2):
        upstream.script(Script(503, content_type="text/plain", pieces=[b"busy"],
                               framing="length"))
    status, _, body = request(proxy, "GET", "/v1/models")
    assert status == 200 and b"gpt-5" in body  # UPSTREAM_MAX_RETRIES=2 by default
    assert [r.path for r in upstream.requests] == ["/v1/models"] * 3
    upstream.script(Script(503, content_type="text/plain", pieces=[b"busy"],
                           framing="length"))
    status, _, _ = request(proxy, "POST", "/v1/chat/completions", b'{"model":"gpt-5"}',
                           {"Content-Type": "application/json"})
    assert status == 503  # the upstream may have started work: never sent twice
    assert len(upstream.requests) == 4


def test_retries_can_be_turned_off(make_settings, upstream: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(upstream_max_retries=0))
    try:
        upstream.script(Script(503, content_type="text/plain", pieces=[b"busy"],
                               framing="length"))
        assert request(proxy, "GET", "/v1/models")[0] == 503
        assert len(upstream.requests) == 1
    finally:
        proxy.stop()


def test_a_refused_connection_is_retried_even_for_a_post(make_settings) -> None:
    # Nothing was sent, so a POST may be retried: here every attempt is refused, and the
    # client still gets one clear error after the retries.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    proxy = start_proxy(make_settings(cli_proxy_api_url=f"http://127.0.0.1:{dead}",
                                      upstream_max_retries=2))
    try:
        status, _, body = request(proxy, "POST", "/v1/chat/completions", b'{"model":"x"}',
                                  {"Content-Type": "application/json"})
        assert status == 502
        assert json.loads(body)["error"]["code"] == "upstream_unavailable"
    finally:
        proxy.stop()

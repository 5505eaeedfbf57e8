"""Upstreams that misbehave: each case shows what the client gets, what the row says,
and that the next request works."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningProxy, start_proxy
from tests.fake_upstream import FakeUpstream, Script
from tests.web.test_relay_formats import post


def test_garbage_body_is_relayed_and_recorded_without_usage(proxy: RunningProxy,
                                                            upstream: FakeUpstream) -> None:
    upstream.script(Script(pieces=[b"\x00\xffnot json at all{"], framing="length"))
    status, _, body = post(proxy, "/v1/chat/completions", {"model": "gpt-5", "messages": []})
    assert (status, body) == (200, b"\x00\xffnot json at all{")
    (row,) = proxy.final_rows()
    assert (row["lifecycle_status"], row["total_tokens"]) == ("completed", 0)
    assert row["cost_status"] == "ok" and row["cost_usd"] == 0  # priced: nothing used
    assert post(proxy, "/v1/chat/completions", {"model": "gpt-5", "messages": []})[0] == 200


def test_a_keep_alive_connection_dropped_by_the_upstream_is_not_reused(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    for _ in range(3):
        upstream.script(Script(pieces=[json.dumps({"id": "x", "model": "gpt-5", "choices": [],
                                                   "usage": {"prompt_tokens": 1,
                                                             "completion_tokens": 1,
                                                             "total_tokens": 2}}).encode()],
                               framing="length", vanish_after=True))
    for _ in range(3):  # each call would land on the dead pooled connection if reused
        status, _, _ = post(proxy, "/v1/chat/completions", {"model": "gpt-5", "messages": []})
        assert status == 200
    rows = proxy.final_rows(3)
    assert [r["lifecycle_status"] for r in rows] == ["completed"] * 3


def test_rate_limited_answers_pass_through_with_their_retry_after(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    upstream.script(Script(429, pieces=[b'{"error":{"type":"rate_limit_error"}}'],
                           headers=[("Retry-After", "7")], framing="length"))
    status, headers, _ = post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"})
    assert (status, headers["retry-after"]) == (429, "7")
    (row,) = proxy.final_rows()
    assert (row["lifecycle_status"], row["error_code"], row["status"]) == (
        "error", "upstream_error", 429)
    assert post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"})[0] == 200


def assert_answer_cut(proxy: RunningProxy) -> None:
    """A chat call whose answer starts and then breaks off (headers were already sent)."""
    url = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("POST", "/v1/chat/completions", body=b'{"model":"gpt-5"}',
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_an_answer_announced_too_large_is_refused_before_anything_is_sent(
        make_settings, upstream: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(max_response_body_bytes=100))
    try:
        upstream.script(Script(pieces=[b"x" * 500], framing="length"))
        status, _, body = post(proxy, "/v1/chat/completions", {"model": "gpt-5"})
        assert status == 502
        assert json.loads(body)["error"]["code"] == "response_too_large"
        (row,) = proxy.final_rows()
        assert (row["lifecycle_status"], row["error_code"]) == ("error", "response_too_large")
    finally:
        proxy.stop()


def test_an_answer_growing_too_large_is_cut(make_settings, upstream: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(max_response_body_bytes=100))
    try:
        upstream.script(Script(pieces=[b"x" * 60, b"y" * 60, b"z" * 60]))  # chunked
        assert_answer_cut(proxy)
        (row,) = proxy.final_rows()
        assert (row["lifecycle_status"], row["error_code"]) == ("error", "response_too_large")
    finally:
        proxy.stop()


def test_a_non_streaming_answer_must_be_complete_in_time(make_settings,
                                                         upstream: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(upstream_timeout_ms=300))
    script = upstream.script(Script(pieces=[b'{"id":', b'"x"}'], pause_after=1))
    try:
        assert_answer_cut(proxy)
        (row,) = proxy.final_rows()
        assert (row["lifecycle_status"], row["error_code"]) == ("error", "upstream_timeout")
        assert "UPSTREAM_TIMEOUT_MS=300" in row["error_message"]
    finally:
        script.release.set()
        proxy.stop()

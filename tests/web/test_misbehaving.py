"""Upstreams that misbehave: each case shows what the client gets, what the row says,
and that the next request works."""

from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlsplit

import pytest
import urllib3

from tests.conftest import RunningProxy, start_proxy
from tests.fake_upstream import FakeUpstream, Script
from tests.web.test_passthrough import request
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


CHAT_ANSWER = json.dumps({"id": "x", "model": "gpt-5", "choices": [],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                    "total_tokens": 2}}).encode()


def reset_pooled_connection(proxy: RunningProxy, upstream: FakeUpstream,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave the proxy a pooled connection the upstream has reset, and make the proxy's
    next call take it: urllib3 checks a pooled connection just before reuse, so the
    test stands in for the race where the upstream resets it right after that check."""
    reset = threading.Event()
    upstream.script(Script(pieces=[CHAT_ANSWER], framing="length", reset_after=reset))
    assert post(proxy, "/v1/chat/completions", {"model": "gpt-5", "messages": []})[0] == 200
    assert reset.wait(10)
    monkeypatch.setattr(urllib3.connectionpool, "is_connection_dropped", lambda conn: False)


def test_a_post_whose_pooled_connection_was_reset_before_sending_goes_again(
        proxy: RunningProxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    reset_pooled_connection(proxy, upstream, monkeypatch)
    status, _, _ = post(proxy, "/v1/chat/completions", {"model": "gpt-5", "messages": []})
    assert status == 200
    assert len(upstream.requests) == 2  # the upstream saw the second call exactly once
    rows = proxy.final_rows(2)
    assert [r["lifecycle_status"] for r in rows] == ["completed"] * 2


def test_with_retries_off_a_reset_pooled_connection_is_a_clear_502(
        make_settings, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = start_proxy(make_settings(upstream_max_retries=0))
    try:
        reset_pooled_connection(proxy, upstream, monkeypatch)
        status, _, body = post(proxy, "/v1/chat/completions", {"model": "gpt-5"})
        error = json.loads(body)["error"]
        assert (status, error["code"]) == (502, "upstream_unavailable")
        assert "before the request was sent" in error["message"]
        assert len(upstream.requests) == 1
        row = proxy.final_rows(2)[-1]
        assert (row["lifecycle_status"], row["error_code"]) == ("error", "upstream_unavailable")
        assert post(proxy, "/v1/chat/completions", {"model": "gpt-5"})[0] == 200
    finally:
        proxy.stop()


def test_a_post_the_upstream_hung_up_on_is_never_sent_twice(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    # The upstream read the request and may have started work (and billing) before it
    # closed: retrying could run the call twice.
    upstream.script(Script(hang_up=True))
    status, _, _ = post(proxy, "/v1/chat/completions", {"model": "gpt-5"})
    assert status == 502
    assert len(upstream.requests) == 1
    (row,) = proxy.final_rows()
    assert row["lifecycle_status"] == "error"
    assert post(proxy, "/v1/chat/completions", {"model": "gpt-5"})[0] == 200


def test_an_idempotent_call_rate_limited_briefly_is_sent_again(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    for wait in ("0", "Thu, 01 Jan 1970 00:00:00 GMT"):  # seconds and a date in the past
        upstream.script(Script(429, pieces=[b'{"error":"slow down"}'],
                               headers=[("Retry-After", wait)], framing="length"))
    status, _, body = request(proxy, "GET", "/v1/models")
    assert status == 200 and b"gpt-5" in body
    assert [r.path for r in upstream.requests] == ["/v1/models"] * 3


def test_a_long_retry_after_and_the_last_429_go_to_the_client(
        make_settings, upstream: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(rate_limit_max_retries=1))
    try:
        upstream.script(Script(429, pieces=[b"{}"], headers=[("Retry-After", "60")],
                               framing="length"))
        status, headers, _ = request(proxy, "GET", "/v1/models")
        assert (status, headers["retry-after"], len(upstream.requests)) == (429, "60", 1)
        for _ in range(2):
            upstream.script(Script(429, pieces=[b"{}"], headers=[("Retry-After", "0")],
                                   framing="length"))
        status, headers, _ = request(proxy, "GET", "/v1/models")
        assert (status, headers["retry-after"], len(upstream.requests)) == (429, "0", 3)
        assert request(proxy, "GET", "/v1/models")[0] == 200
    finally:
        proxy.stop()

"""Upstreams that misbehave: each case shows what the client gets, what the row says,
and that the next request works."""

from __future__ import annotations

import json

from tests.conftest import RunningProxy
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

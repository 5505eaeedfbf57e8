"""End to end through real waitress: bytes unchanged, usage exact, for every API family."""

from __future__ import annotations

import gzip
import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from agent_cli_proxy.usage.model import Usage
from tests import wire
from tests.conftest import RunningProxy
from tests.fake_upstream import FakeUpstream, Script


def post(proxy: RunningProxy, path: str, body: bytes | dict[str, Any],
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        conn.request("POST", path, body=data,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def buckets(row: dict[str, Any]) -> Usage:
    return Usage(prompt_tokens=row["prompt_tokens"], cache_read_tokens=row["cache_read_tokens"],
                 cache_creation_tokens=row["cache_creation_tokens"],
                 completion_tokens=row["completion_tokens"],
                 reasoning_tokens=row["reasoning_tokens"],
                 cache_creation_1h_tokens=row["cache_creation_1h_tokens"])


CASES = [
    ("/v1/chat/completions", {"model": "gpt-5", "messages": [], "stream": False}, wire.chat_json,
     "openai", False),
    ("/v1/chat/completions", {"model": "gpt-5", "messages": [], "stream": True,
                              "stream_options": {"include_usage": True}},
     lambda: wire.chat_stream(True), "openai", True),
    ("/v1/responses", {"model": "gpt-5-codex", "input": "hi", "stream": True},
     wire.responses_stream, "openai", True),
    ("/v1/responses", {"model": "gpt-5-codex", "input": "hi"}, wire.responses_json, "openai",
     False),
    ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [],
                      "stream": True}, wire.messages_stream, "anthropic", True),
    ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []},
     wire.messages_json, "anthropic", False),
    ("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", {"contents": []},
     wire.gemini_stream, "gemini", True),
    ("/v1beta/models/gemini-2.5-pro:generateContent", {"contents": []}, wire.gemini_json,
     "gemini", False),
]


@pytest.mark.parametrize(("path", "request_body", "canned_fn", "provider", "streamed"), CASES,
                         ids=[f"{c[0].split('?')[0]}-{'stream' if c[4] else 'json'}"
                              for c in CASES])
def test_bytes_unchanged_and_usage_exact(proxy: RunningProxy, upstream: FakeUpstream,
                                         path: str, request_body: dict[str, Any],
                                         canned_fn: Any, provider: str, streamed: bool) -> None:
    canned: wire.Canned = canned_fn()
    status, headers, received = post(proxy, path, request_body)

    assert status == 200
    assert received == canned.body == upstream.sent[-1]
    assert headers["content-type"] == canned.content_type
    (row,) = proxy.final_rows()
    assert row["lifecycle_status"] == "completed"
    assert row["status"] == 200
    assert row["provider"] == provider
    assert bool(row["streamed"]) is streamed
    assert buckets(row) == canned.usage
    assert row["total_tokens"] == canned.usage.total_tokens
    assert row["model"] == canned.model
    assert row["actual_model"] == canned.model
    requested = request_body.get("model") or "gemini-2.5-pro"
    assert row["requested_model"] == requested
    assert row["incomplete"] == 0
    assert row["finalized_at"] is not None
    assert row["latency_ms"] >= 0


def test_request_body_forwarded_unchanged_with_content_length(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    # Odd spacing and key order must survive: the proxy never re-serialises JSON.
    raw = b'{ "model" : "claude-haiku-4-5",\n  "max_tokens": 5, "messages": [] }'
    status, _, _ = post(proxy, "/v1/messages", raw)
    assert status == 200
    rec = upstream.last()
    assert rec.body == raw
    assert rec.header("Content-Length") == str(len(raw))
    assert rec.header("Transfer-Encoding") is None


def test_chat_stream_without_include_usage_gets_exact_usage_and_unchanged_stream(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    request = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}],
               "stream": True}
    status, _, received = post(proxy, "/v1/chat/completions", request)

    assert status == 200
    # The client receives exactly what OpenAI sends to a client that did not ask for usage.
    assert received == wire.chat_stream(include_usage=False).body
    sent_upstream = upstream.last().json()
    assert sent_upstream["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in sent_upstream.items() if k != "stream_options"} == request
    (row,) = proxy.final_rows()
    assert buckets(row) == wire.CHAT_BUCKETS


def test_invalid_json_is_forwarded_and_recorded(proxy: RunningProxy,
                                                upstream: FakeUpstream) -> None:
    status, _, body = post(proxy, "/v1/chat/completions", b"{not json")
    assert status == 400  # the upstream decided
    assert upstream.last().body == b"{not json"
    (row,) = proxy.final_rows()
    assert row["lifecycle_status"] == "error"
    assert row["error_code"] == "upstream_error"
    assert row["status"] == 400
    assert "upstream HTTP 400" in row["error_message"]
    assert "invalid JSON body" in row["error_message"]
    assert row["model"] == "unknown"
    assert b"invalid JSON body" in body


def test_compressed_answers_are_relayed_as_sent_and_still_read(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    canned = wire.messages_json()
    compressed = gzip.compress(canned.body)
    upstream.script(Script(content_type=canned.content_type, pieces=[compressed[:20],
                                                                     compressed[20:]],
                           headers=[("Content-Encoding", "gzip")], framing="length"))
    status, headers, received = post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"},
                                     {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert received == compressed  # not decoded on the way: byte for byte
    (row,) = proxy.final_rows()
    assert buckets(row) == canned.usage


def test_unreadable_coding_is_relayed_and_recorded_without_usage(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    opaque = b"\x8b\x00\x80not-really-brotli"
    upstream.script(Script(pieces=[opaque], headers=[("Content-Encoding", "br")],
                           framing="length"))
    status, _, received = post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"})
    assert (status, received) == (200, opaque)
    (row,) = proxy.final_rows()
    assert row["lifecycle_status"] == "completed"
    assert row["total_tokens"] == 0

"""Managed proxy API keys enforced on real proxied calls (real waitress, fake upstream).

FAILS UNTIL WIRED (by design, not skipped):

These need :func:`agent_cli_proxy.web.api_keys.authenticate` wired into the proxy handler
(before the pending row is written, with the call's ``request_logs.provider`` label, or
None for calls that get no row) and its key id passed on to ``PendingRow.proxy_api_key_id``.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from agent_cli_proxy.config import Settings
from agent_cli_proxy.storage import api_keys as store
from tests import wire
from tests.conftest import RunningProxy, start_proxy
from tests.fake_upstream import FakeUpstream, Script
from tests.web.test_relay_formats import post

Call = tuple[str, dict[str, Any]]
CLAUDE: Call = ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []})
GPT: Call = ("/v1/chat/completions", {"model": "gpt-5", "messages": []})
GEMINI: Call = ("/v1beta/models/gemini-2.5-pro:generateContent", {"contents": []})


@pytest.fixture
def strict(make_settings: Callable[..., Settings]) -> Iterator[RunningProxy]:
    running = start_proxy(make_settings(proxy_require_api_key=True))
    yield running
    running.stop()


def make_key(proxy: RunningProxy, providers: list[str] | None = None) -> tuple[int, str]:
    record, key = store.create_key(proxy.db, "e2e", allowed_providers=providers,
                                   allowed_accounts=None, now_iso="2026-11-21T00:00:00.000Z")
    return int(record["id"]), key


def get(proxy: RunningProxy, target: str, headers: dict[str, str], method: str = "GET") -> int:
    parts = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request(method, target, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def error_code(body: bytes) -> Any:
    return json.loads(body)["error"]["code"]


def test_required_key_missing_is_401_and_writes_no_row(strict: RunningProxy,
                                                       upstream: FakeUpstream) -> None:
    make_key(strict)
    for headers in ({}, {"Authorization": "Bearer sk-not-a-proxy-key"},
                    {"x-api-key": "acp_" + "0" * 64}):
        status, _, body = post(strict, *CLAUDE, headers)
        assert status == 401 and error_code(body) == "invalid_api_key"
        assert json.loads(body)["error"]["message"] == \
            "Valid Authorization Bearer token or x-api-key required."
    assert get(strict, "/v1/models", {}) == 401  # calls without a row need a key too
    assert strict.rows() == []
    assert upstream.requests == []  # nothing reached the upstream


@pytest.mark.parametrize("header", ["Authorization", "x-api-key"])
def test_valid_key_is_recorded_and_never_forwarded(strict: RunningProxy,
                                                   upstream: FakeUpstream, header: str) -> None:
    key_id, key = make_key(strict)
    value = f"Bearer {key}" if header == "Authorization" else key
    status, _, _ = post(strict, *CLAUDE, {header: value})
    assert status == 200
    (row,) = strict.final_rows()
    assert row["proxy_api_key_id"] == key_id and row["lifecycle_status"] == "completed"
    sent = upstream.last()
    assert all(key not in v for _, v in sent.headers)  # the upstream key replaced it
    assert sent.header(header) in ("Bearer upstream-secret", "upstream-secret")
    usage = store.key_usage(strict.db, key_id)
    assert usage is not None and usage["requestCount"] == 1 and usage["totalTokens"] > 0
    listed = store.list_keys(strict.db)
    assert listed[0]["requestCount"] == 1 and listed[0]["lastUsedAt"] is not None


def test_gemini_query_key_is_accepted_and_replaced(strict: RunningProxy,
                                                   upstream: FakeUpstream) -> None:
    key_id, key = make_key(strict)
    status, _, _ = post(strict, GEMINI[0] + f"?key={key}", GEMINI[1])
    assert status == 200
    (row,) = strict.final_rows()
    assert row["proxy_api_key_id"] == key_id
    assert key not in upstream.last().query


def test_revoked_key_is_refused_at_once(strict: RunningProxy) -> None:
    key_id, key = make_key(strict)
    auth = {"Authorization": f"Bearer {key}"}
    assert post(strict, *GPT, auth)[0] == 200
    strict.final_rows(1)
    assert store.revoke_key(strict.db, key_id, "2026-11-21T00:00:01.000Z")
    status, _, body = post(strict, *GPT, auth)
    assert status == 401 and error_code(body) == "invalid_api_key"
    assert len(strict.rows()) == 1


def test_rotated_key_old_secret_refused_new_accepted(strict: RunningProxy) -> None:
    key_id, old = make_key(strict)
    rotated = store.rotate_key(strict.db, key_id, "2026-11-21T00:00:01.000Z")
    assert rotated is not None
    assert post(strict, *GPT, {"Authorization": f"Bearer {old}"})[0] == 401
    assert post(strict, *GPT, {"Authorization": f"Bearer {rotated[1]}"})[0] == 200
    (row,) = strict.final_rows()
    assert row["proxy_api_key_id"] == key_id


def test_provider_limited_key_is_403_on_other_providers(strict: RunningProxy) -> None:
    key_id, key = make_key(strict, ["anthropic"])
    assert post(strict, *CLAUDE, {"x-api-key": key})[0] == 200
    for path, body in (GPT, GEMINI, ("/v1/responses", {"model": "gpt-5", "input": "hi"})):
        status, _, answer = post(strict, path, body, {"Authorization": f"Bearer {key}"})
        assert status == 403, path
        assert error_code(answer) == "provider_not_allowed"
        assert json.loads(answer)["error"]["message"] == "provider not allowed for this API key"
    rows = strict.final_rows(1)
    assert [(r["provider"], r["proxy_api_key_id"]) for r in rows] == [("anthropic", key_id)]


def test_keys_optional_when_not_required(proxy: RunningProxy, upstream: FakeUpstream) -> None:
    assert proxy.settings.proxy_require_api_key is False
    key_id, key = make_key(proxy)
    assert post(proxy, *GPT)[0] == 200  # no key at all
    assert post(proxy, *GPT, {"Authorization": "Bearer sk-upstream-style"})[0] == 200
    assert post(proxy, *GPT, {"Authorization": f"Bearer {key}"})[0] == 200
    rows = proxy.final_rows(3)
    assert [r["proxy_api_key_id"] for r in rows] == [None, None, key_id]
    assert all(key not in v for _, v in upstream.last().headers)


UNATTRIBUTED = ("this API key may only make calls the proxy can attribute to its allowed "
                "providers")


def canned(reply: wire.Canned) -> Script:
    return Script(content_type=reply.content_type, pieces=reply.pieces, framing="length")


@pytest.mark.parametrize("require", [True, False])
def test_restricted_key_fails_closed_on_calls_without_a_row(
        make_settings: Callable[..., Settings], upstream: FakeUpstream, require: bool) -> None:
    running = start_proxy(make_settings(proxy_require_api_key=require))
    try:
        _, key = make_key(running, ["anthropic", "openai", "gemini"])
        auth = {"Authorization": f"Bearer {key}"}
        for path, body in (("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}),
                           ("/v1/images/generations", {"model": "gpt-image-1", "prompt": "x"}),
                           ("/v1beta/interactions", {"model": "gemini-2.5-pro"}),
                           ("/v1beta/models/gemini-2.5-pro:embedContent", {})):
            status, _, answer = post(running, path, body, auth)
            assert status == 403, path
            assert error_code(answer) == "provider_not_allowed"
            assert json.loads(answer)["error"]["message"] == UNATTRIBUTED
        assert get(running, "/api/user", auth) == 403  # an Amp management route
        assert upstream.requests == [] and running.rows() == []
        # Requests known to cost nothing still pass.
        assert get(running, "/v1/models", auth) == 200
        assert get(running, "/v1/models", auth, method="HEAD") != 403
        status, _, _ = post(running, "/v1/messages/count_tokens",
                            {"model": "claude-sonnet-4-5", "messages": []}, {"x-api-key": key})
        assert status == 200
        assert [r.path for r in upstream.requests][-1] == "/v1/messages/count_tokens"
        assert running.rows() == []
    finally:
        running.stop()


def test_unrestricted_key_may_call_anything(strict: RunningProxy,
                                            upstream: FakeUpstream) -> None:
    _, key = make_key(strict)
    status, _, _ = post(strict, "/v1/embeddings", {"model": "e", "input": "x"},
                        {"Authorization": f"Bearer {key}"})
    assert status == 404  # the fake upstream's answer: the call was forwarded
    assert upstream.last().path == "/v1/embeddings"


def test_amp_provider_routes_are_recorded_and_limited(strict: RunningProxy,
                                                      upstream: FakeUpstream) -> None:
    key_id, key = make_key(strict, ["anthropic"])
    upstream.script(canned(wire.messages_json()))
    status, _, _ = post(strict, "/api/provider/anthropic/v1/messages", CLAUDE[1],
                        {"x-api-key": key})
    assert status == 200
    assert upstream.last().path == "/api/provider/anthropic/v1/messages"
    (row,) = strict.final_rows()
    assert (row["provider"], row["proxy_api_key_id"]) == ("anthropic", key_id)
    assert row["requested_model"] == "claude-sonnet-4-5" and row["total_tokens"] > 0
    for path in ("/api/provider/openai/v1/chat/completions",
                 "/api/provider/groq/chat/completions", "/api/provider/openai/v1/responses"):
        status, _, answer = post(strict, path, GPT[1], {"x-api-key": key})
        assert status == 403, path
        assert json.loads(answer)["error"]["message"] == "provider not allowed for this API key"
    assert len(upstream.requests) == 1


def test_legacy_completions_and_compact_are_recorded(strict: RunningProxy,
                                                     upstream: FakeUpstream) -> None:
    key_id, key = make_key(strict, ["openai"])
    auth = {"Authorization": f"Bearer {key}"}
    upstream.script(canned(wire.chat_json()))
    assert post(strict, "/v1/completions", {"model": "gpt-5", "prompt": "hi"}, auth)[0] == 200
    upstream.script(canned(wire.responses_json()))
    assert post(strict, "/v1/responses/compact", {"model": "gpt-5", "input": []}, auth)[0] == 200
    rows = strict.final_rows(2)
    assert [(r["provider"], r["path"], r["proxy_api_key_id"]) for r in rows] == [
        ("openai", "/v1/completions", key_id), ("openai", "/v1/responses/compact", key_id)]
    assert all(r["total_tokens"] > 0 for r in rows)


def test_unstorable_model_names_still_get_a_row(proxy: RunningProxy) -> None:
    body = b'{"model":"\\ud800gpt\\u0000' + b"x" * 500 + b'","messages":[]}'
    status, _, _ = post(proxy, "/v1/chat/completions", body)
    assert status == 200
    (row,) = proxy.final_rows()
    assert row["requested_model"] == "?gpt?" + "x" * 195
    assert row["lifecycle_status"] == "completed"

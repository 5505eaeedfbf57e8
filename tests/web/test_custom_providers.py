"""Custom providers end to end: real proxy, two real loopback upstreams besides the default,
exact upstream requests, rows, per-provider breakers, reloads that keep a good config."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from agent_cli_proxy.config import Settings
from agent_cli_proxy.storage.api_keys import create_key
from tests import wire
from tests.cli.test_shutdown import serving
from tests.conftest import RunningProxy, start_proxy, wait_until
from tests.fake_upstream import FakeUpstream, Script
from tests.web.test_admin import get
from tests.web.test_relay_formats import post

ALPHA_KEY = "alpha-secret-from-env"
BETA_KEY = "beta-secret-literal"
CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-beta-1", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def alpha() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture
def beta() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


def document(alpha: FakeUpstream, beta: FakeUpstream, **alpha_changes: Any) -> dict[str, Any]:
    return {"providers": [
        {"id": "alpha", "type": "openai-compatible",
         "paths": ["/v1/chat/completions", "/v1/models"], "models": ["alpha-"],
         "upstreamBaseUrl": alpha.url + "/", "headers": {"X-Team": "blue"},
         "auth": {"type": "bearer", "env": "ALPHA_KEY"}, "stripProviderField": True,
         **alpha_changes},
        {"id": "beta", "type": "anthropic",
         "paths": ["/v1/messages", "/api/provider/beta/v1/messages"],
         "models": ["claude-beta"], "upstreamBaseUrl": beta.url, "upstreamPath": "/v1/messages",
         "auth": {"type": "x-api-key", "value": BETA_KEY, "header": "api-key"}},
        {"id": "bare", "type": "openai-compatible", "paths": ["/v1/chat/completions"],
         "models": ["bare-"], "upstreamBaseUrl": beta.url, "auth": "none"},
        {"id": "keep", "type": "openai-compatible", "paths": ["/v1/responses"],
         "upstreamBaseUrl": alpha.url},
    ]}


@pytest.fixture
def providers_file(tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream) -> Path:
    path = tmp_path / "providers.json"
    path.write_text(json.dumps(document(alpha, beta)))
    return path


@pytest.fixture
def custom(make_settings: Callable[..., Settings], providers_file: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningProxy]:
    monkeypatch.setenv("ALPHA_KEY", ALPHA_KEY)
    running = start_proxy(make_settings(providers_config_path=str(providers_file),
                                        upstream_circuit_breaker_open_after_failures=2))
    yield running
    running.stop()


def headers_of(recorded: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in recorded.headers}


def test_x_provider_header_selects_a_provider_and_its_auth(
        custom: RunningProxy, alpha: FakeUpstream, upstream: FakeUpstream) -> None:
    body = json.dumps(CHAT).encode()
    status, _, answer = post(custom, "/v1/chat/completions?trace=1&key=sk-client", body, {
        "x-provider": "alpha", "Authorization": "Bearer sk-client", "x-api-key": "sk-client",
        "x-proxy-key": "acp_whatever", "X-Forwarded-For": "10.1.2.3", "CF-Ray": "abc",
        "X-Custom": "kept"})
    assert status == 200 and answer == wire.chat_json().body
    (sent,) = alpha.requests
    headers = headers_of(sent)
    # Explicit selection wins over the model list (gpt-5 is not an alpha- model).
    assert (sent.method, sent.path, sent.query) == ("POST", "/v1/chat/completions", "trace=1")
    assert sent.body == body  # no provider member: the bytes are left alone
    assert headers["authorization"] == f"Bearer {ALPHA_KEY}"
    assert headers["x-team"] == "blue" and headers["x-custom"] == "kept"
    for gone in ("x-provider", "x-proxy-key", "x-api-key", "x-forwarded-for", "cf-ray",
                 "anthropic-version"):
        assert gone not in headers, gone
    assert upstream.requests == []
    (row,) = custom.final_rows()
    assert (row["provider"], row["actual_provider"], row["lifecycle_status"],
            row["total_tokens"]) == ("openai", "alpha", "completed",
                                     wire.CHAT_BUCKETS.total_tokens)


def test_body_provider_field_stripped_or_kept_as_configured(
        custom: RunningProxy, alpha: FakeUpstream, beta: FakeUpstream) -> None:
    stripped = {"provider": "alpha", **CHAT}
    assert post(custom, "/v1/chat/completions", stripped)[0] == 200
    (to_alpha,) = alpha.requests
    assert b'"provider"' not in to_alpha.body and to_alpha.json() == CHAT

    kept = json.dumps({"provider": "beta", **MESSAGES, "model": "other"}).encode()
    status, _, answer = post(custom, "/api/provider/beta/v1/messages?beta=true", kept, {
        "x-api-key": "sk-ant-client", "Authorization": "Bearer sk-ant-client"})
    assert (status, answer) == (200, wire.messages_json().body)
    (to_beta,) = beta.requests
    headers = headers_of(to_beta)
    assert (to_beta.path, to_beta.query, to_beta.body) == ("/v1/messages", "beta=true", kept)
    assert headers["api-key"] == BETA_KEY
    assert "authorization" not in headers and "x-api-key" not in headers
    assert headers["anthropic-version"] == "2023-06-01"  # added: the client sent none
    rows = custom.final_rows(2)
    assert [(r["actual_provider"], r["provider"], r["path"]) for r in rows] == [
        ("alpha", "openai", "/v1/chat/completions"),
        ("beta", "anthropic", "/api/provider/beta/v1/messages")]


def test_model_lists_route_and_the_rest_goes_to_the_default_upstream(
        custom: RunningProxy, alpha: FakeUpstream, beta: FakeUpstream,
        upstream: FakeUpstream) -> None:
    post(custom, "/v1/chat/completions", {**CHAT, "model": "alpha-large"})
    post(custom, "/v1/chat/completions", {**CHAT, "model": "bare-7b"},
         {"Authorization": "Bearer sk-client", "x-goog-api-key": "g", "x-api-key": "k"})
    post(custom, "/v1/messages", MESSAGES, {"anthropic-version": "2023-01-01"})
    post(custom, "/v1/chat/completions?key=sk-client", CHAT, {"x-provider": "cliproxyapi"})
    post(custom, "/v1/messages", {**MESSAGES, "model": "claude-sonnet-4-5"})
    assert [r.json()["model"] for r in alpha.requests] == ["alpha-large"]
    bare, to_beta = beta.requests
    assert not {"authorization", "x-goog-api-key", "x-api-key"} & set(headers_of(bare))
    assert bare.path == "/v1/chat/completions"
    assert headers_of(to_beta)["anthropic-version"] == "2023-01-01"  # the client's, kept
    # Exactly as without custom providers: the upstream key replaces the client's.
    default_chat, default_messages = upstream.requests
    assert default_chat.query == "key=upstream-secret"
    assert headers_of(default_chat)["authorization"] == "Bearer upstream-secret"
    assert "x-provider" not in headers_of(default_chat)
    assert default_messages.json()["model"] == "claude-sonnet-4-5"
    assert [r["actual_provider"] for r in custom.final_rows(5)] == [
        "alpha", "bare", "beta", "cliproxyapi", "cliproxyapi"]


def test_calls_without_a_row_route_by_path_and_body_model(
        custom: RunningProxy, alpha: FakeUpstream, upstream: FakeUpstream) -> None:
    status, body = get(custom.url, "/v1/models", {"x-provider": "alpha"})
    assert (status, body["data"][0]["id"]) == (200, "gpt-5")
    assert alpha.last().path == "/v1/models"
    # A GET has no model: alpha's model list keeps it; the default upstream answers.
    get(custom.url, "/v1/models")
    assert upstream.last().path == "/v1/models"
    assert custom.rows() == []


def test_preserve_keeps_client_credentials_but_never_a_managed_key(
        make_settings: Callable[..., Settings], providers_file: Path,
        alpha: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(providers_config_path=str(providers_file)))
    try:
        _, managed = create_key(proxy.db, "laptop", allowed_providers=None,
                                allowed_accounts=None, now_iso="2026-01-01T00:00:00.000Z")
        status, _, _ = post(proxy, f"/v1/responses?key={managed}&mode=x",
                            {"model": "gpt-5-codex", "input": "hi"},
                            {"Authorization": "Bearer sk-own-openai", "x-api-key": managed})
        assert status == 200
        sent = alpha.last()
        headers = headers_of(sent)
        assert headers["authorization"] == "Bearer sk-own-openai"
        assert "x-api-key" not in headers and sent.query == "mode=x"
        (row,) = proxy.final_rows()
        assert (row["actual_provider"], row["proxy_api_key_id"]) == ("keep", 1)
    finally:
        proxy.stop()


def test_an_explicit_provider_that_cannot_serve_is_refused_in_the_clients_shape(
        custom: RunningProxy, alpha: FakeUpstream, beta: FakeUpstream,
        upstream: FakeUpstream) -> None:
    status, _, body = post(custom, "/v1/chat/completions", CHAT, {"x-provider": "nope"})
    error = json.loads(body)["error"]
    assert (status, error["code"], error["type"]) == (400, "unknown_provider",
                                                      "invalid_request_error")
    assert "'nope'" in error["message"] and "alpha" in error["message"]
    status, _, body = post(custom, "/v1/chat/completions", CHAT, {"x-provider": "x" * 500})
    error = json.loads(body)["error"]
    # A huge id is not echoed back whole.
    assert (status, error["provider"]) == (400, "x" * 80) and "x" * 81 not in error["message"]
    status, _, body = post(custom, "/v1/messages", {"provider": "alpha", **MESSAGES})
    answer = json.loads(body)
    assert (status, answer["type"], answer["error"]["code"]) == (
        400, "error", "provider_path_not_served")
    assert "/v1/messages" in answer["error"]["message"]
    assert alpha.requests == beta.requests == upstream.requests == []
    assert custom.rows() == []


def test_each_provider_has_its_own_breaker(custom: RunningProxy, alpha: FakeUpstream,
                                            beta: FakeUpstream) -> None:
    for _ in range(2):
        alpha.script(Script(502, content_type="text/html", pieces=[b"bad gateway"],
                            framing="length"))
        assert post(custom, "/v1/chat/completions", CHAT, {"x-provider": "alpha"})[0] == 502
    status, _, body = post(custom, "/v1/chat/completions", CHAT, {"x-provider": "alpha"})
    assert (status, json.loads(body)["error"]["code"]) == (503, "circuit_open")
    assert "upstream alpha is failing" in json.loads(body)["error"]["message"]
    assert len(alpha.requests) == 2  # refused without asking it
    # The others still serve.
    assert post(custom, "/v1/messages", MESSAGES)[0] == 200
    assert post(custom, "/v1/chat/completions", CHAT)[0] == 200
    breakers = {b["providerId"]: b["state"] for b in get(custom.url, "/admin/breakers")[1][
        "breakers"]}
    assert breakers == {"alpha": "open", "beta": "closed", "cliproxyapi": "closed"}
    assert [r["actual_provider"] for r in custom.final_rows(5)] == [
        "alpha", "alpha", "alpha", "beta", "cliproxyapi"]


def test_admin_lists_providers_without_credentials(custom: RunningProxy,
                                                    providers_file: Path) -> None:
    status, body = get(custom.url, "/admin/providers")
    assert status == 200
    assert (body["source"], body["path"]) == ("PROVIDERS_CONFIG_PATH", str(providers_file))
    assert [p["id"] for p in body["providers"]] == ["cliproxyapi", "alpha", "beta", "bare",
                                                    "keep"]
    beta_view = body["providers"][2]
    assert beta_view["auth"] == {"type": "x-api-key", "value": "[redacted]",
                                 "header": "api-key"}
    assert body["providers"][1]["headers"] == ["X-Team"]
    text = json.dumps(body)
    assert BETA_KEY not in text and ALPHA_KEY not in text and "blue" not in text


def test_a_bad_reload_keeps_the_providers_in_force(custom: RunningProxy,
                                                     providers_file: Path, alpha: FakeUpstream,
                                                     beta: FakeUpstream) -> None:
    broken = document(alpha, beta)
    broken["providers"][1]["auth"] = {"type": "bearer", "value": BETA_KEY, "scheme": "x"}
    broken["providers"][0]["type"] = "openai"
    providers_file.write_text(json.dumps(broken))
    status, body = get(custom.url, "/admin/providers/reload", method="POST")
    assert (status, body["ok"], body["error"]["code"]) == (400, False, "invalid_providers")
    assert body["issues"] == [
        {"name": "providers[0].type", "message": "must be one of openai-compatible, anthropic"},
        {"name": "providers[1].auth.scheme", "message": "is not supported"}]
    assert BETA_KEY not in json.dumps(body)
    post(custom, "/v1/chat/completions", CHAT, {"x-provider": "alpha"})
    assert headers_of(alpha.last())["x-team"] == "blue"  # the old config still routes

    providers_file.write_text(json.dumps(document(alpha, beta, headers={"X-Team": "red"})))
    status, body = get(custom.url, "/admin/providers/reload", method="POST")
    assert (status, body["ok"]) == (200, True)
    assert [p["id"] for p in body["providers"]][1:] == ["alpha", "beta", "bare", "keep"]
    post(custom, "/v1/chat/completions", CHAT, {"x-provider": "alpha"})
    assert headers_of(alpha.last())["x-team"] == "red"


def test_real_sdks_reach_their_providers(custom: RunningProxy, alpha: FakeUpstream,
                                         beta: FakeUpstream) -> None:
    with openai.OpenAI(base_url=custom.url + "/v1", api_key="sk-client", max_retries=0,
                       timeout=30, default_headers={"x-provider": "alpha"}) as client:
        chunks = list(client.chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello!"
    assert all(c.usage is None for c in chunks)  # the proxy's usage request stays hidden
    assert headers_of(alpha.last())["authorization"] == f"Bearer {ALPHA_KEY}"
    with anthropic.Anthropic(base_url=custom.url, api_key="sk-ant-client", max_retries=0,
                             timeout=30) as client2:
        message = client2.messages.create(model="claude-beta-2", max_tokens=64,
                                          messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Hello"  # type: ignore[union-attr]
    sent = headers_of(beta.last())
    assert sent["api-key"] == BETA_KEY and "x-api-key" not in sent
    chat, messages = custom.final_rows(2)
    assert (chat["actual_provider"], chat["streamed"], chat["total_tokens"]) == (
        "alpha", 1, wire.CHAT_BUCKETS.total_tokens)
    assert (messages["actual_provider"], messages["tool"]) == ("beta", "anthropic-sdk")


def test_claude_code_transform_only_for_other_clients(
        make_settings: Callable[..., Settings], tmp_path: Path, beta: FakeUpstream) -> None:
    pytest.importorskip("agent_cli_proxy.providers.claude_code")
    path = tmp_path / "cc.json"
    path.write_text(json.dumps({"providers": [
        {"id": "cc", "type": "anthropic", "paths": ["/v1/messages"], "models": ["claude-"],
         "upstreamBaseUrl": beta.url, "transform": "claude-code"}]}))
    proxy = start_proxy(make_settings(providers_config_path=str(path)))
    request = {**MESSAGES, "model": "claude-sonnet-4-5",
               "tools": [{"name": "bash", "input_schema": {"type": "object"}}]}
    answer = {"id": "msg_1", "type": "message", "role": "assistant",
              "model": "claude-sonnet-4-5", "stop_reason": "tool_use",
              "content": [{"type": "tool_use", "id": "t1", "name": "mcp_Bash", "input": {}}],
              "usage": {"input_tokens": 3, "output_tokens": 4}}
    try:
        beta.script(Script(pieces=[json.dumps(answer).encode()], framing="length"))
        status, _, body = post(proxy, "/v1/messages", request, {"User-Agent": "opencode/1.0"})
        assert status == 200
        assert json.loads(body)["content"][0]["name"] == "bash"  # the client's own name
        sent = beta.last()
        assert headers_of(sent)["user-agent"].startswith("claude-cli/")
        assert sent.json()["tools"][0]["name"] == "mcp_Bash"

        # Claude Code itself: never altered, in either direction.
        beta.script(Script(pieces=[json.dumps(answer).encode()], framing="length"))
        raw = json.dumps(request).encode()
        status, _, body = post(proxy, "/v1/messages", raw, {"User-Agent": "claude-cli/2.0.1"})
        assert json.loads(body)["content"][0]["name"] == "mcp_Bash"
        assert beta.last().body == raw
        assert headers_of(beta.last())["user-agent"] == "claude-cli/2.0.1"
    finally:
        proxy.stop()


def test_sighup_reloads_a_running_server_and_a_bad_file_changes_nothing(
        tmp_path: Path, upstream: FakeUpstream, alpha: FakeUpstream,
        beta: FakeUpstream, providers_file: Path) -> None:
    with serving(tmp_path, upstream, PROVIDERS_CONFIG_PATH=str(providers_file),
                 ALPHA_KEY=ALPHA_KEY) as (proc, port):
        url = f"http://127.0.0.1:{port}"
        lines: list[str] = proc.later_lines  # type: ignore[attr-defined]

        def events(name: str) -> list[dict[str, Any]]:
            return [e for e in map(json.loads, list(lines)) if e["event"] == name]

        def chat_to_alpha() -> str:
            status, body = get(url, "/v1/models", {"x-provider": "alpha"})
            assert status == 200, body
            return headers_of(alpha.last())["x-team"]

        assert chat_to_alpha() == "blue"
        providers_file.write_text('{"providers": [{"id": "alpha"}]}')
        proc.send_signal(signal.SIGHUP)
        failed = wait_until(lambda: events("providers.reload_failed"), what="a failed reload")
        assert "providers[0].type must be one of openai-compatible, anthropic" in failed[0][
            "issues"]
        assert proc.poll() is None and chat_to_alpha() == "blue"

        providers_file.write_text(json.dumps(document(alpha, beta, headers={"X-Team": "red"})))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: events("providers.reloaded"), what="a reload")
        assert chat_to_alpha() == "red"
        status, body = get(url, "/admin/providers")
        assert (status, body["providers"][1]["id"]) == (200, "alpha")

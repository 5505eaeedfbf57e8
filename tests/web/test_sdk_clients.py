"""The real OpenAI and Anthropic Python SDKs as clients of the proxy."""

from __future__ import annotations

import json
import socket

import anthropic
import openai
import pytest

from tests import wire
from tests.conftest import RunningProxy, start_proxy
from tests.fake_upstream import FakeUpstream
from tests.web.test_relay_formats import post


def openai_client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-client-key", max_retries=0,
                         timeout=30)


def anthropic_client(proxy: RunningProxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-client", max_retries=0,
                               timeout=30)


def test_openai_chat_non_streaming(proxy: RunningProxy, upstream: FakeUpstream) -> None:
    with openai_client(proxy) as client:
        completion = client.chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Hello!"
    assert completion.usage is not None and completion.usage.total_tokens == 1500
    assert upstream.last().header("authorization") == "Bearer upstream-secret"
    (row,) = proxy.final_rows()
    assert row["tool"] == "openai-sdk"
    assert (row["prompt_tokens"], row["cache_read_tokens"], row["completion_tokens"],
            row["reasoning_tokens"]) == (200, 1000, 300, 120)


def test_openai_chat_stream_without_usage_request(proxy: RunningProxy) -> None:
    with openai_client(proxy) as client:
        chunks = list(client.chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}], stream=True))
    # The client did not ask for usage: it sees no usage chunk, yet the row is exact.
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello!"
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    (row,) = proxy.final_rows()
    assert row["total_tokens"] == wire.CHAT_BUCKETS.total_tokens


def test_openai_chat_stream_with_usage_request(proxy: RunningProxy) -> None:
    with openai_client(proxy) as client:
        chunks = list(client.chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 1200
    (row,) = proxy.final_rows()
    assert row["cache_read_tokens"] == 1000


def test_openai_responses_stream(proxy: RunningProxy) -> None:
    with openai_client(proxy) as client:
        events = list(client.responses.create(model="gpt-5-codex", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    (row,) = proxy.final_rows()
    assert row["model"] == wire.RESP_MODEL
    assert (row["prompt_tokens"], row["cache_read_tokens"], row["completion_tokens"],
            row["reasoning_tokens"]) == (904, 4096, 800, 640)


def test_anthropic_messages(proxy: RunningProxy, upstream: FakeUpstream) -> None:
    with anthropic_client(proxy) as client:
        message = client.messages.create(model="claude-haiku-4-5", max_tokens=64,
                                         messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Hello"  # type: ignore[union-attr]
    # The SDK authenticates with a Bearer token; the proxy swaps it for the upstream key.
    assert upstream.last().header("authorization") == "Bearer upstream-secret"
    (row,) = proxy.final_rows()
    assert row["tool"] == "anthropic-sdk"
    assert row["cache_creation_tokens"] == 1000
    assert row["cache_creation_1h_tokens"] == 400


def test_anthropic_messages_stream(proxy: RunningProxy) -> None:
    with anthropic_client(proxy) as client, client.messages.stream(
            model="claude-haiku-4-5", max_tokens=64,
            messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello"
    assert final.usage.output_tokens == 42
    (row,) = proxy.final_rows()
    assert row["streamed"] == 1
    assert (row["prompt_tokens"], row["cache_read_tokens"], row["cache_creation_tokens"],
            row["completion_tokens"]) == (25, 2000, 1000, 42)


def test_client_name_mapping_names_the_instance_by_its_key(make_settings) -> None:
    proxy = start_proxy(make_settings(client_name_mapping={"sk-alice-key": "alice-laptop"}))
    try:
        for key in ("sk-alice-key", "sk-bob-key"):
            with openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0) as client:
                client.chat.completions.create(model="gpt-5", messages=[])
        alice, bob = proxy.final_rows(2)
    finally:
        proxy.stop()
    assert alice["client_id"] == "openai-sdk-alice-laptop"
    assert bob["client_id"].startswith("openai-sdk-key-")
    assert "bob" not in bob["client_id"]  # no key characters are ever stored


def test_proxy_errors_come_in_each_clients_own_shape(make_settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    proxy = start_proxy(make_settings(cli_proxy_api_url=f"http://127.0.0.1:{dead}"))
    try:
        with anthropic_client(proxy) as client, pytest.raises(anthropic.APIStatusError) as a:
            client.messages.create(model="claude-haiku-4-5", max_tokens=5,
                                   messages=[{"role": "user", "content": "hi"}])
        assert a.value.status_code == 502
        assert a.value.body["type"] == "error"  # type: ignore[index]
        assert a.value.body["error"]["type"] == "api_error"  # type: ignore[index]
        assert "refused" in a.value.message.lower()

        with openai_client(proxy) as oai, pytest.raises(openai.APIStatusError) as o:
            oai.chat.completions.create(model="gpt-5", messages=[])
        assert (o.value.status_code, o.value.code) == (502, "upstream_unavailable")

        status, _, body = post(proxy, "/v1beta/models/gemini-2.5-pro:generateContent", b"{}")
        error = json.loads(body)["error"]
        assert (status, error["code"], error["status"]) == (502, 502, "INTERNAL")
    finally:
        proxy.stop()

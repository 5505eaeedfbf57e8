"""Which requests are LLM calls: paths, methods, body parsing, and fuzzing."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_cli_proxy.providers.routes import (
    MAX_MODEL_CHARS,
    Family,
    LLMCall,
    classify,
    is_unbilled,
    storable_model,
)

OPENAI_CHAT, RESPONSES, ANTHROPIC, GEMINI = (
    Family.OPENAI_CHAT,
    Family.OPENAI_RESPONSES,
    Family.ANTHROPIC,
    Family.GEMINI,
)


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/v1/chat/completions",
            b'{"model":"gpt-4.1","stream":true}',
            LLMCall(OPENAI_CHAT, "openai", "gpt-4.1", True),
        ),
        (
            "/v1/chat/completions",
            b'{"model":"gpt-4.1"}',
            LLMCall(OPENAI_CHAT, "openai", "gpt-4.1", False),
        ),
        (
            "/v1/responses",
            b'{"model":"gpt-5-codex","stream":true,"input":[]}',
            LLMCall(RESPONSES, "openai", "gpt-5-codex", True),
        ),
        (
            "/v1/messages",
            b'{"model":"claude-sonnet-4-5","stream":"true","max_tokens":1}',
            LLMCall(ANTHROPIC, "anthropic", "claude-sonnet-4-5", True),
        ),
        (
            "/v1/messages?beta=true",
            b'{"model":"claude-sonnet-4-5"}',
            LLMCall(ANTHROPIC, "anthropic", "claude-sonnet-4-5", False),
        ),
        (
            "/v1beta/models/gemini-2.5-pro:generateContent",
            b'{"contents":[]}',
            LLMCall(GEMINI, "gemini", "gemini-2.5-pro", False),
        ),
        (
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            b'{"stream":false}',
            LLMCall(GEMINI, "gemini", "gemini-2.5-pro", True),
        ),
        (
            "/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            b"",
            LLMCall(GEMINI, "gemini", "gemini-2.5-flash", True),
        ),
        (
            "/v1alpha/models/gemini%2D2.5-flash%3AgenerateContent",
            b"",
            LLMCall(GEMINI, "gemini", "gemini-2.5-flash", False),
        ),
        (
            "/v1internal:streamGenerateContent?alt=sse",
            b'{"model":"gemini-2.5-pro","project":"p","request":{"contents":[]}}',
            LLMCall(GEMINI, "gemini", "gemini-2.5-pro", True),
        ),
        (
            "/v1internal:generateContent",
            b'{"model":"gemini-2.5-flash"}',
            LLMCall(GEMINI, "gemini", "gemini-2.5-flash", False),
        ),
    ],
)
def test_llm_calls(path: str, body: bytes, expected: LLMCall) -> None:
    assert classify("POST", path, body) == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/v1beta/models/gemini-2.5-pro:countTokens"),
        ("POST", "/v1internal:countTokens"),
        ("POST", "/v1internal:loadCodeAssist"),
        ("GET", "/v1/models"),
        ("GET", "/v1/chat/completions"),
        ("GET", "/v1beta/models/gemini-2.5-pro:generateContent"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1beta/models/:generateContent"),
        ("POST", "/v1beta/models/gemini-2.5-pro"),
        ("POST", "/v1/chat/completions/extra"),
        ("POST", "/admin/usage"),
    ],
)
def test_not_llm_calls(method: str, path: str) -> None:
    assert classify(method, path, b'{"model":"x","stream":true}') is None


def test_method_case_is_ignored() -> None:
    assert classify("post", "/v1/responses", b"{}") == LLMCall(RESPONSES, "openai", None, False)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'"str"',
        b"\xff\xfe",
        b'{"model":5,"stream":1}',
        b"[" * 100_000,
        b'{"model":"","stream":"yes"}',
    ],
)
def test_unparseable_bodies_are_still_llm_calls(body: bytes) -> None:
    assert classify("POST", "/v1/chat/completions", body) == LLMCall(
        OPENAI_CHAT, "openai", None, False
    )


@given(method=st.text(max_size=8), path=st.text(max_size=80), body=st.binary(max_size=200))
def test_never_raises(method: str, path: str, body: bytes) -> None:
    result = classify(method, path, body)
    assert result is None or isinstance(result, LLMCall)


_known = st.sampled_from(
    [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/responses",
        "/v1internal:generateContent",
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
    ]
)


@given(path=_known, body=st.binary(max_size=200))
def test_known_paths_always_classify(path: str, body: bytes) -> None:
    assert classify("POST", path, body) is not None


# -- routes CLIProxyAPI also bills (amp provider aliases, legacy completions, compact) -----


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/v1/completions",
            b'{"model":"gpt-3.5-turbo-instruct","prompt":"hi","stream":true}',
            LLMCall(OPENAI_CHAT, "openai", "gpt-3.5-turbo-instruct", True),
        ),
        (
            "/v1/responses/compact",
            b'{"model":"gpt-5-codex","input":[]}',
            LLMCall(RESPONSES, "openai", "gpt-5-codex", False),
        ),
        (
            "/backend-api/codex/responses",
            b'{"model":"gpt-5-codex","stream":true}',
            LLMCall(RESPONSES, "openai", "gpt-5-codex", True),
        ),
        (
            "/backend-api/codex/responses/compact",
            b'{"model":"gpt-5-codex"}',
            LLMCall(RESPONSES, "openai", "gpt-5-codex", False),
        ),
        (
            "/api/provider/anthropic/v1/messages",
            b'{"model":"claude-sonnet-4-5","stream":true}',
            LLMCall(ANTHROPIC, "anthropic", "claude-sonnet-4-5", True),
        ),
        (
            "/api/provider/openai/v1/chat/completions?x=1",
            b'{"model":"gpt-5"}',
            LLMCall(OPENAI_CHAT, "openai", "gpt-5", False),
        ),
        (
            "/api/provider/openai/v1/responses",
            b'{"model":"gpt-5","stream":true}',
            LLMCall(RESPONSES, "openai", "gpt-5", True),
        ),
        (
            "/api/provider/openai/v1/completions",
            b'{"model":"gpt-5"}',
            LLMCall(OPENAI_CHAT, "openai", "gpt-5", False),
        ),
        # Amp's prefix-less routes (providers such as groq/cerebras omit /v1).
        (
            "/api/provider/groq/chat/completions",
            b'{"model":"llama","stream":true}',
            LLMCall(OPENAI_CHAT, "openai", "llama", True),
        ),
        (
            "/api/provider/groq/completions",
            b'{"model":"llama"}',
            LLMCall(OPENAI_CHAT, "openai", "llama", False),
        ),
        (
            "/api/provider/cerebras/responses",
            b'{"model":"gpt-oss"}',
            LLMCall(RESPONSES, "openai", "gpt-oss", False),
        ),
        (
            "/api/provider/google/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            b"{}",
            LLMCall(GEMINI, "gemini", "gemini-2.5-pro", True),
        ),
        # Amp's Gemini bridge: the action follows the first "/models/".
        (
            "/api/provider/google/v1beta1/publishers/google/models/gemini-3-pro:generateContent",
            b"{}",
            LLMCall(GEMINI, "gemini", "gemini-3-pro", False),
        ),
        # CLIProxyAPI "prefix/model" names: the Gemini model may contain "/".
        (
            "/v1beta/models/prod/gemini-2.5-pro:generateContent",
            b"{}",
            LLMCall(GEMINI, "gemini", "prod/gemini-2.5-pro", False),
        ),
        (
            "/api/provider/google/v1beta/models/team/a/gemini-2.5-flash:streamGenerateContent",
            b"",
            LLMCall(GEMINI, "gemini", "team/a/gemini-2.5-flash", True),
        ),
    ],
)
def test_more_billed_routes(path: str, body: bytes, expected: LLMCall) -> None:
    assert classify("POST", path, body) == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/provider/openai/v1/models"),
        ("POST", "/api/provider/anthropic/v1/messages/count_tokens"),
        ("POST", "/api/provider/google/v1beta/models/gemini-2.5-pro:countTokens"),
        ("POST", "/api/provider/anthropic"),
        ("POST", "/api/provider//v1/messages"),
        ("POST", "/api/provider/a/api/provider/b/v1/messages"),  # the prefix is dropped once
        ("POST", "/v1beta1/publishers/google/models/gemini-3-pro:generateContent"),  # Amp only
        ("GET", "/api/provider/google/v1beta1/publishers/google/models/g:generateContent"),
        ("GET", "/v1/completions"),
        ("POST", "/v1/responses/compact/x"),
    ],
)
def test_more_non_llm_calls(method: str, path: str) -> None:
    assert classify(method, path, b'{"model":"x","stream":true}') is None


# -- JSON tricks: duplicate keys and unstorable model names ----------------------------------


@pytest.mark.parametrize(
    ("body", "model", "stream"),
    [
        # CLIProxyAPI (gjson) honours the FIRST occurrence; json.loads would keep the last.
        (b'{"model":"cheap-model","model":"claude-opus-4-1"}', "cheap-model", False),
        (b'{"model":"x","stream":false,"stream":true}', "x", False),
        (b'{"stream":true,"model":"x","stream":false}', "x", True),
        (b'{"model":"a","mod\\u0065l":"b"}', "a", False),  # an escaped key is the same key
        (b'{"model":"a","model":"a"}', "a", False),  # even when the values agree
    ],
)
def test_duplicate_model_or_stream_is_ambiguous(body: bytes, model: str, stream: bool) -> None:
    for path in ("/v1/chat/completions", "/v1/messages", "/api/provider/x/v1/responses"):
        call = classify("POST", path, body)
        assert call is not None
        assert (call.requested_model, call.stream, call.ambiguous) == (model, stream, True)


def test_code_assist_duplicate_model_is_ambiguous() -> None:
    call = classify("POST", "/v1internal:generateContent", b'{"model":"a","model":"b"}')
    assert call == LLMCall(GEMINI, "gemini", "a", False, ambiguous=True)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # Other keys, or model/stream below the top level, decide nothing here.
        ("/v1/chat/completions", b'{"model":"a","messages":[],"messages":[]}'),
        ("/v1/chat/completions", b'{"model":"a","metadata":{"model":"b","model":"c"}}'),
        ("/v1/chat/completions", b'{"x":{"stream":true,"stream":false},"model":"a"}'),
        ("/v1/chat/completions", b'[{"model":"a","model":"b"}]'),
        # Gemini takes model and stream from the path: its body cannot be ambiguous.
        ("/v1beta/models/gemini-2.5-pro:generateContent", b'{"model":"a","model":"b"}'),
        ("/v1internal:generateContent", b'{"model":"a","stream":true,"stream":false}'),
    ],
)
def test_not_ambiguous(path: str, body: bytes) -> None:
    call = classify("POST", path, body)
    assert call is not None and call.ambiguous is False


def test_ambiguous_defaults_to_false() -> None:
    assert LLMCall(OPENAI_CHAT, "openai", "m", False).ambiguous is False


def _storable(model: str) -> bool:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (m TEXT)")
        conn.execute("INSERT INTO t VALUES (?)", (model,))
        return bool(conn.execute("SELECT m FROM t").fetchone()[0] == model)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("body", "model"),
    [
        (b'{"model":"\\ud800"}', "?"),
        (b'{"model":"gpt-5\\udfff\\ud83d"}', "gpt-5??"),
        (b'{"model":"\\ud83d\\ude00"}', "\U0001f600"),  # a valid pair is one character
        (b'{"model":"a\\u0000b\\nc\\u001b[31m\\u007f\\u0085"}', "a?b?c?[31m??"),
        (b'{"model":"' + b"m" * 5000 + b'"}', "m" * MAX_MODEL_CHARS),
        (b'{"model":"caf\xc3\xa9 \xe2\x80\x94 ok"}', "caf\u00e9 \u2014 ok"),  # kept as sent
    ],
)
def test_requested_model_is_made_storable(body: bytes, model: str) -> None:
    call = classify("POST", "/v1/chat/completions", body)
    assert call is not None and call.requested_model == model
    assert _storable(model)


def test_gemini_path_model_is_made_storable() -> None:
    call = classify("POST", "/v1beta/models/gem%0Aini%00" + "x" * 300 + ":generateContent", b"")
    assert call is not None and call.requested_model == "gem?ini?" + "x" * 192


@given(st.text(max_size=400))
def test_storable_model_always_stores(model: str) -> None:
    cleaned = storable_model(model)
    assert len(cleaned) <= MAX_MODEL_CHARS
    cleaned.encode("utf-8")  # never raises
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in cleaned)
    if model[:MAX_MODEL_CHARS].isprintable():
        assert cleaned == model[:MAX_MODEL_CHARS]


@given(model=st.text(max_size=300), path=_known)
def test_any_json_model_is_storable(model: str, path: str) -> None:
    body = json.dumps({"model": model}).encode()  # ensure_ascii: surrogates as escapes
    call = classify("POST", path, body)
    assert call is not None
    assert call.requested_model is None or _storable(call.requested_model)


# -- is_unbilled ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("HEAD", "/"),
        ("GET", "/v1/models"),
        ("get", "/v1/models?client_version=1"),
        ("HEAD", "/v1/models"),
        ("GET", "/v1/models/gpt-5"),
        ("GET", "/v1beta/models"),
        ("GET", "/v1beta/models/gemini-2.5-pro"),
        ("GET", "/v1beta/models/prod/gemini-2.5-pro"),
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/v1/messages/count_tokens?beta=true"),
        ("POST", "/v1beta/models/gemini-2.5-pro:countTokens"),
        ("POST", "/v1beta/models/prod/gemini-2.5-pro:countTokens"),
        ("POST", "/v1internal:countTokens"),
        ("GET", "/api/provider/openai/v1/models"),
        ("GET", "/api/provider/groq/models"),
        ("GET", "/api/provider/google/v1beta/models"),
        ("GET", "/api/provider/google/v1beta/models/gemini-2.5-pro"),
        ("POST", "/api/provider/anthropic/v1/messages/count_tokens"),
        ("POST", "/api/provider/google/v1beta/models/gemini-2.5-pro:countTokens"),
    ],
)
def test_unbilled(method: str, path: str) -> None:
    assert is_unbilled(method, path) is True
    assert classify(method, path, b'{"model":"x","stream":true}') is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/messages"),
        ("POST", "/v1beta/models/gemini-2.5-pro:generateContent"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/images/generations"),
        ("POST", "/v1beta/interactions"),
        ("POST", "/v1beta/models/gemini-2.5-pro:embedContent"),
        ("POST", "/v1beta/models/:countTokens"),
        ("POST", "/v1beta/models/x%3AcountTokens"),  # the upstream sees no ":" here
        ("POST", "/v1/messages/count_tokens/extra"),
        ("POST", "/v1/models"),
        ("POST", "/"),
        ("PUT", "/v1/messages/count_tokens"),
        ("DELETE", "/v1/models"),
        ("GET", "/v1/models/"),
        ("GET", "/v1beta/models/gemini-2.5-pro:generateContent"),
        ("GET", "/v1alpha/models"),
        ("GET", "/v1/responses"),  # CLIProxyAPI's Responses WebSocket
        ("GET", "/v0/management/config"),
        ("GET", "/api/provider/x"),
        ("GET", "/api/user"),
        ("POST", "/api/provider/a/api/provider/b/v1/messages/count_tokens"),
        ("GET", ""),
        ("GET", "//"),
    ],
)
def test_possibly_billable(method: str, path: str) -> None:
    assert is_unbilled(method, path) is False


@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "x"]) | st.text(max_size=8),
       path=st.text(max_size=80))
def test_is_unbilled_is_total_and_never_an_llm_call(method: str, path: str) -> None:
    if is_unbilled(method, path):
        assert classify(method, path, b'{"model":"m","stream":true}') is None

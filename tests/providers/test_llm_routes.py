"""Which requests are LLM calls: paths, methods, body parsing, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_cli_proxy.providers.routes import Family, LLMCall, classify

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

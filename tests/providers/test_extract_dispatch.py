"""Dispatch and robustness of usage extraction: every family, any garbage, never raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_cli_proxy.providers.extract import (
    Extracted,
    StreamExtractor,
    count,
    stream_extractor,
    usage_from_json,
)
from agent_cli_proxy.providers.routes import Family
from agent_cli_proxy.upstream.sse import SSEEvent
from agent_cli_proxy.usage.model import Usage


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5),
        (0, 0),
        (-1, None),
        (True, None),
        (3.0, 3),
        (3.5, None),
        (float("nan"), None),
        (float("inf"), None),
        ("42", 42),
        ("-4", None),
        ("4.0", None),
        ("", None),
        ("٣", None),
        (None, None),
        ([1], None),
        (2**53, 2**53),
        (2**53 + 1, None),
    ],
)
def test_count_validation(value: object, expected: int | None) -> None:
    assert count(value) == expected


def test_each_family_reads_only_its_own_format() -> None:
    chat = b'{"model":"m","usage":{"prompt_tokens":10,"completion_tokens":2}}'
    anthropic = b'{"model":"m","usage":{"input_tokens":10,"output_tokens":2}}'
    gemini = (
        b'{"modelVersion":"m","usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":2}}'
    )
    expected = Extracted(Usage(prompt_tokens=10, completion_tokens=2), "m")
    assert usage_from_json(Family.OPENAI_CHAT, chat) == expected
    assert usage_from_json(Family.OPENAI_RESPONSES, anthropic) == expected
    assert usage_from_json(Family.ANTHROPIC, anthropic) == expected
    assert usage_from_json(Family.GEMINI, gemini) == expected
    assert usage_from_json(Family.ANTHROPIC, chat).usage is None
    assert usage_from_json(Family.GEMINI, chat).usage is None


def test_all_zero_usage_is_usage_not_none() -> None:
    body = b'{"usage":{"input_tokens":0,"output_tokens":0}}'
    assert usage_from_json(Family.ANTHROPIC, body).usage == Usage()
    assert usage_from_json(Family.ANTHROPIC, b'{"usage":{}}').usage is None


def test_done_and_non_json_events_are_skipped() -> None:
    extractor = stream_extractor(Family.OPENAI_CHAT)
    for data in ("[DONE]", "", "usage", '{"usage": oops', '"model"'):
        extractor.feed(SSEEvent(None, data, None))
    assert (extractor.usage, extractor.model) == (None, None)


def test_stream_extractor_type() -> None:
    assert isinstance(stream_extractor(Family.GEMINI), StreamExtractor)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "usage",
                    "model",
                    "message",
                    "type",
                    "response",
                    "usageMetadata",
                    "modelVersion",
                    "prompt_tokens",
                    "input_tokens",
                    "output_tokens",
                    "cached_tokens",
                    "cache_creation",
                    "prompt_tokens_details",
                    "promptTokenCount",
                    "thoughtsTokenCount",
                    "x",
                ]
            )
            | st.text(max_size=6),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)
_events = st.sampled_from(["message_start", "message_delta", "response.completed", None, "x"])


@settings(max_examples=300, deadline=None)
@given(
    family=st.sampled_from(list(Family)),
    values=st.lists(_json, max_size=5),
    names=st.lists(_events, min_size=1, max_size=5),
)
def test_never_raises_on_arbitrary_json(
    family: Family, values: list[object], names: list[str | None]
) -> None:
    for value in values:
        try:
            text = json.dumps(value)
        except ValueError:
            continue
        got = usage_from_json(family, text.encode())
        assert (
            got.usage is None
            or min(
                got.usage.prompt_tokens,
                got.usage.cache_read_tokens,
                got.usage.cache_creation_tokens,
                got.usage.completion_tokens,
            )
            >= 0
        )
    extractor = stream_extractor(family)
    for i, value in enumerate(values):
        extractor.feed(SSEEvent(names[i % len(names)], json.dumps(value), None))
    assert extractor.usage is None or isinstance(extractor.usage, Usage)


@settings(max_examples=300, deadline=None)
@given(
    family=st.sampled_from(list(Family)), body=st.binary(max_size=200), data=st.text(max_size=200)
)
def test_never_raises_on_garbage_bytes(family: Family, body: bytes, data: str) -> None:
    usage_from_json(family, body)
    usage_from_json(family, b"[" * 50_000 + body)
    extractor = stream_extractor(family)
    extractor.feed(SSEEvent(None, data, None))
    extractor.feed(SSEEvent(None, '{"usage":' * 50_000, None))

"""Gemini usageMetadata: thoughts beside candidates, cached inside the prompt, Code Assist."""

from __future__ import annotations

import json
from collections.abc import Callable

from agent_cli_proxy.providers.extract import Extracted, usage_from_json
from agent_cli_proxy.providers.routes import Family
from agent_cli_proxy.usage.model import Usage

Runner = Callable[[Family, str], Extracted]
GEMINI = Family.GEMINI


def _chunk(text: str, usage: dict[str, object], finish: bool = False) -> dict[str, object]:
    candidate: dict[str, object] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if finish:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-pro",
        "responseId": "mB9eaPmBLuOkz7IPsrKr0Q8",
    }


_RUNNING = {
    "promptTokenCount": 9000,
    "totalTokenCount": 9000,
    "cachedContentTokenCount": 8192,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9000}],
    "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 8192}],
}
_FINAL = {
    **_RUNNING,
    "candidatesTokenCount": 120,
    "thoughtsTokenCount": 400,
    "totalTokenCount": 9520,
}
CHUNKS = [
    _chunk("The", {**_RUNNING, "thoughtsTokenCount": 400}),
    _chunk(" answer", {**_RUNNING, "candidatesTokenCount": 60, "thoughtsTokenCount": 400}),
    _chunk(" is 42.", _FINAL, finish=True),
]
# Google's SSE framing uses CRLF line breaks.
SSE = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in CHUNKS)
EXPECTED = Usage(
    prompt_tokens=808, cache_read_tokens=8192, completion_tokens=520, reasoning_tokens=400
)


def test_generate_content_json() -> None:
    body = json.dumps(CHUNKS[-1], indent=2).encode()
    assert usage_from_json(GEMINI, body) == Extracted(EXPECTED, "gemini-2.5-pro")
    assert EXPECTED.total_tokens == 9520


def test_stream_generate_content_sse_keeps_last_running_total(stream_usage: Runner) -> None:
    assert stream_usage(GEMINI, SSE) == Extracted(EXPECTED, "gemini-2.5-pro")


def test_stream_generate_content_json_array() -> None:
    # Without alt=sse the stream is one JSON array of chunks (application/json).
    body = ("[" + ",\r\n".join(json.dumps(c, indent=2) for c in CHUNKS) + "]").encode()
    assert usage_from_json(GEMINI, body) == Extracted(EXPECTED, "gemini-2.5-pro")


def test_code_assist_wrapper_stream(stream_usage: Runner) -> None:
    usage: dict[str, object] = {
        "promptTokenCount": 5000,
        "candidatesTokenCount": 30,
        "toolUsePromptTokenCount": 250,
        "thoughtsTokenCount": 90,
        "totalTokenCount": 5370,
    }
    chunks = [
        {
            "response": _chunk("x", {"promptTokenCount": 5000, "totalTokenCount": 5000}),
            "traceId": "c0ffee",
        },
        {
            "response": {**_chunk("y", usage, finish=True), "modelVersion": "gemini-2.5-flash"},
            "traceId": "c0ffee",
        },
    ]
    stream = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks)
    got = stream_usage(GEMINI, stream)
    assert got == Extracted(
        Usage(prompt_tokens=5250, completion_tokens=120, reasoning_tokens=90), "gemini-2.5-flash"
    )
    assert got.usage is not None and got.usage.total_tokens == 5370


def test_code_assist_wrapper_json() -> None:
    body = json.dumps({"response": CHUNKS[-1], "traceId": "1"}).encode()
    assert usage_from_json(GEMINI, body) == Extracted(EXPECTED, "gemini-2.5-pro")
    array = json.dumps([{"response": c} for c in CHUNKS]).encode()
    assert usage_from_json(GEMINI, array) == Extracted(EXPECTED, "gemini-2.5-pro")


def test_error_bodies() -> None:
    error = {
        "error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}
    }
    assert usage_from_json(GEMINI, json.dumps(error).encode()) == Extracted(None, None)
    assert usage_from_json(GEMINI, json.dumps([error]).encode()) == Extracted(None, None)


def test_cached_larger_than_prompt_loses_nothing() -> None:
    body = b'{"usageMetadata":{"promptTokenCount":10,"cachedContentTokenCount":50}}'
    assert usage_from_json(GEMINI, body).usage == Usage(prompt_tokens=10, cache_read_tokens=50)

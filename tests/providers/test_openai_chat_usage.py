"""OpenAI Chat Completions usage: JSON bodies and streams mapped into disjoint buckets."""

from __future__ import annotations

import json
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from agent_cli_proxy.providers.extract import Extracted, usage_from_json
from agent_cli_proxy.providers.openai_chat import to_usage
from agent_cli_proxy.providers.routes import Family
from agent_cli_proxy.usage.model import Usage

Runner = Callable[[Family, str], Extracted]
CHAT = Family.OPENAI_CHAT

# A reasoning model with a prompt-cache hit (shape of api.openai.com /v1/chat/completions).
CHAT_JSON = b"""{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "o3-mini-2025-01-31",
  "choices": [
    {
      "index": 0,
      "message": {"role": "assistant", "content": "Hi!", "refusal": null, "annotations": []},
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
      "reasoning_tokens": 192,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_42bfad963b"
}"""

# OpenRouter: cache writes are reported inside prompt_tokens too, plus its own cost.
OPENROUTER_JSON = b"""{"id":"gen-1747","provider":"Anthropic","model":"anthropic/claude-sonnet-4.5",
"object":"chat.completion","created":1747000000,"choices":[{"index":0,"finish_reason":"stop",
"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":10000,
"completion_tokens":50,"total_tokens":10050,"cost":0.0123,"is_byok":false,
"prompt_tokens_details":{"cached_tokens":6000,"cache_write_tokens":3000,"audio_tokens":0},
"cost_details":{"upstream_inference_cost":null},
"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":0}}}"""

_CHUNK = (
    '{"id":"chatcmpl-BkZ1","object":"chat.completion.chunk","created":1750000000,'
    '"model":"gpt-4.1-2025-04-14","service_tier":"default","system_fingerprint":"fp_b3f1157249",'
    '"choices":[%s],"usage":%s}'
)
CHAT_STREAM_WITH_USAGE = "".join(
    f"data: {chunk}\n\n"
    for chunk in (
        _CHUNK
        % (
            '{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
            '"logprobs":null,"finish_reason":null}',
            "null",
        ),
        _CHUNK
        % ('{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}', "null"),
        _CHUNK % ('{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}', "null"),
        _CHUNK
        % (
            "",
            '{"prompt_tokens":1200,"completion_tokens":20,"total_tokens":1220,'
            '"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},'
            '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
            '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}',
        ),
        "[DONE]",
    )
)


def test_json_body_with_cache_and_reasoning() -> None:
    got = usage_from_json(CHAT, CHAT_JSON)
    assert got.model == "o3-mini-2025-01-31"
    assert got.usage == Usage(
        prompt_tokens=86, cache_read_tokens=1920, completion_tokens=300, reasoning_tokens=192
    )
    assert got.usage.total_tokens == 2306


def test_openrouter_cache_write_tokens() -> None:
    got = usage_from_json(CHAT, OPENROUTER_JSON)
    assert got.usage == Usage(
        prompt_tokens=1000, cache_read_tokens=6000, cache_creation_tokens=3000, completion_tokens=50
    )
    assert got.model == "anthropic/claude-sonnet-4.5"


def test_error_body_has_no_usage() -> None:
    body = (
        b'{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}'
    )
    assert usage_from_json(CHAT, body) == Extracted(None, None)


def test_stream_with_include_usage(stream_usage: Runner) -> None:
    got = stream_usage(CHAT, CHAT_STREAM_WITH_USAGE)
    assert got.model == "gpt-4.1-2025-04-14"
    assert got.usage == Usage(prompt_tokens=176, cache_read_tokens=1024, completion_tokens=20)


def test_stream_without_usage_reports_none(stream_usage: Runner) -> None:
    stream = "".join(
        line + "\n\n" for line in CHAT_STREAM_WITH_USAGE.split("\n\n") if '"choices":[]' not in line
    )
    got = stream_usage(CHAT, stream)
    assert got.usage is None
    assert got.model == "gpt-4.1-2025-04-14"


def test_cumulative_usage_on_every_chunk_is_not_summed(stream_usage: Runner) -> None:
    # Some OpenAI-compatible servers report running totals on every chunk.
    chunks = [
        '{"id":"c","object":"chat.completion.chunk","model":"qwen3-coder","choices":[{"index":0,'
        f'"delta":{{"content":"t{n}"}}}}],"usage":{{"prompt_tokens":40,"completion_tokens":{n},'
        f'"total_tokens":{40 + n}}}}}'
        for n in range(1, 6)
    ]
    got = stream_usage(CHAT, "".join(f"data: {c}\n\n" for c in chunks) + "data: [DONE]\n\n")
    assert got.usage == Usage(prompt_tokens=40, completion_tokens=5)


def test_cliproxyapi_claude_translation_usage_on_finish_chunk(stream_usage: Runner) -> None:
    # CLIProxyAPI's Claude -> chat translation: usage rides on the finish_reason chunk.
    # Claude usage input 13, cache read 22000, cache creation 31, output 4; newer CPA
    # versions report prompt_tokens = 13 + 31 + 22000.
    head = (
        '{"id":"msg_01","object":"chat.completion.chunk","created":1,"model":"claude-sonnet-4-5",'
    )
    stream = (
        f"data: {head}"
        '"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}\n\n'
        f"data: {head}"
        '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":22044,'
        '"completion_tokens":4,"total_tokens":22048,"prompt_tokens_details":{"cached_tokens":22000,'
        '"cached_creation_tokens":31}}}\n\n'
        "data: [DONE]\n\n"
    )
    got = stream_usage(CHAT, stream)
    assert got.usage == Usage(
        prompt_tokens=13, cache_read_tokens=22000, cache_creation_tokens=31, completion_tokens=4
    )


def test_older_cliproxyapi_prompt_excluding_cache_reads_loses_nothing() -> None:
    # Older CPA: prompt_tokens = input + cache creation (13 + 31) and cached_tokens 22000.
    body = (
        b'{"model":"claude-sonnet-4-5","usage":{"prompt_tokens":44,"completion_tokens":4,'
        b'"total_tokens":17,"prompt_tokens_details":{"cached_tokens":22000}}}'
    )
    usage = usage_from_json(CHAT, body).usage
    assert usage == Usage(prompt_tokens=44, cache_read_tokens=22000, completion_tokens=4)


def test_reasoning_reported_outside_completion_is_added_back() -> None:
    # xAI-style: completion_tokens excludes reasoning, total = prompt + completion + reasoning.
    usage = to_usage({"prompt": 10, "completion": 500, "reasoning": 300, "total": 810})
    assert usage.completion_tokens == 800
    assert usage.reasoning_tokens == 300
    # Standard OpenAI: reasoning is part of completion.
    usage = to_usage({"prompt": 10, "completion": 500, "reasoning": 300, "total": 510})
    assert usage.completion_tokens == 500


def test_deepseek_cache_hit_fields() -> None:
    body = (
        b'{"model":"deepseek-chat","usage":{"prompt_tokens":1000,"completion_tokens":9,'
        b'"total_tokens":1009,"prompt_cache_hit_tokens":768,"prompt_cache_miss_tokens":232}}'
    )
    usage = usage_from_json(CHAT, body).usage
    assert usage == Usage(prompt_tokens=232, cache_read_tokens=768, completion_tokens=9)


def test_garbage_counter_values_are_ignored() -> None:
    body = (
        b'{"usage":{"prompt_tokens":-5,"completion_tokens":"12","total_tokens":true,'
        b'"prompt_tokens_details":{"cached_tokens":1e400},"completion_tokens_details":null}}'
    )
    assert usage_from_json(CHAT, body).usage == Usage(completion_tokens=12)


_counts = st.one_of(st.none(), st.integers(-10, 10**6))


@given(p=_counts, c=_counts, w=_counts, o=_counts, r=_counts, t=_counts)
def test_buckets_never_negative_and_no_token_lost(
    p: int | None, c: int | None, w: int | None, o: int | None, r: int | None, t: int | None
) -> None:
    usage_obj = {
        "prompt_tokens": p,
        "completion_tokens": o,
        "total_tokens": t,
        "prompt_tokens_details": {"cached_tokens": c, "cache_write_tokens": w},
        "completion_tokens_details": {"reasoning_tokens": r},
    }
    usage = usage_from_json(CHAT, json.dumps({"usage": usage_obj}).encode()).usage
    valid = [v for v in (p, c, w, o, r, t) if v is not None and v >= 0]
    if not valid:
        assert usage is None
        return
    assert usage is not None
    assert min(usage.prompt_tokens, usage.cache_read_tokens, usage.cache_creation_tokens) >= 0
    assert usage.completion_tokens >= max(o or 0, 0)
    assert usage.input_tokens >= max(p or 0, 0)
    assert usage.reasoning_tokens <= usage.completion_tokens

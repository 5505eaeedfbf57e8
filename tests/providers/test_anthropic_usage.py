"""Anthropic Messages usage: disjoint counters, 5m/1h cache split, last-value stream merge."""

from __future__ import annotations

from collections.abc import Callable

from agent_cli_proxy.providers.extract import Extracted, usage_from_json
from agent_cli_proxy.providers.routes import Family
from agent_cli_proxy.usage.model import Usage

Runner = Callable[[Family, str], Extracted]
ANTHROPIC = Family.ANTHROPIC

MESSAGE_JSON = b"""{
  "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5-20250929",
  "content": [{"type": "text", "text": "Hello!"}],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 12,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 20000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 150,
    "service_tier": "standard",
    "server_tool_use": {"web_search_requests": 0}
  }
}"""


def _stream(start_usage: str, delta_usage: str) -> str:
    return (
        "event: message_start\n"
        'data: {"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",'
        '"type":"message","role":"assistant","content":[],"model":"claude-opus-4-1-20250805",'
        f'"stop_reason":null,"stop_sequence":null,"usage":{start_usage}}}}}\n\n'
        "event: content_block_start\n"
        'data: {"type":"content_block_start","index":0,'
        '"content_block":{"type":"thinking","thinking":""}}\n\n'
        "event: ping\n"
        'data: {"type": "ping"}\n\n'
        "event: content_block_delta\n"
        'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta",'
        '"thinking":"The \\"usage\\" of the \\"message\\"..."}}\n\n'
        "event: content_block_stop\n"
        'data: {"type":"content_block_stop","index":0}\n\n'
        "event: content_block_start\n"
        'data: {"type":"content_block_start","index":1,'
        '"content_block":{"type":"text","text":""}}\n\n'
        "event: content_block_delta\n"
        'data: {"type":"content_block_delta","index":1,'
        '"delta":{"type":"text_delta","text":"Hello"}}\n\n'
        "event: content_block_stop\n"
        'data: {"type":"content_block_stop","index":1}\n\n'
        "event: message_delta\n"
        'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        f'"usage":{delta_usage}}}\n\n'
        "event: message_stop\n"
        'data: {"type":"message_stop"}\n\n'
    )


START_USAGE = (
    '{"input_tokens":25,"cache_creation_input_tokens":1200,"cache_read_input_tokens":8000,'
    '"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":1200},'
    '"output_tokens":1,"service_tier":"standard"}'
)


def test_json_body_with_5m_and_1h_cache_writes() -> None:
    got = usage_from_json(ANTHROPIC, MESSAGE_JSON)
    assert got.model == "claude-sonnet-4-5-20250929"
    assert got.usage == Usage(
        prompt_tokens=12,
        cache_read_tokens=20000,
        cache_creation_tokens=3000,
        completion_tokens=150,
        cache_creation_1h_tokens=2000,
    )


def test_stream_output_is_last_value_not_sum(stream_usage: Runner) -> None:
    # The original recorded 1 + 5 = 6 here (spec §12 item 2).
    got = stream_usage(ANTHROPIC, _stream(START_USAGE, '{"output_tokens":5}'))
    assert got.model == "claude-opus-4-1-20250805"
    assert got.usage == Usage(
        prompt_tokens=25,
        cache_read_tokens=8000,
        cache_creation_tokens=1200,
        completion_tokens=5,
        cache_creation_1h_tokens=1200,
    )


def test_stream_delta_repeating_input_and_cache_is_not_double_counted(
    stream_usage: Runner,
) -> None:
    delta = (
        '{"input_tokens":25,"cache_creation_input_tokens":1200,"cache_read_input_tokens":8000,'
        '"output_tokens":503,"server_tool_use":{"web_search_requests":1}}'
    )
    got = stream_usage(ANTHROPIC, _stream(START_USAGE, delta))
    assert got.usage == Usage(
        prompt_tokens=25,
        cache_read_tokens=8000,
        cache_creation_tokens=1200,
        completion_tokens=503,
        cache_creation_1h_tokens=1200,
    )


def test_null_fields_in_delta_keep_message_start_values(stream_usage: Runner) -> None:
    delta = '{"input_tokens":null,"cache_read_input_tokens":null,"output_tokens":42}'
    got = stream_usage(ANTHROPIC, _stream(START_USAGE, delta))
    assert got.usage is not None
    assert (got.usage.prompt_tokens, got.usage.cache_read_tokens) == (25, 8000)
    assert got.usage.completion_tokens == 42


def test_translated_stream_with_zero_start_usage(stream_usage: Runner) -> None:
    # CLIProxyAPI's chat -> Claude translation: message_start usage is 0/0 and the real
    # counts arrive in message_delta.
    delta = '{"input_tokens":900,"output_tokens":77,"cache_read_input_tokens":100}'
    got = stream_usage(ANTHROPIC, _stream('{"input_tokens":0,"output_tokens":0}', delta))
    assert got.usage == Usage(prompt_tokens=900, cache_read_tokens=100, completion_tokens=77)


def test_stream_cut_after_message_start_keeps_partial_usage(stream_usage: Runner) -> None:
    stream = _stream(START_USAGE, "{}").split("event: content_block_start")[0]
    got = stream_usage(ANTHROPIC, stream)
    assert got.usage is not None
    assert got.usage.completion_tokens == 1
    assert got.usage.prompt_tokens == 25


def test_split_without_total_still_counts_writes() -> None:
    body = (
        b'{"model":"claude-haiku-4-5","usage":{"input_tokens":3,"output_tokens":4,'
        b'"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20}}}'
    )
    usage = usage_from_json(ANTHROPIC, body).usage
    assert usage is not None
    assert (usage.cache_creation_tokens, usage.cache_creation_1h_tokens) == (30, 20)


def test_error_body_and_error_event(stream_usage: Runner) -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert usage_from_json(ANTHROPIC, body) == Extracted(None, None)
    stream = f"event: error\ndata: {body.decode()}\n\n"
    assert stream_usage(ANTHROPIC, stream) == Extracted(None, None)

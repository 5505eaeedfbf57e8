"""OpenAI Responses API (Codex) usage: response objects and typed stream events."""

from __future__ import annotations

from collections.abc import Callable

from agent_cli_proxy.providers.extract import Extracted, usage_from_json
from agent_cli_proxy.providers.routes import Family
from agent_cli_proxy.usage.model import Usage

Runner = Callable[[Family, str], Extracted]
RESPONSES = Family.OPENAI_RESPONSES

_USAGE = (
    '{"input_tokens":5432,"input_tokens_details":{"cached_tokens":4096},'
    '"output_tokens":812,"output_tokens_details":{"reasoning_tokens":640},"total_tokens":6244}'
)


def _response(status: str, usage: str) -> str:
    return (
        '{"id":"resp_67ccd2bed1ec8190b14f964abc054267","object":"response","created_at":1741476542,'
        f'"status":"{status}","error":null,"incomplete_details":null,'
        '"instructions":"You are Codex.","max_output_tokens":null,"model":"gpt-5-codex",'
        '"output":[],"parallel_tool_calls":true,"previous_response_id":null,'
        '"reasoning":{"effort":"medium","summary":"auto"},"store":false,"temperature":1.0,'
        '"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,'
        f'"truncation":"disabled","usage":{usage},"user":null,"metadata":{{}}}}'
    )


def _event(kind: str, seq: int, response: str) -> str:
    return (
        f"event: {kind}\n"
        f'data: {{"type":"{kind}","sequence_number":{seq},"response":{response}}}\n\n'
    )


RESPONSES_STREAM = (
    _event("response.created", 0, _response("in_progress", "null"))
    + _event("response.in_progress", 1, _response("in_progress", "null"))
    + (
        "event: response.output_item.added\n"
        'data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,'
        '"item":{"id":"rs_1","type":"reasoning","summary":[]}}\n\n'
        "event: response.output_text.delta\n"
        'data: {"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_1",'
        '"output_index":1,"content_index":0,"delta":"The \\"response\\" is"}\n\n'
        "event: response.output_text.done\n"
        'data: {"type":"response.output_text.done","sequence_number":4,"item_id":"msg_1",'
        '"output_index":1,"content_index":0,"text":"The \\"response\\" is"}\n\n'
    )
    + _event("response.completed", 5, _response("completed", _USAGE))
)

EXPECTED = Usage(
    prompt_tokens=1336, cache_read_tokens=4096, completion_tokens=812, reasoning_tokens=640
)


def test_json_body() -> None:
    got = usage_from_json(RESPONSES, _response("completed", _USAGE).encode())
    assert got == Extracted(EXPECTED, "gpt-5-codex")
    assert EXPECTED.total_tokens == 6244


def test_stream_usage_from_response_completed(stream_usage: Runner) -> None:
    assert stream_usage(RESPONSES, RESPONSES_STREAM) == Extracted(EXPECTED, "gpt-5-codex")


def test_incomplete_and_failed_record_partial_usage(stream_usage: Runner) -> None:
    partial = (
        '{"input_tokens":300,"input_tokens_details":{"cached_tokens":0},"output_tokens":64,'
        '"output_tokens_details":{"reasoning_tokens":64},"total_tokens":364}'
    )
    for kind, status in (("response.incomplete", "incomplete"), ("response.failed", "failed")):
        stream = RESPONSES_STREAM.split("event: response.completed")[0] + _event(
            kind, 5, _response(status, partial)
        )
        got = stream_usage(RESPONSES, stream)
        assert got.usage == Usage(prompt_tokens=300, completion_tokens=64, reasoning_tokens=64)


def test_stream_cut_before_completion_has_model_but_no_usage(stream_usage: Runner) -> None:
    stream = RESPONSES_STREAM.split("event: response.completed")[0]
    assert stream_usage(RESPONSES, stream) == Extracted(None, "gpt-5-codex")


def test_error_event_and_error_body() -> None:
    body = (
        b'{"error":{"message":"The model does not exist","type":"invalid_request_error",'
        b'"code":"model_not_found"}}'
    )
    assert usage_from_json(RESPONSES, body) == Extracted(None, None)


def test_translated_cache_writes_are_their_own_bucket() -> None:
    body = (
        b'{"object":"response","model":"claude-opus-4-1","usage":{"input_tokens":3619,'
        b'"output_tokens":36,"total_tokens":3655,"input_tokens_details":{"cached_tokens":2921,'
        b'"cached_creation_tokens":120}}}'
    )
    assert usage_from_json(RESPONSES, body).usage == Usage(
        prompt_tokens=578, cache_read_tokens=2921, cache_creation_tokens=120, completion_tokens=36
    )

"""Canned responses in the real wire formats of the four API families.

Each builder returns the exact bytes an upstream sends (as a list of pieces, so tests can
send them as separate TCP writes) and the disjoint usage buckets they must be recorded as.
Field layouts follow the providers' published streams.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent_cli_proxy.usage.model import Usage


@dataclass(frozen=True)
class Canned:
    content_type: str
    pieces: list[bytes]
    usage: Usage
    model: str

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)


def _j(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _sse(data: Any, event: str | None = None, eol: str = "\n") -> bytes:
    text = "" if event is None else f"event: {event}{eol}"
    payload = data if isinstance(data, str) else _j(data)
    return f"{text}data: {payload}{eol}{eol}".encode()


# -- OpenAI chat completions ----------------------------------------------------------------

CHAT_MODEL = "gpt-5-2025-08-07"
CHAT_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 120, "audio_tokens": 0},
}
CHAT_BUCKETS = Usage(prompt_tokens=200, cache_read_tokens=1000, completion_tokens=300,
                     reasoning_tokens=120)


def chat_json() -> Canned:
    body = {
        "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1763750000,
        "model": CHAT_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!",
                                             "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": CHAT_USAGE, "service_tier": "default", "system_fingerprint": None,
    }
    return Canned("application/json", [_j(body).encode()], CHAT_BUCKETS, CHAT_MODEL)


def _chat_chunk(delta: dict[str, Any], finish: str | None, with_usage_null: bool) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-abc123", "object": "chat.completion.chunk", "created": 1763750000,
        "model": CHAT_MODEL, "service_tier": "default", "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage_null:
        chunk["usage"] = None
    return chunk


def chat_stream(include_usage: bool) -> Canned:
    """What OpenAI sends with and without ``stream_options.include_usage``."""
    deltas = [({"role": "assistant", "content": "", "refusal": None}, None),
              ({"content": "Hel"}, None), ({"content": "lo!"}, None), ({}, "stop")]
    pieces = [_sse(_chat_chunk(d, f, include_usage)) for d, f in deltas]
    if include_usage:
        pieces.append(_sse({
            "id": "chatcmpl-abc123", "object": "chat.completion.chunk", "created": 1763750000,
            "model": CHAT_MODEL, "service_tier": "default", "system_fingerprint": None,
            "choices": [], "usage": CHAT_USAGE}))
    pieces.append(b"data: [DONE]\n\n")
    return Canned("text/event-stream; charset=utf-8", pieces,
                  CHAT_BUCKETS if include_usage else Usage(), CHAT_MODEL)


# -- OpenAI Responses (Codex) -----------------------------------------------------------------

RESP_MODEL = "gpt-5-codex"
RESP_USAGE = {"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 4096},
              "output_tokens": 800, "output_tokens_details": {"reasoning_tokens": 640},
              "total_tokens": 5800}
RESP_BUCKETS = Usage(prompt_tokens=904, cache_read_tokens=4096, completion_tokens=800,
                     reasoning_tokens=640)


def _response_obj(status: str, usage: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 1763750000, "status": status,
            "model": RESP_MODEL, "output": [], "usage": usage}


def responses_stream() -> Canned:
    pieces = [
        _sse({"type": "response.created", "sequence_number": 0,
              "response": _response_obj("in_progress", None)}, "response.created"),
        _sse({"type": "response.in_progress", "sequence_number": 1,
              "response": _response_obj("in_progress", None)}, "response.in_progress"),
        _sse({"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1",
              "output_index": 0, "content_index": 0, "delta": "Done."},
             "response.output_text.delta"),
        _sse({"type": "response.completed", "sequence_number": 3,
              "response": _response_obj("completed", RESP_USAGE)}, "response.completed"),
    ]
    return Canned("text/event-stream", pieces, RESP_BUCKETS, RESP_MODEL)


def responses_json() -> Canned:
    return Canned("application/json", [_j(_response_obj("completed", RESP_USAGE)).encode()],
                  RESP_BUCKETS, RESP_MODEL)


# -- Anthropic messages ---------------------------------------------------------------------

CLAUDE_MODEL = "claude-sonnet-4-5-20250929"
CLAUDE_BUCKETS = Usage(prompt_tokens=25, cache_read_tokens=2000, cache_creation_tokens=1000,
                       cache_creation_1h_tokens=400, completion_tokens=42)


def _claude_usage(output: int) -> dict[str, Any]:
    return {"input_tokens": 25, "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 2000, "output_tokens": output,
            "cache_creation": {"ephemeral_5m_input_tokens": 600,
                               "ephemeral_1h_input_tokens": 400},
            "service_tier": "standard"}


def messages_stream() -> Canned:
    message = {"id": "msg_01", "type": "message", "role": "assistant", "model": CLAUDE_MODEL,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": _claude_usage(1)}
    pieces = [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse({"type": "content_block_start", "index": 0,
              "content_block": {"type": "text", "text": ""}}, "content_block_start"),
        _sse('{"type": "ping"}', "ping"),
        _sse({"type": "content_block_delta", "index": 0,
              "delta": {"type": "text_delta", "text": "Hello"}}, "content_block_delta"),
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        # Newer APIs repeat the input side in message_delta; it must not be counted twice.
        _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                 "stop_sequence": None},
              "usage": {"input_tokens": 25, "cache_creation_input_tokens": 1000,
                        "cache_read_input_tokens": 2000, "output_tokens": 42}},
             "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return Canned("text/event-stream; charset=utf-8", pieces, CLAUDE_BUCKETS, CLAUDE_MODEL)


def messages_json() -> Canned:
    body = {"id": "msg_01", "type": "message", "role": "assistant", "model": CLAUDE_MODEL,
            "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": _claude_usage(42)}
    return Canned("application/json", [_j(body).encode()], CLAUDE_BUCKETS, CLAUDE_MODEL)


# -- Gemini ---------------------------------------------------------------------------------

GEMINI_MODEL = "gemini-2.5-pro"
GEMINI_BUCKETS = Usage(prompt_tokens=400, cache_read_tokens=600, completion_tokens=250,
                       reasoning_tokens=200)


def _gemini_chunk(text: str, candidates: int, thoughts: int | None, finish: bool) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": 1000, "candidatesTokenCount": candidates,
                             "totalTokenCount": 1000 + candidates + (thoughts or 0),
                             "cachedContentTokenCount": 600}
    if thoughts is not None:
        usage["thoughtsTokenCount"] = thoughts
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"},
                                 "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": GEMINI_MODEL,
            "responseId": "r-1"}


def gemini_stream() -> Canned:
    # The Generative Language API ends SSE lines with CRLF.
    pieces = [_sse(_gemini_chunk("Hel", 1, 150, False), eol="\r\n"),
              _sse(_gemini_chunk("lo", 50, 200, True), eol="\r\n")]
    return Canned("text/event-stream", pieces, GEMINI_BUCKETS, GEMINI_MODEL)


def gemini_json() -> Canned:
    return Canned("application/json; charset=UTF-8",
                  [_j(_gemini_chunk("Hello", 50, 200, True)).encode()], GEMINI_BUCKETS,
                  GEMINI_MODEL)

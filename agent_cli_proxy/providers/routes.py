"""Which requests are LLM calls, and in which API family they speak.

A request is an LLM call (one billed model invocation that gets a ``request_logs`` row)
when its method and path match one of the generation endpoints below. The family decides
how usage is read from the response (see the family modules); the body only contributes
the requested model and whether a stream was asked for.

Endpoints (POST only):

* ``/v1/chat/completions``                                   → OpenAI chat
* ``/v1/responses``                                          → OpenAI Responses
* ``/v1/messages`` (not ``/v1/messages/count_tokens``)       → Anthropic messages
* ``/{v1,v1beta,v1alpha}/models/{model}:generateContent``    → Gemini (model from the path)
* ``/{v1,v1beta,v1alpha}/models/{model}:streamGenerateContent``
* ``/v1internal:generateContent`` and ``:streamGenerateContent`` → Gemini Code Assist
  (model from the body)

``count_tokens``/``countTokens`` are not billed, so they are not LLM calls: they pass through
without a row. A body that is not a JSON object still makes an LLM call: the upstream
decides whether it is valid, and we still record the outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote


class Family(StrEnum):
    """The wire format of a request and its response."""

    OPENAI_CHAT = "openai-chat"
    OPENAI_RESPONSES = "openai-responses"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


# The label stored in request_logs.provider for each family (the original's values).
PROVIDER_LABELS: dict[Family, str] = {
    Family.OPENAI_CHAT: "openai",
    Family.OPENAI_RESPONSES: "openai",
    Family.ANTHROPIC: "anthropic",
    Family.GEMINI: "gemini",
}

_EXACT_PATHS: dict[str, Family] = {
    "/v1/chat/completions": Family.OPENAI_CHAT,
    "/v1/responses": Family.OPENAI_RESPONSES,
    "/v1/messages": Family.ANTHROPIC,
}

_GEMINI_VERSIONS = ("/v1beta/models/", "/v1/models/", "/v1alpha/models/")
_GEMINI_VERBS = {"generateContent": False, "streamGenerateContent": True}
_CODE_ASSIST_PREFIX = "/v1internal:"


@dataclass(frozen=True, slots=True)
class LLMCall:
    """What the proxy needs to know about an LLM call before forwarding it."""

    family: Family
    provider: str
    """Label stored in ``request_logs.provider``."""
    requested_model: str | None
    stream: bool


def classify(method: str, path: str, body: bytes) -> LLMCall | None:
    """Return the LLM call described by a request, or None if it is not one.

    ``path`` is the request path; a query string, if still attached, is ignored. Never
    raises, whatever the input.
    """
    if method.upper() != "POST":
        return None
    path = path.partition("?")[0]
    family = _EXACT_PATHS.get(path)
    if family is not None:
        obj = parse_json_object(body)
        return LLMCall(
            family,
            PROVIDER_LABELS[family],
            _model_of(obj),
            wants_stream(obj.get("stream")) if obj is not None else False,
        )
    return _classify_gemini(path, body)


def _classify_gemini(path: str, body: bytes) -> LLMCall | None:
    # Clients may percent-encode the model or the colon ("%3A"): decode first.
    decoded = unquote(path)
    if decoded.startswith(_CODE_ASSIST_PREFIX):
        stream = _GEMINI_VERBS.get(decoded[len(_CODE_ASSIST_PREFIX) :])
        if stream is None:
            return None
        return LLMCall(Family.GEMINI, "gemini", _model_of(parse_json_object(body)), stream)
    for prefix in _GEMINI_VERSIONS:
        if decoded.startswith(prefix):
            model, colon, verb = decoded[len(prefix) :].rpartition(":")
            stream = _GEMINI_VERBS.get(verb)
            if not colon or stream is None or not model or "/" in model:
                return None
            # For Gemini the stream flag is the verb; the body has no say in it.
            return LLMCall(Family.GEMINI, "gemini", model, stream)
    return None


def parse_json_object(body: bytes) -> dict[str, object] | None:
    """The body as a JSON object, or None when it is not one (never raises)."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and UnicodeDecodeError.
        return None
    return obj if isinstance(obj, dict) else None


def wants_stream(value: object) -> bool:
    """The request's ``stream`` member: true, or the string "true" some clients send."""
    return value is True or value == "true"


def _model_of(obj: dict[str, object] | None) -> str | None:
    if obj is None:
        return None
    model = obj.get("model")
    return model if isinstance(model, str) and model else None

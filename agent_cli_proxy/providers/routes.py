"""Which requests are LLM calls, and in which API family they speak.

A request is an LLM call (one billed model invocation that gets a ``request_logs`` row)
when its method and path match one of the generation endpoints below. The family decides
how usage is read from the response (see the family modules); the body only contributes
the requested model and whether a stream was asked for.

Endpoints (POST only):

* ``/v1/chat/completions``                                   → OpenAI chat
* ``/v1/completions`` (legacy completions: same ``usage`` shape as chat, stream chunks
  carry ``choices`` and an optional ``usage``)               → OpenAI chat
* ``/v1/responses``, ``/v1/responses/compact``               → OpenAI Responses
* ``/backend-api/codex/responses`` and ``…/responses/compact`` (CLIProxyAPI's Codex
  aliases)                                                   → OpenAI Responses
* ``/v1/messages`` (not ``/v1/messages/count_tokens``)       → Anthropic messages
* ``/{v1,v1beta,v1alpha}/models/{model}:generateContent``    → Gemini (model from the path;
  the model may contain ``/``, CLIProxyAPI's ``prefix/model`` names)
* ``/{v1,v1beta,v1alpha}/models/{model}:streamGenerateContent``
* ``/v1internal:generateContent`` and ``:streamGenerateContent`` → Gemini Code Assist
  (model from the body)

CLIProxyAPI's Amp provider routes ``/api/provider/{name}/…`` are the same endpoints under
a prefix: the prefix is dropped and the rest classified as above, so
``/api/provider/anthropic/v1/messages`` is an Anthropic call. Their prefix-less forms
(``/api/provider/{name}/chat/completions``, ``/completions``, ``/responses``, ``/models``)
count as the ``/v1/…`` ones, and Amp's Gemini bridge
``/api/provider/{name}/v1beta1/…/models/{model}:{verb}`` as the Gemini route.

``count_tokens``/``countTokens`` are not billed, so they are not LLM calls: they pass through
without a row. :func:`is_unbilled` names the requests known to cost nothing; anything that
is neither an LLM call nor unbilled is "unknown, possibly billable".

A body that is not a JSON object still makes an LLM call: the upstream decides whether it
is valid, and we still record the outcome. Bodies are read the way CLIProxyAPI (gjson)
reads them: when a key occurs twice, the FIRST occurrence counts. A top-level ``model`` or
``stream`` that occurs more than once (where the body decides it) makes the call
:attr:`LLMCall.ambiguous`: the proxy refuses those rather than guess which value the
upstream honours.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
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

MAX_MODEL_CHARS: Final = 200
"""``requested_model`` is cut to this many characters (see :func:`storable_model`)."""

_EXACT_PATHS: dict[str, Family] = {
    "/v1/chat/completions": Family.OPENAI_CHAT,
    "/v1/completions": Family.OPENAI_CHAT,
    "/v1/responses": Family.OPENAI_RESPONSES,
    "/v1/responses/compact": Family.OPENAI_RESPONSES,
    "/backend-api/codex/responses": Family.OPENAI_RESPONSES,
    "/backend-api/codex/responses/compact": Family.OPENAI_RESPONSES,
    "/v1/messages": Family.ANTHROPIC,
}

_GEMINI_VERSIONS = ("/v1beta/models/", "/v1/models/", "/v1alpha/models/")
_GEMINI_VERBS = {"generateContent": False, "streamGenerateContent": True}
_CODE_ASSIST_PREFIX = "/v1internal:"
_AMP_PREFIX = "/api/provider/"
_AMP_GEMINI_BRIDGE = "/v1beta1/"
# Amp routes registered without the /v1 segment (for providers such as groq/cerebras).
_AMP_ROOT_ROUTES = frozenset({"/chat/completions", "/completions", "/responses", "/models"})
_MODEL_LISTS = frozenset({"/v1/models", "/v1beta/models"})
_MODEL_INFO_PREFIXES = ("/v1/models/", "/v1beta/models/")
_COUNT_TOKENS_PATHS = frozenset({"/v1/messages/count_tokens", "/v1internal:countTokens"})
# C0 controls, DEL and C1 controls (Unicode category Cc), each replaced by "?".
_CONTROL_TO_QMARK = {c: "?" for c in (*range(0x20), *range(0x7F, 0xA0))}


@dataclass(frozen=True, slots=True)
class LLMCall:
    """What the proxy needs to know about an LLM call before forwarding it."""

    family: Family
    provider: str
    """Label stored in ``request_logs.provider``."""
    requested_model: str | None
    """Always storable: see :func:`storable_model`."""
    stream: bool
    ambiguous: bool = False
    """The body has more than one top-level ``model`` (or ``stream``, where the body decides
    streaming) member. CLIProxyAPI honours the first, a JSON parser that keeps the last
    would see another call: the proxy must refuse the request (400) rather than forward
    it. ``requested_model``/``stream`` hold the first occurrence's values (gjson's view)."""


JsonObject = dict[str, object]


def classify(method: str, path: str, body: bytes) -> LLMCall | None:
    """Return the LLM call described by a request, or None if it is not one.

    ``path`` is the request path; a query string, if still attached, is ignored. Never
    raises, whatever the input.
    """
    return classify_parsed(method, path, body)[0]


def classify_parsed(method: str, path: str, body: bytes
                    ) -> tuple[LLMCall | None, JsonObject | None]:
    """:func:`classify`, and the body as ``json.loads(body.decode("utf-8"))`` when the
    classification parsed it that way (else None), so that the request's one other reader
    of the whole body (:func:`~agent_cli_proxy.providers.openai_chat.inject_include_usage`)
    need not parse it again. Drop it once routed: a large body's objects are many times
    its size."""
    if method.upper() != "POST":
        return None, None
    path = _unprefixed(path.partition("?")[0], post=True)
    family = _EXACT_PATHS.get(path)
    if family is not None:
        obj, repeated, plain = _read_top_level(body, _CALL_KEYS)
        call = LLMCall(
            family,
            PROVIDER_LABELS[family],
            _model_of(obj),
            wants_stream(obj.get("stream")) if obj is not None else False,
            ambiguous=bool(repeated & {"model", "stream"}),
        )
        return call, plain
    return _classify_gemini(path, body), None


def is_unbilled(method: str, path: str) -> bool:
    """True for requests known to cost nothing (pure; never raises).

    * ``GET``/``HEAD`` of ``/`` and of the model lists: ``/v1/models``, ``/v1/models/<id>``,
      ``/v1beta/models``, ``/v1beta/models/<id>`` (an id without a ``:verb``);
    * ``POST`` of ``/v1/messages/count_tokens``, Gemini ``…/models/<model>:countTokens``
      and ``/v1internal:countTokens``.

    The same paths under the Amp prefix ``/api/provider/<name>`` count too. Everything that
    is neither this nor an LLM call (:func:`classify`) is "unknown, possibly billable".
    Unlike :func:`classify` the path is not percent-decoded again: a path only counts as
    unbilled exactly as the upstream will route it.
    """
    method = method.upper()
    path = path.partition("?")[0]
    if method in ("GET", "HEAD"):
        if path == "/":
            return True
        inner = _unprefixed(path, post=False)
        if inner in _MODEL_LISTS:
            return True
        for prefix in _MODEL_INFO_PREFIXES:
            if inner.startswith(prefix):
                model = inner[len(prefix) :]
                return bool(model) and ":" not in model
        return False
    if method != "POST":
        return False
    inner = _unprefixed(path, post=True)
    if inner in _COUNT_TOKENS_PATHS:
        return True
    action = _gemini_action(inner)
    return action is not None and action[1] == "countTokens" and bool(action[0])


def storable_model(model: str) -> str:
    """*model* made safe to store and show, otherwise kept as sent.

    Cut to :data:`MAX_MODEL_CHARS` characters; characters UTF-8 cannot encode (lone
    surrogates, from a ``"\\ud800"`` escape) and control characters (Unicode category Cc:
    C0, DEL, C1) each become ``?``. Every step maps one character to one, so the result
    is never longer than the input.
    """
    cut = model[:MAX_MODEL_CHARS]
    return cut.encode("utf-8", "replace").decode("utf-8").translate(_CONTROL_TO_QMARK)


def _unprefixed(path: str, *, post: bool) -> str:
    """*path* without an Amp ``/api/provider/<name>`` prefix (once), as the route it
    stands for; any other path unchanged.

    Amp's prefix-less routes become their ``/v1`` forms, and (for POST only, the one
    method Amp bridges) its Gemini bridge ``/v1beta1/…/models/<action>`` becomes
    ``/v1beta/models/<action>``.
    """
    if not path.startswith(_AMP_PREFIX):
        return path
    name, slash, rest = path[len(_AMP_PREFIX) :].partition("/")
    if not name or not slash:
        return path
    inner = "/" + rest
    if inner in _AMP_ROOT_ROUTES:
        return "/v1" + inner
    if post and inner.startswith(_AMP_GEMINI_BRIDGE):
        # The bridge takes what follows the first "/models/" as the Gemini action.
        _, found, action = inner.partition("/models/")
        if found:
            return "/v1beta/models/" + action
    return inner


def _gemini_action(path: str) -> tuple[str, str] | None:
    """``(model, verb)`` of a Gemini model route (``…/models/<model>:<verb>``), else None.

    The model is everything between ``/models/`` and the last ``:``; it may contain ``/``.
    """
    prefix = next((p for p in _GEMINI_VERSIONS if path.startswith(p)), None)
    if prefix is None:
        return None
    model, colon, verb = path[len(prefix) :].rpartition(":")
    return (model, verb) if colon else None


def _classify_gemini(path: str, body: bytes) -> LLMCall | None:
    # Clients may percent-encode the model or the colon ("%3A"): decode first.
    decoded = unquote(path)
    if decoded.startswith(_CODE_ASSIST_PREFIX):
        stream = _GEMINI_VERBS.get(decoded[len(_CODE_ASSIST_PREFIX) :])
        if stream is None:
            return None
        obj, repeated = _read_members(body)
        return LLMCall(Family.GEMINI, "gemini", _model_of(obj), stream,
                       ambiguous="model" in repeated)
    action = _gemini_action(decoded)
    if action is None:
        return None
    model, verb = action
    stream = _GEMINI_VERBS.get(verb)
    if stream is None or not model:
        return None
    # For Gemini the stream flag is the verb and the model is the path's; the body has no
    # say in either, so it cannot make the call ambiguous.
    return LLMCall(Family.GEMINI, "gemini", storable_model(model), stream)


_CALL_KEYS = (b'"model"', b'"stream"')
# A JSON string escapes ASCII letters only by choice: "\u006dodel" is "model". Such an escape
# anywhere means a key may spell a watched name without matching its plain bytes.
_LETTER_ESCAPE = re.compile(rb"\\u00(?:6[1-9a-fA-F]|7[0-9aA])")


def _read_top_level(body: bytes, watched: tuple[bytes, ...]
                    ) -> tuple[JsonObject | None, frozenset[str], JsonObject | None]:
    """What :func:`_read_members` says about the top-level keys *watched* (quoted, as
    bytes): the object (right for those keys), which of them repeat, and the plain parse
    of the UTF-8 text when it was made (else None).

    The first-occurrence reading runs a Python hook for every object in the body, which
    nearly doubles the cost of a large body's parse (conversations, tool schemas). When
    each watched key occurs at most once in the bytes, and no escape could spell one
    otherwise, no watched key can repeat: then the plain C parse gives the same values.
    """
    if (all(body.count(key) <= 1 for key in watched)
            and _LETTER_ESCAPE.search(body) is None):
        try:
            # The text, as the other readers of the body parse it: json.loads(bytes)
            # would also accept UTF-16/32, a BOM and encoded surrogates. Those, and
            # anything that is not JSON, take the general path below.
            value = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return value, frozenset(), value
    obj, repeated = _read_members(body)
    return obj, repeated, None


def _read_members(body: bytes) -> tuple[JsonObject | None, frozenset[str]]:
    """The body as a JSON object (first occurrence of each key wins, at every depth, as
    gjson reads it) and its repeated top-level keys; ``(None, ∅)`` if not an object."""
    repeated: frozenset[str] = frozenset()

    def first_wins(pairs: list[tuple[str, object]]) -> dict[str, object]:
        # Called for every object as it closes, so the top-level object comes last and
        # leaves its repeated keys in ``repeated``.
        nonlocal repeated
        obj = dict(pairs)  # C speed; right unless a key repeats (then the last won)
        if len(obj) == len(pairs):
            repeated = frozenset()
            return obj
        obj.clear()
        seen_twice: set[str] = set()
        for key, value in pairs:
            if key in obj:
                seen_twice.add(key)
            else:
                obj[key] = value
        repeated = frozenset(seen_twice)
        return obj

    try:
        value = json.loads(body, object_pairs_hook=first_wins)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and UnicodeDecodeError.
        return None, frozenset()
    if not isinstance(value, dict):
        return None, frozenset()
    return value, repeated


def parse_json_object(body: bytes) -> dict[str, object] | None:
    """The body as a JSON object, or None when it is not one (never raises).

    A key that occurs more than once keeps its FIRST value, as CLIProxyAPI reads it."""
    return _read_members(body)[0]


def wants_stream(value: object) -> bool:
    """The request's ``stream`` member: true, or the string "true" some clients send."""
    return value is True or value == "true"


def _model_of(obj: dict[str, object] | None) -> str | None:
    if obj is None:
        return None
    model = obj.get("model")
    return storable_model(model) if isinstance(model, str) and model else None


def error_style(path: str) -> str:
    """Which API family's error shape a client calling *path* understands:
    ``anthropic``, ``gemini`` or ``openai`` (the default, also for non-LLM paths)."""
    if "/messages" in path:
        return "anthropic"
    if path.startswith(("/v1beta/", "/v1alpha/", "/v1internal:")) or ":generateContent" in (
            path) or ":streamGenerateContent" in path or "/v1beta1/" in path:
        return "gemini"
    return "openai"

"""OpenAI Chat Completions: where usage is on the wire, and exact usage for every stream.

Usage (``usage`` in a JSON body, or on stream chunks)::

    prompt_tokens                       all input, cache reads (and OpenRouter cache writes)
      prompt_tokens_details.cached_tokens        included
      prompt_tokens_details.cache_write_tokens   included (OpenRouter)
    completion_tokens                   all output, reasoning included
      completion_tokens_details.reasoning_tokens

A chat stream only carries usage when the request set ``stream_options.include_usage``:
then every chunk gains ``"usage":null`` and one extra chunk with ``"choices":[]`` and the
usage closes the stream. To record exact usage for clients that did not ask for it, the
proxy injects the option (:func:`inject_include_usage`) and removes what it added from the
response (:class:`UsageChunkFilter`), so the client receives what it asked for.

Some OpenAI-compatible servers put cumulative usage on every chunk, or on the chunk that
carries ``finish_reason`` (CLIProxyAPI's Claude translation does): last value wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Literal

from agent_cli_proxy.providers.readings import Reading, as_object
from agent_cli_proxy.providers.routes import wants_stream
from agent_cli_proxy.usage.model import Usage

# Cheap pre-filter for stream events: chunks without these cannot change usage or model.
NEEDLES = ('"usage"', '"model"')


def _first(*values: object) -> object:
    return next((v for v in values if v is not None), None)


def usage_fields(usage: object) -> dict[str, object]:
    """Canonical counters of a chat-style ``usage`` object (values still unvalidated)."""
    u = as_object(usage)
    if not u:
        return {}
    pd = as_object(u.get("prompt_tokens_details"))
    cd = as_object(u.get("completion_tokens_details"))
    return {
        "prompt": u.get("prompt_tokens"),
        # DeepSeek reports cache hits beside the standard detail.
        "cached": _first(pd.get("cached_tokens"), u.get("prompt_cache_hit_tokens")),
        # OpenRouter: cache_write_tokens; CLIProxyAPI/new-api style translators:
        # cached_creation_tokens; LiteLLM for Claude models: cache_creation_input_tokens.
        "cache_write": _first(
            pd.get("cache_write_tokens"),
            pd.get("cached_creation_tokens"),
            u.get("cache_creation_input_tokens"),
        ),
        "completion": u.get("completion_tokens"),
        "reasoning": cd.get("reasoning_tokens"),
        "total": u.get("total_tokens"),
    }


def body_readings(obj: object) -> list[Reading]:
    """Readings of a non-stream ``chat.completion`` body (an error body has no usage)."""
    o = as_object(obj)
    return [(usage_fields(o.get("usage")), o.get("model"))] if o else []


def event_reading(event: str | None, obj: object) -> Reading | None:
    """Reading of one ``chat.completion.chunk`` (``usage`` null on most chunks)."""
    o = as_object(obj)
    return (usage_fields(o.get("usage")), o.get("model")) if o else None


def to_usage(f: Mapping[str, int]) -> Usage:
    """Disjoint buckets from OpenAI-style inclusive counters (also used for Responses)."""
    prompt = f.get("prompt", 0)
    cached = f.get("cached", 0)
    written = f.get("cache_write", 0)
    uncached = prompt
    for part in (cached, written):
        # A part larger than what is left cannot be included in prompt_tokens: that server
        # counted it separately (older CLIProxyAPI translations do). Keep every token.
        if part <= uncached:
            uncached -= part
    completion = f.get("completion", 0)
    reasoning = f.get("reasoning", 0)
    total = f.get("total")
    if reasoning and (
        reasoning > completion or (total is not None and total == prompt + completion + reasoning)
    ):
        # This server's completion_tokens excludes reasoning (xAI does): add it back so
        # completion stays "all output".
        completion += reasoning
    return Usage(
        prompt_tokens=uncached,
        cache_read_tokens=cached,
        cache_creation_tokens=written,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
    )


# -- include_usage injection ----------------------------------------------------------------

_INJECTED = b'"stream_options":{"include_usage":true},'


def inject_include_usage(body: bytes, parsed: dict[str, object] | None = None
                         ) -> bytes | None:
    """Return ``body`` asking for stream usage, or None when no change is needed/possible.

    *parsed*: ``json.loads(body.decode("utf-8"))`` if the caller already has it (the
    classification's parse, :func:`~agent_cli_proxy.providers.routes.classify_parsed`);
    it is not changed.

    Unchanged (None) unless the body is a UTF-8 JSON object with ``stream`` true and without
    ``stream_options.include_usage`` true. Without a ``stream_options`` key the member is
    spliced in textually after the opening brace, so the client's bytes are otherwise
    forwarded as sent. The one exception to "never re-serialise": when ``stream_options``
    exists without ``include_usage: true`` there is no safe textual edit, so the object is
    re-serialised compactly (``json.dumps(..., separators=(",", ":"), ensure_ascii=False)``).
    """
    obj: object = parsed
    if obj is None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        try:
            # Parse the text, not the bytes: json.loads(bytes) also accepts UTF-16/32 and
            # a BOM, where a textual splice would corrupt the body.
            obj = json.loads(text)
        except (ValueError, RecursionError):
            return None
    if not isinstance(obj, dict) or not wants_stream(obj.get("stream")):
        return None
    if "stream_options" not in obj:
        brace = body.find(b"{")  # everything before it is JSON whitespace
        return body[: brace + 1] + _INJECTED + body[brace + 1 :]
    options = obj["stream_options"]
    if isinstance(options, dict):
        if options.get("include_usage") is True:
            return None
        options = {**options, "include_usage": True}
    else:
        options = {"include_usage": True}
    obj = {**obj, "stream_options": options}  # same key order; the caller's dict stays
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # e.g. a lone surrogate from a "\ud800" escape
        return None


# -- response filter ------------------------------------------------------------------------

# What follows the key of the member include_usage adds to every chunk ("usage":null).
_NULL_VALUE = re.compile(rb"\s*:\s*null\s*")
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')


class UsageChunkFilter:
    """Remove from a chat SSE stream what an injected ``include_usage`` added.

    Works line by line on the raw bytes and forwards everything unchanged except: the
    usage-only event (``"choices":[]`` with a usage object) is dropped with the blank line
    that ends it, and ``"usage":null`` members are removed from other ``data:`` lines. Every
    complete line is released by the ``feed`` call that completed it; at most one incomplete
    line is held, and one longer than ``max_line_bytes`` is flushed unchanged (with the rest
    of that line) rather than buffered.
    """

    def __init__(self, max_line_bytes: int = 1024 * 1024) -> None:
        self.max_line_bytes = max(1, max_line_bytes)
        self._partial = bytearray()
        # How the rest of the current line is handled when it is not held: "pass" (it was
        # oversized: forward untouched) or "drop" (it belongs to a dropped event).
        self._rest: Literal["pass", "drop"] | None = None
        self._cr = False  # last line ended in "\r" at a chunk end: a "\n" may complete it
        self._cr_dropped = False  # ... and that line was dropped
        self._event_open = False  # lines of the current event were already forwarded
        self._dropping = False  # dropping the rest of a usage-only event

    def feed(self, chunk: bytes) -> bytes:
        """Return the bytes to forward now for ``chunk``."""
        if not chunk:
            return b""
        out: list[bytes] = []
        if self._cr:
            self._cr = False
            if chunk[:1] == b"\n":
                # The "\n" completes the "\r" that ended the previous chunk: one line break.
                if not self._cr_dropped:
                    out.append(b"\n")
                chunk = chunk[1:]
        # bytes.splitlines(keepends=True) splits on exactly the SSE line breaks.
        for piece in chunk.splitlines(keepends=True):
            if piece[-1:] not in (b"\n", b"\r"):
                self._hold(piece, out)
                break
            kept = self._complete(piece)
            if kept is not None:
                out.append(kept)
            if piece[-1:] == b"\r":
                self._cr = True
                self._cr_dropped = kept is None
        return b"".join(out)

    def finish(self) -> bytes:
        """End of stream: return the held incomplete line (filtered like any other)."""
        self._cr = False
        held = bytes(self._partial)
        self._partial.clear()
        if self._rest is not None:
            self._rest = None
            return b""
        if not held:
            return b""
        kept = self._line(held)
        return kept if kept is not None else b""

    def _hold(self, piece: bytes, out: list[bytes]) -> None:
        """Keep the start of an incomplete line (or pass/drop it when that is decided)."""
        if self._rest is None:
            if self._dropping:
                self._rest = "drop"  # a non-blank line inside the dropped event
            else:
                self._partial += piece
                if len(self._partial) <= self.max_line_bytes:
                    return
                # Bounded memory beats filtering: flush this line as it is.
                piece = bytes(self._partial)
                self._partial.clear()
                self._rest = "pass"
                self._event_open = True
        if self._rest == "pass":
            out.append(piece)

    def _complete(self, piece: bytes) -> bytes | None:
        """Bytes to forward for a line completed by ``piece`` (which ends in a break)."""
        if self._rest is not None:
            rest, self._rest = self._rest, None
            return piece if rest == "pass" else None
        content = piece.rstrip(b"\r\n")
        ending = piece[len(content) :]
        if self._partial:
            content = bytes(self._partial) + content
            self._partial.clear()
        kept = self._line(content)
        return None if kept is None else kept + ending

    def _line(self, content: bytes) -> bytes | None:
        """The filtered line content, or None to drop the line and its line break."""
        if not content:
            if self._dropping:
                self._dropping = False
                return None
            self._event_open = False
            return content
        if self._dropping:
            return None
        if content.startswith(b"data:") and b'"usage"' in content:
            filtered = _filter_data(content)
            if filtered is None:
                # Drop the whole event through its blank line, unless earlier lines of it
                # were already forwarded: then keep the blank line that ends them.
                self._dropping = not self._event_open
                return None
            content = filtered
        self._event_open = True
        return content


def _filter_data(line: bytes) -> bytes | None:
    """A ``data:`` line without ``"usage":null``; None for the usage-only chunk."""
    stripped = _strip_usage_null(line)
    if stripped is not None:
        return stripped
    if _EMPTY_CHOICES.search(line) is not None:
        try:
            obj = json.loads(line[5:])
        except (ValueError, RecursionError):
            return line
        if (
            isinstance(obj, dict)
            and obj.get("choices") == []
            and isinstance(obj.get("usage"), dict)
        ):
            return None
    return line


def _strip_usage_null(line: bytes) -> bytes | None:
    """``line`` without its last ``"usage":null`` member, or None if it has none.

    In valid JSON a quote inside a string is escaped, so an unescaped ``"usage"`` followed
    by ``: null`` can only be a member. include_usage appends it at the end of the chunk
    object, hence the search from the right.
    """
    key = line.rfind(b'"usage"')
    while key >= 0:
        value = _NULL_VALUE.match(line, key + 7)
        if value is not None:
            end = value.end()
            after = line[end : end + 1]
            before = line[:key].rstrip()
            if before.endswith(b",") and after in (b",", b"}"):
                return before[:-1] + line[end:]  # ',"usage":null' (not the first member)
            if after == b",":
                return line[:key] + line[end + 1 :].lstrip()  # '"usage":null,' (the first)
        key = line.rfind(b'"usage"', 0, key)
    return None

"""Gemini generateContent / streamGenerateContent (and Code Assist): usage on the wire.

``usageMetadata`` of a ``GenerateContentResponse``::

    promptTokenCount            all prompt input
      cachedContentTokenCount   included (cache reads)
    toolUsePromptTokenCount     input of tool-use prompts, reported beside the prompt
    candidatesTokenCount        visible output
    thoughtsTokenCount          thinking output: SEPARATE from candidates, billed as output

so completion = candidates + thoughts and reasoning = thoughts. The model is
``modelVersion``. Streams repeat running totals on each chunk: last value wins (the merge
lives in ``extract.py``). A non-SSE ``streamGenerateContent`` reply is a JSON array of
chunks. Gemini Code Assist (``/v1internal``) wraps every response as ``{"response": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent_cli_proxy.providers.readings import Reading, as_object
from agent_cli_proxy.usage.model import Usage

NEEDLES = ('"usageMetadata"', '"modelVersion"')


def usage_fields(metadata: object) -> dict[str, object]:
    """Canonical counters of a ``usageMetadata`` object (values still unvalidated)."""
    m = as_object(metadata)
    if not m:
        return {}
    return {
        "prompt": m.get("promptTokenCount"),
        "cached": m.get("cachedContentTokenCount"),
        "tool_prompt": m.get("toolUsePromptTokenCount"),
        "candidates": m.get("candidatesTokenCount"),
        "thoughts": m.get("thoughtsTokenCount"),
    }


def _reading(chunk: object) -> Reading | None:
    c = as_object(chunk)
    inner = c.get("response")
    if isinstance(inner, dict):
        c = inner  # Code Assist envelope: {"response": {...}, "traceId": ...}
    return (usage_fields(c.get("usageMetadata")), c.get("modelVersion")) if c else None


def body_readings(obj: object) -> list[Reading]:
    """Readings of a JSON body: one response, or an array of stream chunks in order."""
    chunks = obj if isinstance(obj, list) else [obj]
    return [r for r in map(_reading, chunks) if r is not None]


def event_reading(event: str | None, obj: object) -> Reading | None:
    """Reading of one SSE chunk (``alt=sse``)."""
    return _reading(obj)


def to_usage(f: Mapping[str, int]) -> Usage:
    """Disjoint buckets from Gemini's counters."""
    prompt = f.get("prompt", 0)
    cached = f.get("cached", 0)
    # Cached content larger than the prompt cannot be included in it: keep every token.
    uncached = prompt - cached if cached <= prompt else prompt
    thoughts = f.get("thoughts", 0)
    return Usage(
        prompt_tokens=uncached + f.get("tool_prompt", 0),
        cache_read_tokens=cached,
        completion_tokens=f.get("candidates", 0) + thoughts,
        reasoning_tokens=thoughts,
    )

"""Anthropic Messages: where usage is on the wire.

``usage`` in a JSON body, or in a stream's ``message_start.message.usage`` and
``message_delta.usage``::

    input_tokens                        input NOT read from or written to the cache
    cache_read_input_tokens             cache reads (separate)
    cache_creation_input_tokens         cache writes, all TTLs (separate)
      cache_creation.ephemeral_5m_input_tokens / ephemeral_1h_input_tokens   its split
    output_tokens                       all output, thinking included

Streams: ``message_start`` carries the input side and a small initial ``output_tokens``;
``message_delta`` carries the *cumulative* output and, in newer APIs, repeats the input and
cache counters. Every counter is therefore "last value wins", never a sum, and a counter
absent or null in ``message_delta`` keeps its ``message_start`` value (the original summed
them: output 1 + 5 recorded as 6). The merge itself lives in ``extract.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent_cli_proxy.providers.readings import Reading, as_object
from agent_cli_proxy.usage.model import Usage

# message_start holds "message", message_delta holds "usage"; content blocks hold neither.
NEEDLES = ('"usage"', '"message"')


def usage_fields(usage: object) -> dict[str, object]:
    """Canonical counters of an Anthropic ``usage`` object (values still unvalidated)."""
    u = as_object(usage)
    if not u:
        return {}
    split = as_object(u.get("cache_creation"))
    return {
        "input": u.get("input_tokens"),
        "cache_read": u.get("cache_read_input_tokens"),
        "cache_write": u.get("cache_creation_input_tokens"),
        "cache_write_5m": split.get("ephemeral_5m_input_tokens"),
        "cache_write_1h": split.get("ephemeral_1h_input_tokens"),
        "output": u.get("output_tokens"),
    }


def body_readings(obj: object) -> list[Reading]:
    """Readings of a non-stream ``message`` body (an ``error`` body has no usage)."""
    o = as_object(obj)
    if not o:
        return []
    if "usage" not in o and isinstance(o.get("message"), dict):
        o = as_object(o["message"])  # tolerate a wrapped message, as the original did
    return [(usage_fields(o.get("usage")), o.get("model"))]


def event_reading(event: str | None, obj: object) -> Reading | None:
    """Reading of one stream event: ``message_start`` or ``message_delta``."""
    o = as_object(obj)
    kind = o.get("type", event)
    if kind == "message_start":
        message = as_object(o.get("message"))
        return (usage_fields(message.get("usage")), message.get("model"))
    if kind == "message_delta":
        return (usage_fields(o.get("usage")), None)
    return None


def to_usage(f: Mapping[str, int]) -> Usage:
    """Disjoint buckets: Anthropic counters are already disjoint, only the split needs care."""
    split = f.get("cache_write_5m", 0) + f.get("cache_write_1h", 0)
    # Prefer the total, but never report fewer writes than the TTL split accounts for.
    written = max(f.get("cache_write", 0), split)
    return Usage(
        prompt_tokens=f.get("input", 0),
        cache_read_tokens=f.get("cache_read", 0),
        cache_creation_tokens=written,
        completion_tokens=f.get("output", 0),
        cache_creation_1h_tokens=min(f.get("cache_write_1h", 0), written),
    )

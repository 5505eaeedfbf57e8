"""OpenAI Responses API (Codex): where usage is on the wire.

The non-stream body is a ``response`` object; a stream is a sequence of typed events whose
``response`` member carries the same object. Usage arrives once, at the end, in
``response.completed`` — or in ``response.incomplete``/``response.failed``, whose partial
usage is still billed and so recorded. There is no ``include_usage`` knob. ::

    usage.input_tokens                          all input
      input_tokens_details.cached_tokens        included (cache reads)
    usage.output_tokens                         all output
      output_tokens_details.reasoning_tokens    included

The counters have the same "details are included" meaning as Chat Completions, so the
bucket arithmetic is :func:`agent_cli_proxy.providers.openai_chat.to_usage`.
"""

from __future__ import annotations

from agent_cli_proxy.providers.openai_chat import to_usage as to_usage
from agent_cli_proxy.providers.readings import Reading, as_object

__all__ = ["NEEDLES", "body_readings", "event_reading", "to_usage", "usage_fields"]

# Only events carrying a "response" object can hold usage or the model; the many
# "response.output_text.delta"-style events have no such member.
NEEDLES = ('"response"',)


def usage_fields(usage: object) -> dict[str, object]:
    """Canonical counters of a Responses ``usage`` object (values still unvalidated)."""
    u = as_object(usage)
    if not u:
        return {}
    idt = as_object(u.get("input_tokens_details"))
    odt = as_object(u.get("output_tokens_details"))
    write = idt.get("cache_write_tokens")
    return {
        "prompt": u.get("input_tokens"),
        "cached": idt.get("cached_tokens"),
        # Not sent by OpenAI; translating gateways report cache writes under these names.
        "cache_write": write if write is not None else idt.get("cached_creation_tokens"),
        "completion": u.get("output_tokens"),
        "reasoning": odt.get("reasoning_tokens"),
        "total": u.get("total_tokens"),
    }


def _reading(response: object) -> Reading | None:
    r = as_object(response)
    return (usage_fields(r.get("usage")), r.get("model")) if r else None


def body_readings(obj: object) -> list[Reading]:
    """Readings of a non-stream body: the ``response`` object itself."""
    reading = _reading(obj)
    return [reading] if reading is not None else []


def event_reading(event: str | None, obj: object) -> Reading | None:
    """Reading of one stream event: any event whose ``response`` member is an object.

    ``response.created``/``in_progress`` give the model early (usage null), the terminal
    events (``completed``, ``incomplete``, ``failed``) give the usage.
    """
    return _reading(as_object(obj).get("response"))

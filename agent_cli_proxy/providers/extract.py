"""Usage extraction from responses: dispatch on the API family, merge, validate.

Each family module knows where its format puts usage and the model, and how its counters map
to the disjoint :class:`~agent_cli_proxy.usage.model.Usage` buckets. This module owns what
is common to all of them:

* decoding JSON safely (a response body, or one SSE event's data; ``[DONE]`` and other
  non-JSON data are skipped) — nothing here ever raises on garbage;
* validating counters: a count is a non-negative integer (an integral float or a string of
  digits is accepted); anything else is treated as absent;
* merging: every counter is "last value wins", never a sum. Streams repeat cumulative
  counters (Anthropic ``message_delta``, Gemini chunks, OpenAI-compatible servers that send
  usage on every chunk); a counter a later report omits keeps its earlier value.

Usage is None until some report held at least one valid counter.

A family module provides: ``NEEDLES`` (substrings without which an event's data cannot hold
usage or the model, to skip ``json.loads`` on most events), ``body_readings(obj)`` and
``event_reading(event_name, obj)`` returning *readings* — (raw counters by canonical name,
raw model) — and ``to_usage(counters)``, its bucket arithmetic over validated counters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from agent_cli_proxy.providers import anthropic, gemini, openai_chat, openai_responses
from agent_cli_proxy.providers.readings import Reading
from agent_cli_proxy.providers.routes import Family
from agent_cli_proxy.usage.model import Usage

# Larger "counts" are garbage, and would overflow SQLite's 64-bit INTEGER downstream.
_MAX_COUNT = 2**53


@dataclass(frozen=True, slots=True)
class Extracted:
    """What a response said about itself: usage (None if it reported none) and model."""

    usage: Usage | None
    model: str | None


class EventLike(Protocol):
    """An SSE event (``agent_cli_proxy.upstream.sse.SSEEvent`` fits).

    Declared structurally so that ``providers`` stays independent of the I/O package.
    """

    @property
    def event(self) -> str | None: ...

    @property
    def data(self) -> str: ...


@dataclass(frozen=True, slots=True)
class _Format:
    needles: tuple[str, ...]
    body_readings: Callable[[object], list[Reading]]
    event_reading: Callable[[str | None, object], Reading | None]
    to_usage: Callable[[Mapping[str, int]], Usage]


_FORMATS: dict[Family, _Format] = {
    family: _Format(m.NEEDLES, m.body_readings, m.event_reading, m.to_usage)
    for family, m in (
        (Family.OPENAI_CHAT, openai_chat),
        (Family.OPENAI_RESPONSES, openai_responses),
        (Family.ANTHROPIC, anthropic),
        (Family.GEMINI, gemini),
    )
}


def count(value: object) -> int | None:
    """A token count from the wire, or None when the value is not a valid count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if value.is_integer() else None
    elif isinstance(value, str):
        # Some gateways render counters as strings (protobuf int64 style).
        ok = 0 < len(value) <= 16 and value.isascii() and value.isdigit()
        value = int(value) if ok else None
    if isinstance(value, int) and 0 <= value <= _MAX_COUNT:
        return value
    return None


def _loads(data: str | bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and UnicodeDecodeError.
        return None


class _Accumulator:
    """Last-value-wins merge of readings into counters and a model."""

    __slots__ = ("_counters", "fmt", "model")

    def __init__(self, fmt: _Format) -> None:
        self.fmt = fmt
        self._counters: dict[str, int] = {}
        self.model: str | None = None

    def take(self, reading: Reading) -> None:
        fields, model = reading
        for name, raw in fields.items():
            n = count(raw)
            if n is not None:
                self._counters[name] = n
        if isinstance(model, str) and model:
            self.model = model

    @property
    def usage(self) -> Usage | None:
        return self.fmt.to_usage(self._counters) if self._counters else None


def usage_from_json(family: Family, body: bytes) -> Extracted:
    """Usage and model of a non-stream (JSON) response body; never raises."""
    acc = _Accumulator(_FORMATS[family])
    obj = _loads(body)
    if obj is not None:
        for reading in acc.fmt.body_readings(obj):
            acc.take(reading)
    return Extracted(acc.usage, acc.model)


class StreamExtractor:
    """Usage and model of an SSE response, fed one event at a time; never raises."""

    __slots__ = ("_acc",)

    def __init__(self, family: Family) -> None:
        self._acc = _Accumulator(_FORMATS[family])

    def feed(self, event: EventLike) -> None:
        data = event.data
        fmt = self._acc.fmt
        # Most events (text deltas, pings, [DONE]) cannot carry usage or the model: skip
        # them without paying for json.loads.
        if not any(needle in data for needle in fmt.needles):
            return
        reading = fmt.event_reading(event.event, _loads(data))
        if reading is not None:
            self._acc.take(reading)

    @property
    def needles(self) -> tuple[str, ...]:
        """Substrings without which an event's data is skipped unread (its family's
        ``NEEDLES``): a reader may skip such events before they are even parsed."""
        return self._acc.fmt.needles

    @property
    def usage(self) -> Usage | None:
        """Usage so far (partial if the stream ended early); None until any was seen."""
        return self._acc.usage

    @property
    def model(self) -> str | None:
        """The model the response reported, if any."""
        return self._acc.model

    def result(self) -> Extracted:
        """Usage and model so far, as one value."""
        return Extracted(self.usage, self.model)


def stream_extractor(family: Family) -> StreamExtractor:
    """A fresh extractor for one SSE response of ``family``."""
    return StreamExtractor(family)

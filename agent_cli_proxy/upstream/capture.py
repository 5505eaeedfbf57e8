"""Reads usage out of a copy of an upstream response while it is being relayed.

The relay hands every upstream byte to a :class:`UsageCapture` (the *tap*). It undoes
gzip/deflate content coding on its copy only, then either feeds an incremental SSE parser
(event streams) or keeps a bounded copy of the body (JSON) to parse at the end. Memory is
bounded in both cases: a response larger than ``max_body_bytes`` is relayed in full but
not parsed, and the SSE parser skips a single line larger than its cap.

The first bytes of the body are kept as a sample, so an upstream error can be recorded
with the message the upstream gave.
"""

from __future__ import annotations

import contextlib
import zlib

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.providers.extract import stream_extractor, usage_from_json
from agent_cli_proxy.providers.routes import Family
from agent_cli_proxy.upstream.sse import SSEEvent, SSEParser
from agent_cli_proxy.usage.model import Usage

_log = get_logger("capture")
MAX_JSON_BODY_BYTES = 32 * 1024 * 1024
SAMPLE_BYTES = 2048


def _decoder(content_encoding: str | None) -> zlib._Decompress | None:
    coding = (content_encoding or "").strip().lower()
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        # "deflate" is zlib-wrapped by the RFC; 32 + MAX_WBITS also accepts gzip headers.
        return zlib.decompressobj(32 + zlib.MAX_WBITS)
    return None


class UsageCapture:
    """A relay tap that extracts usage and the reported model for one API family."""

    def __init__(
        self,
        family: Family | None,
        *,
        content_type: str | None,
        content_encoding: str | None,
        max_body_bytes: int = MAX_JSON_BODY_BYTES,
    ) -> None:
        self.family = family
        self.is_event_stream = "text/event-stream" in (content_type or "").lower()
        coding = (content_encoding or "identity").strip().lower() or "identity"
        self._decoder = _decoder(coding)
        self.is_plain = coding == "identity"
        # br, zstd …: relayed untouched, but the proxy cannot read them.
        self._readable = self.is_plain or self._decoder is not None
        self._max_body = max_body_bytes
        self._extractor = stream_extractor(family) if family and self.is_event_stream else None
        # Without an extractor nothing reads the events: no parser either.
        self._parser = SSEParser() if self._extractor is not None else None
        self._needles = tuple(n.encode() for n in self._extractor.needles
                              ) if self._extractor is not None else ()
        self._body: list[bytes] = []
        self._body_len = 0
        self._overflow = False
        self._sample = bytearray()
        self._finished = False
        self._usage: Usage | None = None
        self._model: str | None = None

    @property
    def usage(self) -> Usage | None:
        """Usage the response reported so far (None: none)."""
        # Worked out when asked (once, at the end), not after every chunk.
        return self._extractor.usage if self._extractor is not None else self._usage

    @property
    def model(self) -> str | None:
        """The model the response reported, if any."""
        return self._extractor.model if self._extractor is not None else self._model

    @property
    def sample(self) -> str:
        """The start of the (decoded) body, for error messages."""
        return self._sample.decode("utf-8", "replace")

    def feed(self, data: bytes) -> None:
        if not self._readable or self._finished:
            return
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                _log.warning("passthrough.undecodable_body")
                self._readable = False
                return
        self._consume(data)

    def _consume(self, data: bytes) -> None:
        if len(self._sample) < SAMPLE_BYTES:
            self._sample += data[: SAMPLE_BYTES - len(self._sample)]
        if self._parser is not None:
            if not self._skippable(data):
                self._handle_events(self._parser.feed(data))
        elif self.family is not None and not self._overflow and not self.is_event_stream:
            self._body_len += len(data)
            if self._body_len > self._max_body:
                self._overflow = True
                self._body.clear()
                _log.warning("passthrough.body_too_large_to_parse", limit=self._max_body)
            else:
                self._body.append(data)

    def _skippable(self, data: bytes) -> bool:
        """Whole events (from an event boundary to a blank line), none naming a needle:
        the extractor would skip every one of them unread. Most chunks of a stream are
        such text deltas; they are not parsed at all.

        What the parser loses is only the ``id`` of skipped events, which no extractor
        reads; a line break other than LF, or anything unfinished, is parsed as usual."""
        assert self._parser is not None
        return (data.endswith(b"\n\n") and self._parser.at_event_boundary
                and b"\r" not in data and not any(n in data for n in self._needles))

    def _handle_events(self, events: list[SSEEvent]) -> None:
        if self._extractor is None:
            return
        for event in events:
            self._extractor.feed(event)

    def finish(self) -> None:
        """Parse what is left; idempotent (the relay may call it at end and at close)."""
        if self._finished or not self._readable:
            self._finished = True
            return
        if self._decoder is not None:
            with contextlib.suppress(zlib.error):  # truncated body: keep what was read
                self._consume(self._decoder.flush())
        self._finished = True
        if self._parser is not None:
            self._handle_events(self._parser.finish())
        elif self.family is not None and not self._overflow and self._body:
            extracted = usage_from_json(self.family, b"".join(self._body))
            self._body.clear()
            self._usage, self._model = extracted.usage, extracted.model

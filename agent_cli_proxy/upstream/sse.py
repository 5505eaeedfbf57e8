"""Incremental Server-Sent Events parser with bounded memory.

The relay forwards upstream bytes to the client unchanged and feeds a *copy* of every chunk
here, so this parser only extracts events (for usage accounting); it never shapes what the
client receives. It follows the WHATWG "event stream interpretation" rules:

* lines end in ``\\n``, ``\\r\\n`` or ``\\r`` (a ``\\r`` ending one chunk and a ``\\n``
  starting the next are one line break);
* ``field: value`` with one optional space after the colon stripped; a line without a
  colon is a field with an empty value; lines starting with ``:`` are comments;
* ``data`` lines are joined with ``\\n``; a blank line dispatches the event; an event
  without data lines is not dispatched; ``id`` persists across events (the spec's "last
  event ID"), ``event`` does not.

One deliberate departure: :meth:`SSEParser.finish` dispatches a final event that lacks the
terminating blank line (even a last ``data:`` line without a newline), because upstreams
that close the connection right after their last event must still be accounted for.

Memory is bounded by ``max_line_bytes``: a longer line is discarded (and counted in
``oversized_lines``), the event it belonged to is not dispatched, and parsing resumes at the
next line. The same cap bounds the data of one event. The parser never raises on input.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event."""

    event: str | None
    """The ``event`` field, or None when absent or empty (the spec's default "message")."""
    data: str
    """The ``data`` lines joined with ``\\n``."""
    id: str | None
    """The last event ID seen so far in the stream (it persists across events)."""


class SSEParser:
    """Turn a byte stream, fed in arbitrary chunks, into :class:`SSEEvent` objects."""

    def __init__(self, max_line_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_line_bytes = max(1, max_line_bytes)
        self.oversized_lines = 0
        """Lines (or event data) discarded because they exceeded ``max_line_bytes``."""
        # The incomplete last line, as bytes: line breaks are ASCII and never occur inside
        # a multi-byte UTF-8 sequence, so decoding whole lines is always safe.
        self._partial = bytearray()
        self._discarding = False  # inside an oversized line: drop bytes until its end
        self._skip_lf = False  # previous chunk ended in "\r": a leading "\n" is its partner
        self._first_line = True  # a UTF-8 BOM may open the stream
        self._data: list[str] = []
        self._data_bytes = 0
        self._has_data = False
        self._event: str | None = None
        self._broken = False  # the current event lost a line: never dispatch it
        self._last_id: str | None = None

    @property
    def at_event_boundary(self) -> bool:
        """Nothing in progress: no partial line, no field of an undispatched event, not
        the stream's first line (which may carry a BOM). Bytes fed now start a new event."""
        return not (self._partial or self._discarding or self._skip_lf or self._first_line
                    or self._has_data or self._data or self._broken
                    or self._event is not None)

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the incomplete line (never more than ``max_line_bytes``)."""
        return len(self._partial)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk``; return the events it completed, in order."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        last = chunk[-1:]
        self._skip_lf = last == b"\r"
        complete = last in (b"\n", b"\r")
        # bytes.splitlines splits on exactly \n, \r\n and \r: the SSE line breaks.
        lines = chunk.splitlines()
        tail = b"" if complete else lines.pop()
        out: list[SSEEvent] = []
        for i, line in enumerate(lines):
            if i == 0 and (self._partial or self._discarding):
                self._line(self._complete_partial(line), out)
            else:
                self._line(line, out)
        if tail:
            self._grow_partial(tail)
        return out

    def finish(self) -> list[SSEEvent]:
        """End of stream: treat an unterminated last line as complete, flush the event."""
        out: list[SSEEvent] = []
        if self._partial or self._discarding:
            self._line(self._complete_partial(b""), out)
        self._line(b"", out)
        self._skip_lf = False
        return out

    # -- internals ---------------------------------------------------------------------

    def _grow_partial(self, piece: bytes) -> None:
        if self._discarding:
            return
        self._partial += piece
        if len(self._partial) > self.max_line_bytes:
            self._partial.clear()
            self._discarding = True

    def _complete_partial(self, piece: bytes) -> bytes | None:
        """Join the held bytes with the piece that ends the line; None if oversized."""
        if self._discarding:
            self._discarding = False
            self._partial.clear()
            return None
        line = bytes(self._partial) + piece
        self._partial.clear()
        return line

    def _line(self, raw: bytes | None, out: list[SSEEvent]) -> None:
        if raw is None or len(raw) > self.max_line_bytes:
            self._oversized()
            return
        if not raw:
            self._dispatch(out)
            return
        line = raw.decode("utf-8", "replace")
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[1:]
                if not line:
                    # A line holding only the BOM is a blank line, like the spec says.
                    self._dispatch(out)
                    return
        if line[0] == ":":
            return
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            if self._broken:
                return  # the event is already lost; do not hold its remaining data
            self._data_bytes += len(raw)
            if self._data_bytes > self.max_line_bytes:
                self._oversized()
                return
            self._data.append(value)
            self._has_data = True
        elif field == "event":
            self._event = value or None
        elif field == "id" and "\x00" not in value:
            self._last_id = value or None
        # "retry" and unknown fields are ignored: they carry nothing we account for.

    def _oversized(self) -> None:
        self.oversized_lines += 1
        self._first_line = False
        self._broken = True
        self._data.clear()

    def _dispatch(self, out: list[SSEEvent]) -> None:
        self._first_line = False
        if self._has_data and not self._broken:
            out.append(SSEEvent(self._event, "\n".join(self._data), self._last_id))
        self._data.clear()
        self._data_bytes = 0
        self._has_data = False
        self._event = None
        self._broken = False

"""UsageCapture passes chunks of whole, needle-free events without parsing them: the usage
and model it reports are exactly what parsing every event gives, however the bytes are
split."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_cli_proxy.providers.extract import Extracted, stream_extractor
from agent_cli_proxy.providers.routes import Family
from agent_cli_proxy.upstream.capture import UsageCapture
from agent_cli_proxy.upstream.sse import SSEParser
from tests import wire

STREAMS = [(Family.ANTHROPIC, wire.messages_stream()),
           (Family.OPENAI_CHAT, wire.chat_stream(True)),
           (Family.OPENAI_RESPONSES, wire.responses_stream()),
           (Family.GEMINI, wire.gemini_stream())]


def reference(family: Family, body: bytes) -> Extracted:
    """Every event parsed and handed to the extractor (what the capture did before)."""
    parser, extractor = SSEParser(), stream_extractor(family)
    for event in [*parser.feed(body), *parser.finish()]:
        extractor.feed(event)
    return extractor.result()


def captured(family: Family, pieces: list[bytes]) -> Extracted:
    capture = UsageCapture(family, content_type="text/event-stream", content_encoding=None)
    for piece in pieces:
        capture.feed(piece)
    capture.finish()
    return Extracted(capture.usage, capture.model)


def delta(text: str) -> bytes:
    payload = {"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": text}}
    return f"event: content_block_delta\ndata: {json.dumps(payload)}\n\n".encode()


TEXTS = st.lists(st.sampled_from(['a', ' ', '"', 'usage', '"usage"', 'message', '\\', '\r',
                                  '\n', ':', '{', 'é']), max_size=8).map("".join)


@st.composite
def streams(draw: st.DrawFn) -> tuple[Family, list[bytes]]:
    family, canned = draw(st.sampled_from(STREAMS))
    events = list(canned.pieces)
    for _ in range(draw(st.integers(0, 4))):  # extra text deltas anywhere but first
        events.insert(draw(st.integers(1, len(events))), delta(draw(TEXTS)))
    if draw(st.booleans()):
        # Odd but legal: an event's data over two lines, an id, a comment, CRLF breaks.
        events.insert(1, draw(st.sampled_from([
            b'data: {"type":"message_delta",\ndata: "usage":{"output_tokens":7}}\n\n',
            b"id: 7\n: comment\n\n", b"event: ping\r\ndata: {}\r\n\r\n", b"retry: 5\n\n"])))
    body = b"".join(events)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=8)))
    bounds = [0, *cuts, len(body)]
    split = [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    by_event = draw(st.booleans())
    return family, (events if by_event else split)


@settings(max_examples=300)
@given(streams())
def test_same_usage_and_model_as_parsing_everything(case: tuple[Family, list[bytes]]) -> None:
    family, pieces = case
    assert captured(family, pieces) == reference(family, b"".join(pieces))


def test_text_deltas_are_not_parsed() -> None:
    canned = wire.messages_stream()
    capture = UsageCapture(Family.ANTHROPIC, content_type="text/event-stream",
                           content_encoding=None)
    parsed: list[bytes] = []
    parser = capture._parser
    assert parser is not None
    feed = parser.feed

    def counting(chunk: bytes) -> list:  # type: ignore[type-arg]
        parsed.append(chunk)
        return feed(chunk)

    parser.feed = counting  # type: ignore[method-assign]
    pieces = [canned.pieces[0], *(delta(f"token {i}") for i in range(50)), *canned.pieces[1:]]
    for piece in pieces:
        capture.feed(piece)
    capture.finish()
    assert capture.usage == canned.usage and capture.model == canned.model
    assert len(parsed) < 10  # the 50 deltas were passed unparsed

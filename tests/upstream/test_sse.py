"""The incremental SSE parser: WHATWG line rules, chunk independence, bounded memory."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_cli_proxy.upstream.sse import SSEEvent, SSEParser


def parse_chunks(chunks: list[bytes], cap: int = 8 * 1024 * 1024) -> list[SSEEvent]:
    parser = SSEParser(max_line_bytes=cap)
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.finish()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- basic rules ------------------------------------------------------------------------------


def test_basic_event_fields() -> None:
    stream = b'event: message_start\nid: 7\ndata: {"a":1}\n\n'
    assert parse_chunks([stream]) == [SSEEvent("message_start", '{"a":1}', "7")]


def test_multiple_data_lines_are_joined_with_newline() -> None:
    assert parse_chunks([b"data: one\ndata: two\ndata:three\n\n"]) == [
        SSEEvent(None, "one\ntwo\nthree", None)
    ]


def test_only_one_space_after_colon_is_stripped() -> None:
    assert parse_chunks([b"data:  two spaces\n\n"])[0].data == " two spaces"


def test_field_without_colon_has_empty_value() -> None:
    assert parse_chunks([b"data\n\n"]) == [SSEEvent(None, "", None)]


def test_comments_and_unknown_fields_are_ignored() -> None:
    stream = b": keep-alive\nretry: 1000\nfoo: bar\ndata: x\n: another\n\n: ping\n\n"
    assert parse_chunks([stream]) == [SSEEvent(None, "x", None)]


def test_event_without_data_is_not_dispatched() -> None:
    stream = b"event: ping\n\ndata: real\n\n"
    # The event type of an undispatched event does not leak into the next one.
    assert parse_chunks([stream]) == [SSEEvent(None, "real", None)]


def test_id_persists_across_events() -> None:
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"
    assert [e.id for e in parse_chunks([stream])] == ["1", "1", None]


def test_id_with_nul_is_ignored() -> None:
    assert parse_chunks([b"id: 5\n\nid: a\x00b\ndata: x\n\n"])[0].id == "5"


def test_crlf_and_cr_line_endings() -> None:
    expected = [SSEEvent("e", "a\nb", None), SSEEvent(None, "c", None)]
    assert parse_chunks([b"event: e\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"]) == expected
    assert parse_chunks([b"event: e\rdata: a\rdata: b\r\rdata: c\r\r"]) == expected


def test_crlf_split_between_chunks_is_one_line_break() -> None:
    chunks = [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]
    assert parse_chunks(chunks) == [SSEEvent(None, "a\nb", None)]


def test_cr_at_chunk_end_then_blank_line() -> None:
    # "\r" then "\n\n": the "\n" completes the CRLF, the second "\n" is the blank line.
    assert parse_chunks([b"data: a\r", b"\n\n"]) == [SSEEvent(None, "a", None)]


def test_multibyte_utf8_split_at_every_byte() -> None:
    stream = "data: héllo €uro 😀\n\n".encode()
    for cut in range(len(stream) + 1):
        assert parse_chunks([stream[:cut], stream[cut:]]) == [SSEEvent(None, "héllo €uro 😀", None)]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert parse_chunks([b"data: \xff\xfe\n\n"]) == [SSEEvent(None, "\ufffd\ufffd", None)]


def test_leading_bom_is_stripped() -> None:
    assert parse_chunks([b"\xef\xbb", b"\xbfdata: x\n\n"]) == [SSEEvent(None, "x", None)]


def test_final_event_without_blank_line_is_flushed_by_finish() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: last\n") == [SSEEvent(None, "a", None)]
    assert parser.finish() == [SSEEvent(None, "last", None)]


def test_final_data_line_without_newline_counts() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"usage":1}') == []
    assert parser.finish() == [SSEEvent(None, '{"usage":1}', None)]


def test_finish_on_empty_or_complete_stream() -> None:
    assert SSEParser().finish() == []
    parser = SSEParser()
    parser.feed(b"data: a\n\n")
    assert parser.finish() == []


def test_empty_chunks_are_harmless() -> None:
    assert parse_chunks([b"", b"data: a", b"", b"\n", b"", b"\n"]) == [SSEEvent(None, "a", None)]


# -- bounded memory -----------------------------------------------------------------------------


def test_oversized_line_is_skipped_and_later_events_parse() -> None:
    big = b"data: " + b"x" * 5000 + b"\n"
    stream = b"data: before\n\nevent: big\n" + big + b"data: tail\n\ndata: after\n\n"
    for chunk_size in (1, 7, 100, 1024, len(stream)):
        parser = SSEParser(max_line_bytes=1024)
        events: list[SSEEvent] = []
        for i in range(0, len(stream), chunk_size):
            events += parser.feed(stream[i : i + chunk_size])
            assert parser.buffered_bytes <= 1024
        events += parser.finish()
        # The broken event is dropped entirely (not dispatched with "tail" only).
        assert events == [SSEEvent(None, "before", None), SSEEvent(None, "after", None)]
        assert parser.oversized_lines == 1


def test_oversized_unterminated_last_line_is_dropped() -> None:
    parser = SSEParser(max_line_bytes=16)
    assert parser.feed(b"data: ok\n\ndata: " + b"y" * 100) == [SSEEvent(None, "ok", None)]
    assert parser.finish() == []
    assert parser.oversized_lines == 1


def test_event_data_is_bounded_too() -> None:
    parser = SSEParser(max_line_bytes=64)
    stream = b"".join(b"data: 0123456789\n" for _ in range(20)) + b"\ndata: next\n\n"
    assert parser.feed(stream) == [SSEEvent(None, "next", None)]
    assert parser.oversized_lines == 1


@settings(max_examples=200, deadline=None)
@given(
    line_lengths=st.lists(st.integers(0, 300), max_size=20),
    chunk_size=st.integers(1, 97),
)
def test_memory_never_exceeds_cap(line_lengths: list[int], chunk_size: int) -> None:
    cap = 128
    stream = b"".join(b"data: " + b"z" * n + b"\n\n" for n in line_lengths)
    parser = SSEParser(max_line_bytes=cap)
    events: list[SSEEvent] = []
    for i in range(0, len(stream), chunk_size):
        events += parser.feed(stream[i : i + chunk_size])
        assert parser.buffered_bytes <= cap
    events += parser.finish()
    kept = [n for n in line_lengths if n + 6 <= cap]
    assert [len(e.data) for e in events] == kept
    assert parser.oversized_lines == len(line_lengths) - len(kept)


# -- chunking independence (property) -------------------------------------------------------

_values = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]),
    max_size=30,
)
_lines = st.one_of(
    st.builds(lambda v: f"data: {v}", _values),
    st.builds(lambda v: f"data:{v}", _values),
    st.builds(lambda v: f"event: {v}", _values),
    st.builds(lambda v: f"id: {v}", _values),
    st.builds(lambda v: f": {v}", _values),
    st.just("data"),
    st.just("retry: 10"),
    st.just(""),
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(_lines, max_size=25),
    endings=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=1, max_size=25),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
    cap=st.sampled_from([16, 40, 8 * 1024 * 1024]),
)
def test_any_chunking_equals_whole(
    lines: list[str], endings: list[str], cuts: list[int], cap: int
) -> None:
    stream = "".join(line + endings[i % len(endings)] for i, line in enumerate(lines)).encode()
    whole = parse_chunks([stream], cap)
    assert parse_chunks(split_at(stream, cuts), cap) == whole
    assert parse_chunks([bytes([b]) for b in stream], cap) == whole


_event_models = st.lists(
    st.tuples(
        st.one_of(st.none(), _values.filter(bool)),
        st.lists(_values, max_size=4),
        st.one_of(st.none(), _values.filter(bool)),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(events=_event_models, ending=st.sampled_from(["\n", "\r\n", "\r"]))
def test_parses_to_the_model(
    events: list[tuple[str | None, list[str], str | None]], ending: str
) -> None:
    text, expected, last_id = "", [], None
    for name, data, event_id in events:
        if name is not None:
            text += f"event: {name}{ending}"
        if event_id is not None:
            text += f"id: {event_id}{ending}"
            last_id = event_id
        text += "".join(f"data: {d}{ending}" for d in data) + ending
        if data:
            expected.append(SSEEvent(name, "\n".join(data), last_id))
    assert parse_chunks([text.encode()]) == expected


def test_only_cr_and_lf_break_lines() -> None:
    # str.splitlines would also split on these; the SSE grammar does not.
    data = "a\x0bb\x0cc\x1cd\x85e\u2028f"
    assert parse_chunks([f"data: {data}\n\n".encode()]) == [SSEEvent(None, data, None)]

"""The plain-header fast path builds exactly the message http.client's email parser builds."""

from __future__ import annotations

import http.client
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_cli_proxy.upstream.response_headers import FastHeadersResponse, parse_headers


def state(message: http.client.HTTPMessage) -> dict[str, object]:
    # Defects are compared by what they say (each parse makes its own objects).
    return {**vars(message), "defects": [repr(d) for d in message.defects]}


def both(block: bytes) -> tuple[http.client.HTTPMessage, http.client.HTTPMessage]:
    return parse_headers(io.BytesIO(block)), http.client.parse_headers(io.BytesIO(block))


NAME = st.text(st.sampled_from("Content-TypeLnghXx_:;. \t\x00\x7fé"), min_size=0, max_size=8)
VALUE = st.text(st.sampled_from("abc 09/;=\t\r\n\x0b\x0c\x1c\x85é\x00:"), max_size=10)


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    lines = []
    for name, value in draw(st.lists(st.tuples(NAME, VALUE), max_size=6)):
        sep = draw(st.sampled_from([": ", ":", ":  \t", " :", ""]))
        end = draw(st.sampled_from(["\r\n", "\r\n", "\n", "\r"]))
        lines.append(name + sep + value + end)
    if draw(st.booleans()):
        lines.insert(0, draw(st.sampled_from([" folded\r\n", "From x\r\n", "\tcont\r\n"])))
    last = draw(st.sampled_from(["\r\n", "\r\n", "\n", ""]))
    return ("".join(lines) + last).encode("latin-1")


@settings(max_examples=500)
@given(header_blocks())
def test_same_message_as_the_email_parser(block: bytes) -> None:
    try:
        fast, slow = both(block)
    except http.client.HTTPException:
        with pytest.raises(http.client.HTTPException):
            parse_headers(io.BytesIO(block))
        return
    assert state(fast) == state(slow)
    assert fast.items() == slow.items()


@pytest.mark.parametrize("block", [
    b"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nX-A:\r\n"
    b"Set-Cookie: a=1\r\nset-cookie: b=2\r\nX-Pad:  v \t \r\nX-Latin: caf\xe9\r\n\r\n",
    b"\r\n",
])
def test_plain_blocks(block: bytes) -> None:
    fast, slow = both(block)
    assert state(fast) == state(slow)
    assert fast.get_all("set-cookie") == slow.get_all("set-cookie")


def test_the_response_reads_status_framing_and_body_as_http_client_does() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
           b"X-CPA-TRACE-ID: t\r\n\r\n{}")

    class Sock:
        def makefile(self, mode: str) -> io.BytesIO:
            return io.BytesIO(raw)

    ours = FastHeadersResponse(Sock())  # type: ignore[arg-type]
    theirs = http.client.HTTPResponse(Sock())  # type: ignore[arg-type]
    for response in (ours, theirs):
        response.begin()
    assert (ours.status, ours.reason, ours.version, ours.length, ours.chunked,
            ours.will_close) == (theirs.status, theirs.reason, theirs.version, theirs.length,
                                 theirs.chunked, theirs.will_close)
    assert state(ours.msg) == state(theirs.msg)
    assert ours.read() == theirs.read() == b"{}"

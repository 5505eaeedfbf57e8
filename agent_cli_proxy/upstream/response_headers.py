"""Parsing an upstream response's header block without the email package, when it is plain.

``http.client`` hands every response's header block to :mod:`email.parser`, a general
RFC 5322 parser: about 5 % of the proxy's CPU per call for half a dozen headers. Real
upstream answers are plain (``Name: value`` lines, no folding, no control characters);
for those :func:`parse_headers` builds the very same :class:`http.client.HTTPMessage`
directly (same headers, same order, same values, as the email parser's ``compat32``
policy stores them). Anything else goes to the email parser, as before.

:class:`FastHeadersResponse` is ``http.client.HTTPResponse`` with that parser: its
``begin`` is the standard library's own code (so every status-line and framing rule of
the running Python applies), bound to this module's :func:`parse_headers` instead of
``http.client``'s. Nothing in ``http.client`` itself is changed.
"""

from __future__ import annotations

import email.parser
import http.client
import re
import types
from typing import Any, BinaryIO

_read_headers = http.client._read_headers  # type: ignore[attr-defined]

# One plain header line: a name of visible ASCII without ":", then a value without CR, LF
# or any other character that Python's line splitting might take for a line break (the
# email parser splits lines; C0 controls other than tab, DEL and NEL are left to it).
_PLAIN_LINE = re.compile(rb"([\x21-\x39\x3b-\x7e]+):[\x09\x20-\x7e\x80-\x84\x86-\xff]*\r\n")


def parse_headers(fp: BinaryIO, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage
                  ) -> http.client.HTTPMessage:
    """What ``http.client.parse_headers`` returns, for the same bytes read from *fp*."""
    lines: list[bytes] = _read_headers(fp)  # the line length and count limits apply
    message = _plain(lines, _class)
    if message is not None:
        return message
    text = b"".join(lines).decode("iso-8859-1")
    return email.parser.Parser(_class=_class).parsestr(text)


def _plain(lines: list[bytes], cls: type[http.client.HTTPMessage]
           ) -> http.client.HTTPMessage | None:
    if not lines or lines[-1] != b"\r\n":
        return None
    fields: list[tuple[str, str]] = []
    for line in lines[:-1]:
        found = _PLAIN_LINE.fullmatch(line)
        if found is None:
            return None
        name_end = found.end(1)
        # compat32's header_source_parse: the value loses leading blanks and the line end.
        fields.append((line[:name_end].decode("ascii"),
                       line[name_end + 1:-2].decode("iso-8859-1").lstrip(" \t")))
    message = cls()
    for name, value in fields:
        message[name] = value
    message.set_payload("")  # the email parser's empty body
    return message


def _with_parse_headers(function: types.FunctionType) -> types.FunctionType:
    """*function* (from http.client) with this module's parse_headers in its globals."""
    scope: dict[str, Any] = dict(function.__globals__)
    scope["parse_headers"] = parse_headers
    copy = types.FunctionType(function.__code__, scope, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__qualname__ = function.__qualname__
    return copy


class FastHeadersResponse(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` reading a plain header block without the email parser."""

    begin = _with_parse_headers(http.client.HTTPResponse.begin)  # type: ignore[arg-type]

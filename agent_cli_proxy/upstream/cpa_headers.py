"""CLIProxyAPI's own response headers, read defensively: ``X-CPA-TRACE-ID`` on data-plane
answers (v7.2.84+, spec §1.6) names the credential that served a call; ``X-CPA-VERSION``
on management answers (§1.1) tells which features to expect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TRACE_HEADER = "X-CPA-TRACE-ID"
VERSION_HEADER = "X-CPA-VERSION"

_STAMP = re.compile(r"\d{14}")
_AUTH_INDEX = re.compile(r"[0-9A-Za-z._:]{1,64}")
_REQUEST_ID = re.compile(r"[0-9A-Za-z]{1,64}")


@dataclass(frozen=True, slots=True)
class Trace:
    """What ``X-CPA-TRACE-ID`` says: the credential CPA used and its request id."""

    selected_at: str
    """``YYYYMMDDhhmmss`` in CPA's local time (no zone: informative only)."""
    auth_index: str
    request_id: str


def parse_trace_id(value: str | None) -> Trace | None:
    """Parse ``<14 digits>-<auth_index>-<request_id>``; any other shape is None.

    Defensive by design (spec §1.6): the first part must be 14 digits, the last ``-`` part
    is the request id, and everything between is the auth index.
    """
    if not value or len(value) > 256:
        return None
    text = value.strip()
    stamp, sep, rest = text.partition("-")
    index, sep2, request_id = rest.rpartition("-")
    if not (sep and sep2 and _STAMP.fullmatch(stamp) and _AUTH_INDEX.fullmatch(index)
            and _REQUEST_ID.fullmatch(request_id)):
        return None
    return Trace(stamp, index, request_id)


_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def parse_version(value: str | None) -> tuple[int, int, int] | None:
    """``v7.2.84`` (or ``7.2.84-rc1``) as a tuple; None for ``dev`` and the like."""
    match = _VERSION.match((value or "").strip())
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3])

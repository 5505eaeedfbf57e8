"""Query parameters of the admin API, checked before anything reaches storage.

Each reader returns a typed value or raises :class:`BadParameter`, which the app turns
into a 400 JSON error naming the parameter: a bad date, limit or filter is the caller's
mistake, never a 500.
"""

from __future__ import annotations

import datetime as dt
import re

from werkzeug.datastructures import MultiDict

LIFECYCLES = frozenset({"pending", "completed", "error", "aborted"})
MAX_LIMIT = 200  # the original's cap on one page of logs
MAX_OFFSET = 10**9
MAX_RANGE_DAYS = 3660
MAX_TREND_HOURS = 24 * 92
MAX_FILTER_LENGTH = 200
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_INT = re.compile(r"[0-9]{1,12}")


class BadParameter(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name} {message}")
        self.name = name
        self.message = message


def day(args: MultiDict[str, str], name: str, default: dt.date) -> dt.date:
    raw = args.get(name, "").strip()
    if not raw:
        return default
    return _parse_day(name, raw)


def _parse_day(name: str, raw: str) -> dt.date:
    if not _DAY.fullmatch(raw):
        raise BadParameter(name, "must be a date as YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BadParameter(name, "is not a calendar date") from None


def day_range(args: MultiDict[str, str], *, default_from: dt.date | None = None,
              default_to: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """``from`` and ``to``, inclusive; required unless defaults are given."""
    values = []
    for name, default in (("from", default_from), ("to", default_to)):
        raw = args.get(name, "").strip()
        if raw:
            values.append(_parse_day(name, raw))
        elif default is not None:
            values.append(default)
        else:
            raise BadParameter(name, "is required (YYYY-MM-DD)")
    start, end = values
    if start > end:
        raise BadParameter("from", "must not be after to")
    if (end - start).days > MAX_RANGE_DAYS:
        raise BadParameter("to", f"must be within {MAX_RANGE_DAYS} days of from")
    return start, end


def integer(args: MultiDict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name, "").strip()
    if not raw:
        return default
    if not _INT.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadParameter(name, f"must be an integer from {low} to {high}")
    return int(raw)


def text(args: MultiDict[str, str], name: str) -> str | None:
    """An exact-match filter: any text (storage binds it as a parameter), bounded."""
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_FILTER_LENGTH:
        raise BadParameter(name, f"must be at most {MAX_FILTER_LENGTH} characters")
    return raw


def status(args: MultiDict[str, str]) -> tuple[str | None, int | None]:
    """``status`` filter: a lifecycle (``completed``, ``error``…) or an HTTP status."""
    raw = args.get("status", "").strip().lower()
    if not raw:
        return None, None
    if raw in LIFECYCLES:
        return raw, None
    if raw.isdigit() and len(raw) == 3 and 100 <= int(raw) <= 599:
        return None, int(raw)
    raise BadParameter("status", "must be pending, completed, error, aborted or an HTTP "
                                 "status from 100 to 599")

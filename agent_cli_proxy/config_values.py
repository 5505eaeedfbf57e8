"""Value parsers for settings: one raw environment string in, one checked value out.

Each parser returns the value, ``None`` for "unset, use the default", or raises
``ValueError`` whose text is the message shown after the variable's name (``ValueProblems``
carries several, for JSON documents with many bad entries). Pure: no environment, no files.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, Decimal
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Large enough for any sane interval (about 31 years), small enough for Event.wait().
MAX_MS = 10**12

Parser = Callable[[str], Any]


_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class ValueProblems(ValueError):
    """Several problems inside one variable, each as (name suffix like ``[2]``, message)."""

    def __init__(self, parts: list[tuple[str, str]]) -> None:
        super().__init__(parts)
        self.parts = parts


def _decimal(raw: str) -> Decimal | None:
    # Plain decimal notation only: Decimal() alone would also take "NaN", "Infinity", "1_0".
    candidate = raw.strip()
    return Decimal(candidate) if _DECIMAL.fullmatch(candidate) else None


def integer(low: int, high: int) -> Parser:
    """Whole number in [low, high]; ``3100``, ``3100.0`` and ``3.1e3`` all mean 3100."""
    message = f"must be an integer from {low} to {high}"

    def parse(raw: str) -> int:
        number = _decimal(raw)
        # Compare as Decimal first: int(Decimal("1e999999999")) would build a huge integer.
        if number is None or number != number.to_integral_value() or not low <= number <= high:
            raise ValueError(message)
        return int(number)

    return parse


def milliseconds(raw: str) -> int:
    """Positive duration in ms; a fraction is rounded up so a positive value stays positive."""
    number = _decimal(raw)
    if number is None or number <= 0:
        raise ValueError("must be a positive finite number")
    if number > MAX_MS:
        raise ValueError(f"must be at most {MAX_MS} (about 31 years)")
    return int(number.to_integral_value(rounding=ROUND_CEILING))


def boolean(raw: str) -> bool:
    word = raw.strip().lower()
    if word in ("1", "true", "yes"):
        return True
    if word in ("0", "false", "no"):
        return False
    raise ValueError("must be a boolean (true/false, yes/no, or 1/0)")


def cpu_affinity(raw: str) -> str | int:
    """``auto``, ``off``, or one CPU number (``3``)."""
    word = raw.strip().lower()
    if word in ("auto", "off"):
        return word
    if word.isdigit() and len(word) <= 5:
        return int(word)
    raise ValueError("must be auto, off, or a CPU number such as 0")


def text(raw: str) -> str | None:
    """A plain string; blank means unset (the spec's rule for strings)."""
    return raw if raw.strip() else None


def stripped(raw: str) -> str | None:
    return raw.strip() or None


def exactly_one(raw: str) -> bool | None:
    # The original honours PROXY_LOCAL_OK only when it is exactly "1"; other values are
    # noted as a warning by _check_cross_field rather than guessed at.
    return True if raw == "1" else None


def choice(*options: str, aliases: Mapping[str, str] | None = None) -> Parser:
    message = f"must be one of {', '.join(options)}"

    def parse(raw: str) -> str:
        word = raw.strip().lower()
        word = (aliases or {}).get(word, word)
        if word not in options:
            raise ValueError(message)
        return word

    return parse


def normalize_http_url(raw: str) -> str:
    """``raw`` as a canonical http(s) base URL without a trailing ``/``; ValueError if not one."""
    candidate = raw.strip()
    unparseable = "must be a parseable http(s) URL"
    try:
        parts = urlsplit(candidate)
        port = parts.port
    except ValueError:
        raise ValueError(unparseable) from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise ValueError(unparseable)
    if scheme not in ("http", "https"):
        raise ValueError("must be an http(s) URL")
    if not parts.hostname or any(char.isspace() for char in candidate):
        raise ValueError(unparseable)
    if parts.query or parts.fragment:
        # Request paths are appended to this URL; a query or fragment would end up in the middle.
        raise ValueError("must be an http(s) URL without a query or fragment")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + host
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def http_url(raw: str) -> str | None:
    return normalize_http_url(raw) if raw.strip() else None


@functools.lru_cache(maxsize=256)  # asked per request, of the same configured host
def is_loopback(host: str) -> bool:
    """True for ``localhost`` and every loopback address (127.0.0.0/8, ``::1``, ``[::1]``)."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _json(raw: str, message: str | None = None) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(message or f"must be valid JSON: {exc}") from None


def _is_number(value: object) -> bool:
    # bool is an int subclass, and JSON true is not a position or a price.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    if isinstance(value, float):
        return value.is_integer() and value >= 0  # False for inf and nan
    return _is_number(value) and isinstance(value, int) and value >= 0


def cch_positions(raw: str) -> tuple[int, ...]:
    value = _json(raw, "must be JSON array of finite non-negative integers")
    if not isinstance(value, list):
        raise ValueError("must be an array")
    bad = [(f"[{i}]", "must be a finite non-negative integer") for i, item in enumerate(value)
           if not _is_whole(item)]
    if bad:
        raise ValueProblems(bad)
    return tuple(int(item) for item in value)


def name_mapping(raw: str) -> Mapping[str, str] | None:
    """``key=name,key=name`` (API key -> display name)."""
    if not raw.strip():
        return None
    mapping: dict[str, str] = {}
    bad: list[tuple[str, str]] = []
    for index, entry in enumerate(raw.split(",")):
        key, _, name = entry.partition("=")
        if not key.strip() or not name.strip():
            bad.append((f"[{index}]", "must be a non-empty key=value entry"))
        else:
            mapping[key.strip()] = name.strip()
    if bad:
        raise ValueProblems(bad)
    return MappingProxyType(mapping)


def _json_object(raw: str) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    value = _json(raw)
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


def _is_price(value: object) -> bool:
    if not _is_number(value) or not isinstance(value, (int, float)):
        return False
    try:
        return 0 <= float(value) < math.inf  # nan fails both comparisons
    except OverflowError:  # an integer beyond float range
        return False


_PRICE_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning")


def pricing_overrides(raw: str) -> Mapping[str, Mapping[str, float]] | None:
    """``{model: {input, output, cache_read?, cache_write?, reasoning?}}``, USD per 1M tokens."""
    document = _json_object(raw)
    if document is None:
        return None
    prices: dict[str, Mapping[str, float]] = {}
    bad: list[tuple[str, str]] = []
    for model, entry in document.items():
        if not isinstance(entry, dict):
            bad.append((f".{model}", "must be a pricing object"))
            continue
        if not all(_is_price(entry.get(key)) for key in ("input", "output")):
            bad.append((f".{model}", "must include non-negative numeric input and output"))
            continue
        # Other keys (models.dev also has e.g. input_audio) are ignored, as in the original.
        row: dict[str, float] = {}
        for key in _PRICE_KEYS:
            if key not in entry:
                continue
            if _is_price(entry[key]):
                row[key] = float(entry[key])
            else:
                bad.append((f".{model}.{key}", "must be a non-negative finite number"))
        prices[model] = MappingProxyType(row)
    if bad:
        raise ValueProblems(bad)
    return MappingProxyType(prices)


def pricing_aliases(raw: str) -> Mapping[str, str] | None:
    """``{model prefix: pricing model name}``."""
    document = _json_object(raw)
    if document is None:
        return None
    bad = [(f".{prefix}", "must be a non-empty string") for prefix, target in document.items()
           if not isinstance(target, str) or not target.strip()]
    if bad:
        raise ValueProblems(bad)
    return MappingProxyType({prefix: target.strip() for prefix, target in document.items()})


def display_url(url: str) -> str:
    """*url* without user info, so a mirror's credentials never reach a log line."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


ONE_LINE_MESSAGE = (
    "must be one line of printable ASCII characters (it is sent in an HTTP header); "
    "check for a second line or stray characters")


def is_header_safe(value: str) -> bool:
    """True when *value* can be sent as an HTTP header value as it is: visible ASCII and
    spaces only (no line breaks, control characters or non-ASCII letters)."""
    return all(" " <= ch <= "~" for ch in value)

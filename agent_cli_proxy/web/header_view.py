"""Request header lookups for the proxy's hot path, straight from the WSGI environ.

Identification alone asks for some 60 headers per call, nearly all absent. werkzeug's
``EnvironHeaders.get`` answers an absent one by raising and catching ``KeyError`` after
rebuilding the environ key from the name: about half of identification's time.
:class:`HeaderView` gives the same answers (the same environ entry for a name, so the same
value, ``None`` when absent) with a dictionary lookup.
"""

from __future__ import annotations

from typing import Any

_UNPREFIXED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})
# Header name -> environ key. The names come from the code (identification rules, the key
# headers), so this stays small; a bound keeps it so whatever a caller passes.
_KEYS: dict[str, str] = {}
_MAX_KEYS = 512


def environ_key(name: str) -> str:
    """The environ key of header *name*, as werkzeug forms it (``x-api-key`` ->
    ``HTTP_X_API_KEY``; Content-Type and Content-Length have no ``HTTP_``)."""
    key = _KEYS.get(name)
    if key is None:
        upper = name.upper().replace("-", "_")
        key = upper if upper in _UNPREFIXED else "HTTP_" + upper
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[name] = key
    return key


class HeaderView:
    """Case-insensitive, read-only header access over a WSGI environ (a ``HeaderLookup``
    for :func:`agent_cli_proxy.usage.identify.identify`)."""

    __slots__ = ("_environ",)

    def __init__(self, environ: dict[str, Any]) -> None:
        self._environ = environ

    def get(self, key: str, /) -> str | None:
        value = self._environ.get(environ_key(key))
        return value if isinstance(value, str) else None

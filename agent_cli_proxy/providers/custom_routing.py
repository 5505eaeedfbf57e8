"""Which upstream serves a request: a custom provider, or the default upstream.

With custom providers configured, a request picks one:

1. explicitly, by the ``x-provider`` header, or else by a string ``provider`` member of a
   JSON object body. The id must name a custom provider that serves the request path
   (else the request is refused: it must not silently go elsewhere), or one of
   :data:`BUILTIN_IDS`, which name the default upstream (``anthropic`` and ``openai`` were
   the original's built-in providers on CLI_PROXY_API_URL; a custom provider may take
   those two ids over);
2. else by model: the first custom provider, in document order, whose ``paths`` include
   the request path and whose ``models`` match the requested model (no list: any model);
3. else the default upstream serves it, exactly as without custom providers.

Without custom providers nothing is selected: every request goes to the default upstream
and ``x-provider`` / ``provider`` mean nothing to the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent_cli_proxy.providers.custom_config import DEFAULT_ID, CustomProvider, ProviderSet
from agent_cli_proxy.providers.routes import parse_json_object

BUILTIN_IDS: Final = frozenset({DEFAULT_ID, "anthropic", "openai"})
SELECT_HEADER: Final = "x-provider"
BODY_FIELD: Final = "provider"


class SelectionError(Exception):
    """An explicitly named provider cannot serve this request (answer 400)."""

    def __init__(self, code: str, message: str, provider_id: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.provider_id = provider_id


@dataclass(frozen=True, slots=True)
class Selection:
    provider: CustomProvider | None
    """None: the default upstream."""
    how: str
    """``header``, ``body``, ``model`` or ``default``."""


def body_provider(body: bytes) -> str | None:
    """The body's top-level ``provider`` member when it is a non-empty string (other
    shapes, such as OpenRouter's routing-preferences object, are not an id)."""
    if b'"provider"' not in body:  # most bodies: skip the parse
        return None
    obj = parse_json_object(body)
    value = obj.get(BODY_FIELD) if obj is not None else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def select(provider_set: ProviderSet, path: str, *, header_id: str | None, body: bytes,
           model: str | None) -> Selection:
    """The provider for a request to *path* (the decoded path the proxy classifies);
    raises :class:`SelectionError` for an explicit id that cannot serve it."""
    if not provider_set.providers:
        return Selection(None, "default")
    header_id = (header_id or "").strip() or None
    explicit, how = (header_id, "header") if header_id else (body_provider(body), "body")
    if explicit is not None:
        provider = provider_set.find(explicit)
        if provider is None:
            if explicit in BUILTIN_IDS:
                return Selection(None, how)
            known = ", ".join(sorted({*(p.id for p in provider_set.providers), *BUILTIN_IDS}))
            raise SelectionError("unknown_provider",
                                 f"unknown provider {_quoted(explicit)} (known: {known})",
                                 explicit)
        if not provider.serves(path):
            raise SelectionError("provider_path_not_served",
                                 f"provider {_quoted(explicit)} does not serve {path}; it "
                                 f"serves {', '.join(provider.paths)}", explicit)
        return Selection(provider, how)
    for provider in provider_set.providers:
        if provider.serves(path) and provider.accepts_model(model):
            return Selection(provider, "model")
    return Selection(None, "default")


def _quoted(value: str) -> str:
    # ascii(): a control character in a header or body value cannot forge log lines or
    # break the JSON answer; cut short so a huge value is not echoed back whole.
    return ascii(value[:80])

"""The custom-provider document: its schema, its checks, and the providers it describes.

A document is ``{"providers": [provider, …]}`` (spec §8.4). Each provider names the request
paths it serves, the upstream that serves them, and how credentials and headers change on
the way (see :mod:`agent_cli_proxy.providers.custom_forwarding`). Problems are reported
all at once, each named like ``providers[1].auth.type``, with the original's messages.

No message ever repeats a value from the document: ``auth.value`` and header values are
often secrets, so problems name the field and say what is wrong, never what was there.
Pure: the caller reads the document and passes the environment for ``auth.env``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from agent_cli_proxy.config_values import display_url, is_header_safe, normalize_http_url

PROVIDER_TYPES: Final = ("openai-compatible", "anthropic")
AUTH_TYPES: Final = ("none", "preserve", "bearer", "x-api-key")
TRANSFORMS: Final = ("claude-code",)
DEFAULT_ID: Final = "cliproxyapi"
"""The default upstream (CLI_PROXY_API_URL) and its breaker: no custom provider may take it."""
REDACTED: Final = "[redacted]"
_AUTH_KEYS: Final = frozenset({"type", "env", "value", "header"})
# An HTTP field name (RFC 9110 §5.1): a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A request path as sent on the wire: visible ASCII, no spaces, query or fragment.
_PATH = re.compile(r"/[!-~]*")
# Provider ids travel in the x-provider header and in /admin/breakers/<id>.
_ID = re.compile(r"[!-.0-~]+")  # visible ASCII except "/"
# Headers that describe the proxy's own connection to the upstream: set by the proxy.
_MANAGED_HEADERS: Final = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
    "trailer", "upgrade", "expect", "proxy-connection"})

Issue = tuple[str, str]
"""(``providers[i].field``, message)."""


@dataclass(frozen=True, slots=True)
class ProviderAuth:
    """How the upstream request is authenticated.

    ``none``: every client credential is removed. ``preserve``: the client's own
    credentials go through. ``bearer`` / ``x-api-key``: the client's credentials are
    replaced by *token* in ``header`` (default ``Authorization: Bearer`` / ``x-api-key``).
    """

    type: str
    env: str | None = None
    value: str | None = dataclasses.field(default=None, repr=False)
    header: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    """The secret in use: ``value``, or the variable ``env`` names (resolved at load)."""


@dataclass(frozen=True, slots=True)
class CustomProvider:
    id: str
    type: str
    paths: tuple[str, ...]
    upstream_base_url: str
    """Normalised: http(s), no trailing ``/``."""
    upstream_path: str | None
    models: tuple[str, ...]
    """Empty: any model."""
    headers: tuple[tuple[str, str], ...] = dataclasses.field(repr=False)
    auth: ProviderAuth = ProviderAuth("preserve")
    strip_provider_field: bool = False
    transform: str | None = None

    def serves(self, path: str) -> bool:
        return path in self.paths

    def accepts_model(self, model: str | None) -> bool:
        """No model list: any model (or none). Else the model equals or starts with an
        entry (``glm`` takes ``glm-4.6``)."""
        if not self.models:
            return True
        return model is not None and any(model.startswith(m) for m in self.models)


@dataclass(frozen=True, slots=True)
class ProviderSet:
    """The custom providers in force and where they came from."""

    providers: tuple[CustomProvider, ...] = ()
    source: str | None = None
    """``PROVIDERS_JSON``, ``PROVIDERS_CONFIG_PATH`` or None (none configured)."""
    path: str | None = None
    """The file, for ``PROVIDERS_CONFIG_PATH``."""
    warnings: tuple[str, ...] = ()

    def find(self, provider_id: str) -> CustomProvider | None:
        return next((p for p in self.providers if p.id == provider_id), None)


# -- checking --------------------------------------------------------------------------------


def _non_empty_string(value: object) -> bool:
    return isinstance(value, str) and value.strip() != ""


class _Checker:
    """Collects the issues of one provider entry while reading its fields."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.issues: list[Issue] = []

    def issue(self, field: str, message: str) -> None:
        self.issues.append((f"{self.prefix}.{field}" if field else self.prefix, message))


def _check_paths(c: _Checker, entry: Mapping[str, Any]) -> tuple[str, ...]:
    paths = entry.get("paths")
    if not isinstance(paths, list) or not paths:
        c.issue("paths", "must be a non-empty string array")
        return ()
    for j, path in enumerate(paths):
        if not _non_empty_string(path):
            c.issue(f"paths[{j}]", "must be a non-empty string")
        elif not path.startswith("/"):
            c.issue(f"paths[{j}]", "must start with /")
        elif not _PATH.fullmatch(path) or "?" in path or "#" in path:
            c.issue(f"paths[{j}]", "must be a request path (visible ASCII, no spaces, "
                    "query or fragment)")
    return tuple(p for p in paths if isinstance(p, str))


def _check_url(c: _Checker, entry: Mapping[str, Any]) -> str:
    raw = entry.get("upstreamBaseUrl")
    if not isinstance(raw, str) or not raw.strip():
        c.issue("upstreamBaseUrl", "must be a non-empty http(s) URL string")
        return ""
    try:
        url = normalize_http_url(raw)
    except ValueError as exc:
        c.issue("upstreamBaseUrl", str(exc))
        return ""
    if "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        # urllib3 would silently drop user:password; say where credentials belong.
        c.issue("upstreamBaseUrl", "must not contain user:password (use auth instead)")
        return ""
    return url


def _check_models(c: _Checker, entry: Mapping[str, Any]) -> tuple[str, ...]:
    models = entry.get("models")
    if models is None:
        return ()
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        c.issue("models", "must be a string array")
        return ()
    for j, model in enumerate(models):
        if not model.strip():
            # "" would start every model name: a silent catch-all.
            c.issue(f"models[{j}]", "must be a non-empty string")
    return tuple(models)


def _check_headers(c: _Checker, entry: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    headers = entry.get("headers")
    if headers is None:
        return ()
    if not isinstance(headers, dict):
        c.issue("headers", "must be an object")
        return ()
    out: list[tuple[str, str]] = []
    for name, value in headers.items():
        if not name.strip():
            c.issue("headers", "must not contain empty header names")
        elif not _TOKEN.fullmatch(name):
            c.issue("headers", "must contain only valid header names")
        elif name.lower() in _MANAGED_HEADERS:
            c.issue(f"headers.{name}", "is set by the proxy for its own connection")
        elif not isinstance(value, str):
            c.issue(f"headers.{name}", "must be a string")
        elif not is_header_safe(value):
            c.issue(f"headers.{name}", "must be one line of printable ASCII characters")
        else:
            out.append((name, value))
    return tuple(out)


def _check_auth(c: _Checker, entry: Mapping[str, Any]) -> ProviderAuth:
    auth = entry.get("auth", "preserve")
    one_of = "must be one of " + ", ".join(AUTH_TYPES)
    if isinstance(auth, str):
        if auth not in AUTH_TYPES:
            c.issue("auth", one_of)
            return ProviderAuth("preserve")
        if auth in ("bearer", "x-api-key"):
            c.issue("auth", f"must be an object with env or value when the type is {auth}")
        return ProviderAuth(auth)
    if not isinstance(auth, dict):
        c.issue("auth", one_of)
        return ProviderAuth("preserve")
    for key in auth:
        if key not in _AUTH_KEYS:
            c.issue(f"auth.{key}", "is not supported")
    kind = auth.get("type")
    if not _non_empty_string(kind):
        c.issue("auth.type", "must be a non-empty string")
        kind = "preserve"
    elif kind not in AUTH_TYPES:
        c.issue("auth.type", one_of)
        kind = "preserve"
    fields: dict[str, str | None] = {}
    for key in ("env", "value", "header"):
        value = auth.get(key)
        if key in auth and not _non_empty_string(value):
            c.issue(f"auth.{key}", "must be a non-empty string")
            value = None
        fields[key] = value
    header = fields["header"]
    if header is not None and not _TOKEN.fullmatch(header):
        c.issue("auth.header", "must be a valid header name")
    elif header is not None and header.lower() in _MANAGED_HEADERS:
        c.issue("auth.header", "is set by the proxy for its own connection")
        header = None
    if kind in ("bearer", "x-api-key"):
        if fields["env"] is None and fields["value"] is None and not (
                "env" in auth or "value" in auth):
            c.issue("auth", f"must name env or value when the type is {kind}")
        elif fields["env"] is not None and fields["value"] is not None:
            c.issue("auth", "must name only one of env and value")
    value = fields["value"]
    if value is not None and not is_header_safe(value):
        c.issue("auth.value", "must be one line of printable ASCII characters")
    return ProviderAuth(kind, env=fields["env"], value=value, header=header)


def _check_entry(i: int, entry: object) -> tuple[CustomProvider | None, list[Issue]]:
    c = _Checker(f"providers[{i}]")
    if not isinstance(entry, dict):
        c.issue("", "must be an object")
        return None, c.issues
    provider_id = entry.get("id")
    if not _non_empty_string(provider_id):
        c.issue("id", "must be a non-empty string")
        provider_id = ""
    elif not _ID.fullmatch(str(provider_id)):
        c.issue("id", "must be visible ASCII characters without spaces or /")
    elif provider_id == DEFAULT_ID:
        c.issue("id", f"must not be {DEFAULT_ID}, the default upstream's id")
    kind = entry.get("type")
    if kind not in PROVIDER_TYPES:
        c.issue("type", "must be one of " + ", ".join(PROVIDER_TYPES))
    paths = _check_paths(c, entry)
    base_url = _check_url(c, entry)
    upstream_path = entry.get("upstreamPath")
    if upstream_path is not None and not _non_empty_string(upstream_path):
        c.issue("upstreamPath", "must be a non-empty string")
    elif upstream_path is not None and not upstream_path.startswith("/"):
        c.issue("upstreamPath", "must start with /")
    elif upstream_path is not None and not _PATH.fullmatch(upstream_path):
        c.issue("upstreamPath", "must be a request path (visible ASCII, no spaces)")
    models = _check_models(c, entry)
    headers = _check_headers(c, entry)
    auth = _check_auth(c, entry)
    strip = entry.get("stripProviderField", False)
    if not isinstance(strip, bool):
        c.issue("stripProviderField", "must be a boolean")
    transform = entry.get("transform")
    if transform is not None and transform not in TRANSFORMS:
        c.issue("transform", "must be one of " + ", ".join(TRANSFORMS))
    if c.issues:
        return None, c.issues
    return CustomProvider(
        id=str(provider_id), type=str(kind), paths=paths, upstream_base_url=base_url,
        upstream_path=upstream_path, models=models, headers=headers, auth=auth,
        strip_provider_field=strip, transform=transform), []


def check_document(document: object) -> tuple[tuple[CustomProvider, ...], list[Issue]]:
    """The providers a parsed document describes, and every problem in it (providers are
    only returned when there is none)."""
    if not isinstance(document, dict):
        return (), [("providers", "must be contained in an object")]
    entries = document.get("providers")
    if not isinstance(entries, list):
        return (), [("providers", "must be an array")]
    providers: list[CustomProvider] = []
    issues: list[Issue] = []
    first_index: dict[str, int] = {}
    for i, entry in enumerate(entries):
        provider, problems = _check_entry(i, entry)
        issues.extend(problems)
        if provider is None:
            continue
        if provider.id in first_index:
            # Selection is by id: a second entry with the same id could never be chosen.
            issues.append((f"providers[{i}].id",
                           f"must be unique (providers[{first_index[provider.id]}] has it)"))
            continue
        first_index[provider.id] = i
        providers.append(provider)
    return (tuple(providers) if not issues else ()), issues


def resolve_tokens(providers: tuple[CustomProvider, ...], lookup: Callable[[str], str | None]
                   ) -> tuple[tuple[CustomProvider, ...], list[str]]:
    """Providers with each auth token in place: ``value``, or the variable ``env`` names
    (read through *lookup*). A variable that is unset or empty is a warning, not an error
    (a provider may be configured before its key is), and its requests go without one."""
    out: list[CustomProvider] = []
    warnings: list[str] = []
    for provider in providers:
        auth = provider.auth
        token = auth.value
        if auth.env is not None:
            token = (lookup(auth.env) or "").strip() or None
            if token is not None and not is_header_safe(token):
                # Never sent (it would break every request, quoted in the error) nor shown.
                warnings.append(f"provider {provider.id}: the value of {auth.env} is not one "
                                "line of printable ASCII; its requests are sent without a "
                                "credential")
                token = None
            elif token is None and auth.type in ("bearer", "x-api-key"):
                warnings.append(f"provider {provider.id}: auth.env names {auth.env}, which is "
                                "not set; its requests are sent without a credential")
        out.append(dataclasses.replace(provider, auth=dataclasses.replace(auth, token=token)))
    return tuple(out), warnings


# -- showing ---------------------------------------------------------------------------------


def public_view(provider: CustomProvider) -> dict[str, Any]:
    """A provider as ``GET /admin/providers`` and ``providers show`` print it: never a
    credential (``auth.value`` is ``[redacted]``, headers are listed by name only, and
    user info in the URL is dropped)."""
    auth: dict[str, Any] = {"type": provider.auth.type}
    if provider.auth.env is not None:
        auth["env"] = provider.auth.env
        auth["envSet"] = provider.auth.token is not None
    if provider.auth.value is not None:
        auth["value"] = REDACTED
    if provider.auth.header is not None:
        auth["header"] = provider.auth.header
    return {
        "id": provider.id,
        "type": provider.type,
        "builtin": False,
        "paths": list(provider.paths),
        "upstreamBaseUrl": display_url(provider.upstream_base_url),
        "upstreamPath": provider.upstream_path,
        "models": list(provider.models),
        "headers": [name for name, _ in provider.headers],
        "auth": auth,
        "stripProviderField": provider.strip_provider_field,
        "transform": provider.transform,
    }


def default_view(cli_proxy_api_url: str) -> dict[str, Any]:
    """The default upstream, which serves every path no custom provider takes."""
    return {
        "id": DEFAULT_ID,
        "type": "cliproxyapi",
        "builtin": True,
        "upstreamBaseUrl": display_url(cli_proxy_api_url),
        "paths": ["/", "/v1/*", "/v1beta/*", "/v1alpha/*", "/v1internal:*", "/api/*",
                  "/backend-api/codex/*"],
        # The client's own credentials are replaced; the key itself is never shown.
        "auth": {"type": "bearer", "env": "CLI_PROXY_API_KEY"},
    }


def registry_view(cli_proxy_api_url: str, provider_set: ProviderSet) -> dict[str, Any]:
    """The whole routing picture: the default upstream, then the custom providers."""
    return {
        "source": provider_set.source,
        "path": provider_set.path,
        "providers": [default_view(cli_proxy_api_url),
                      *(public_view(p) for p in provider_set.providers)],
    }

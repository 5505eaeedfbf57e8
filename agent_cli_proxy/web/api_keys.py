"""Managed proxy API keys: the admin routes that manage them and the proxy-side check.

Admin routes (all behind the admin access check; bodies are JSON objects):

* ``POST /admin/api-keys`` ``{name, allowed_providers?, allowed_accounts?}`` → 201, the
  key's record plus ``key``, the secret, shown this once.
* ``GET /admin/api-keys`` → ``{"apiKeys": [record, …]}`` (revoked keys included).
* ``GET /admin/api-keys/<id>`` → one record.
* ``PATCH /admin/api-keys/<id>`` ``{name?, allowed_providers?, allowed_accounts?,
  rotate?}``: ``null`` lifts a restriction; ``"rotate": true`` gives the key a new secret
  (returned once as ``key``) and the old one stops working at once.
* ``DELETE /admin/api-keys/<id>`` → the record, revoked (kept for history, never deleted).
* ``GET /admin/api-keys/<id>/usage`` → ``{id, requestCount, totalTokens, totalCostUsd}``.

A record is ``{id, keyPrefix, name, createdAt, revokedAt, lastUsedAt, requestCount,
allowedAccounts, allowedProviders}`` (the original's names). ``allowed_providers`` holds
``request_logs.provider`` labels: ``openai``, ``anthropic``, ``gemini``.

Proxy side, :func:`authenticate`: see its docstring for what is accepted and when.
"""

from __future__ import annotations

import json
from typing import Any, Final

from werkzeug.wrappers import Request, Response

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.providers.routes import PROVIDER_LABELS
from agent_cli_proxy.storage import api_keys as store
from agent_cli_proxy.storage.requests import iso_utc
from agent_cli_proxy.web.errors import json_error, json_response
from agent_cli_proxy.web.services import ProxyServices

_log = get_logger("web")

PROVIDERS: Final = frozenset(PROVIDER_LABELS.values())
MAX_BODY_BYTES: Final = 64 * 1024
MAX_LIST_ITEMS: Final = 100
MAX_ITEM_CHARS: Final = 200
UNAUTHORIZED_MESSAGE: Final = "Valid Authorization Bearer token or x-api-key required."
FORBIDDEN_PROVIDER_MESSAGE: Final = "provider not allowed for this API key"
_CREATE_FIELDS: Final = frozenset({"name", "allowed_providers", "allowed_accounts"})
_UPDATE_FIELDS: Final = _CREATE_FIELDS | {"rotate"}


class _BadBody(ValueError):
    pass


# -- body validation ---------------------------------------------------------------------

def _read_object(request: Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _BadBody(f"body must be at most {MAX_BODY_BYTES} bytes")
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise _BadBody(f"body must be at most {MAX_BODY_BYTES} bytes")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _BadBody("body must be a JSON object") from None
    if not isinstance(value, dict):
        raise _BadBody("body must be a JSON object")
    return value


def _check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _BadBody(f"unknown field(s) {', '.join(unknown)}; expected "
                       f"{', '.join(sorted(allowed))}")


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise _BadBody("name must be a non-empty string")
    try:
        return store.clean_name(value)
    except ValueError as exc:
        raise _BadBody(str(exc)) from None


def _string_list(field: str, value: object) -> list[str] | None:
    """A non-empty array of non-empty strings (deduplicated, order kept), or null."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise _BadBody(f"{field} must be a non-empty array of strings, or null for no "
                       "restriction")
    if len(value) > MAX_LIST_ITEMS:
        raise _BadBody(f"{field} must have at most {MAX_LIST_ITEMS} entries")
    items: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _BadBody(f"{field} entries must be non-empty strings")
        if len(item.strip()) > MAX_ITEM_CHARS:
            raise _BadBody(f"{field} entries must be at most {MAX_ITEM_CHARS} characters")
        items.append(item.strip())
    return list(dict.fromkeys(items))


def _providers(value: object) -> list[str] | None:
    providers = _string_list("allowed_providers", value)
    if providers is not None:
        providers = [p.lower() for p in providers]
        unknown = sorted(set(providers) - PROVIDERS)
        if unknown:
            raise _BadBody(f"allowed_providers: unknown provider(s) {', '.join(unknown)}; "
                           f"expected {', '.join(sorted(PROVIDERS))}")
        providers = list(dict.fromkeys(providers))
    return providers


def _bad(exc: _BadBody) -> Response:
    return json_error(400, "invalid_body", str(exc))


def _not_found(key_id: int) -> Response:
    return json_error(404, "not_found", f"no API key with id {key_id}")


def _now_iso(services: ProxyServices) -> str:
    return iso_utc(services.clock.time())


# -- admin handlers ----------------------------------------------------------------------

def create(services: ProxyServices, request: Request) -> Response:
    """``POST /admin/api-keys``."""
    try:
        body = _read_object(request)
        _check_fields(body, _CREATE_FIELDS)
        if "name" not in body:
            raise _BadBody("name is required")
        name = _name(body["name"])
        providers = _providers(body.get("allowed_providers"))
        accounts = _string_list("allowed_accounts", body.get("allowed_accounts"))
    except _BadBody as exc:
        return _bad(exc)
    record, key = store.create_key(services.db, name, allowed_providers=providers,
                                   allowed_accounts=accounts, now_iso=_now_iso(services))
    _log.info("api_keys.created", key_id=record["id"], key_prefix=record["keyPrefix"],
              name=record["name"])
    return json_response({**record, "key": key}, status=201)


def list_all(services: ProxyServices, request: Request) -> Response:
    """``GET /admin/api-keys``."""
    return json_response({"apiKeys": store.list_keys(services.db)})


def get_one(services: ProxyServices, request: Request, key_id: int) -> Response:
    """``GET /admin/api-keys/<id>``."""
    record = store.get_key(services.db, key_id)
    return _not_found(key_id) if record is None else json_response(record)


def update(services: ProxyServices, request: Request, key_id: int) -> Response:
    """``PATCH /admin/api-keys/<id>``."""
    try:
        body = _read_object(request)
        _check_fields(body, _UPDATE_FIELDS)
        if not body:
            raise _BadBody(f"nothing to change; give one of {', '.join(sorted(_UPDATE_FIELDS))}")
        changes: dict[str, Any] = {}
        if "name" in body:
            changes["name"] = _name(body["name"])
        if "allowed_providers" in body:
            changes["allowed_providers"] = _providers(body["allowed_providers"])
        if "allowed_accounts" in body:
            changes["allowed_accounts"] = _string_list("allowed_accounts",
                                                       body["allowed_accounts"])
        rotate = body.get("rotate", False)
        if not isinstance(rotate, bool):
            raise _BadBody("rotate must be true or false")
    except _BadBody as exc:
        return _bad(exc)
    current = store.get_key(services.db, key_id)
    if current is None:
        return _not_found(key_id)
    if rotate and current["revokedAt"] is not None:
        # Checked before any change is written, so a refused PATCH changes nothing.
        return json_error(409, "key_revoked", f"API key {key_id} is revoked; create a new one")
    record = store.update_key(services.db, key_id, **changes) if changes else current
    if record is None:
        return _not_found(key_id)
    if not rotate:
        return json_response(record)
    try:
        rotated = store.rotate_key(services.db, key_id, _now_iso(services))
    except store.KeyRevokedError:
        return json_error(409, "key_revoked", f"API key {key_id} is revoked; create a new one")
    if rotated is None:
        return _not_found(key_id)
    record, key = rotated
    _log.info("api_keys.rotated", key_id=key_id, key_prefix=record["keyPrefix"])
    return json_response({**record, "key": key})


def revoke(services: ProxyServices, request: Request, key_id: int) -> Response:
    """``DELETE /admin/api-keys/<id>``: revoke (idempotent; the first time is kept)."""
    if not store.revoke_key(services.db, key_id, _now_iso(services)):
        return _not_found(key_id)
    record = store.get_key(services.db, key_id)
    if record is None:
        return _not_found(key_id)
    _log.info("api_keys.revoked", key_id=key_id, key_prefix=record["keyPrefix"])
    return json_response(record)


def usage(services: ProxyServices, request: Request, key_id: int) -> Response:
    """``GET /admin/api-keys/<id>/usage``."""
    totals = store.key_usage(services.db, key_id)
    return _not_found(key_id) if totals is None else json_response(totals)


# -- proxy side --------------------------------------------------------------------------

def presented_keys(request: Request) -> list[str]:
    """Credentials the client sent, in the order they are tried (duplicates dropped):
    ``Authorization: Bearer``, ``x-api-key`` (Anthropic SDKs), ``x-goog-api-key`` and the
    ``key`` query parameter (Gemini clients). The proxy replaces every one of them with
    the upstream key before forwarding, so a managed key never leaves the proxy."""
    found: list[str] = []
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        found.append(auth[7:].strip())
    for header in ("x-api-key", "x-goog-api-key"):
        found.append(request.headers.get(header, "").strip())
    found.append(request.args.get("key", "").strip())
    return [k for k in dict.fromkeys(found) if k]


def authenticate(services: ProxyServices, request: Request, provider: str | None
                 ) -> tuple[int | None, Response | None]:
    """Which managed key the request uses, or the response refusing it.

    Returns ``(key_id, None)`` to proceed (record ``key_id`` in the row; None: no managed
    key) or ``(None, response)`` to answer with *response* without forwarding.

    * ``PROXY_REQUIRE_API_KEY`` true: one of :func:`presented_keys` must be a valid,
      non-revoked managed key, else 401 ``invalid_api_key``.
    * false: keys are optional. A valid one is recorded; anything else (the client's own
      provider key, a revoked or unknown key) is ignored and the request proceeds.
    * Either way, a valid key limited to other providers than *provider* gets 403
      ``provider_not_allowed``: a key's limits hold wherever it is presented. *provider*
      is the ``request_logs.provider`` label of an LLM call; None (a call that is not
      recorded: model lists, token counting) skips the provider check.

    ``allowed_accounts`` is not enforced here: the account serving a call is only known
    from CLIProxyAPI afterwards.
    """
    require = services.settings.proxy_require_api_key
    candidates = presented_keys(request)
    record: store.KeyRecord | None = None
    now_s = services.clock.time()
    for candidate in candidates:
        record = store.verify_key(services.db, candidate, now_s=now_s)
        if record is not None:
            break
    if record is None:
        if not require:
            return None, None
        _log.info("proxy.api_key_rejected", reason="invalid" if candidates else "missing",
                  path=request.path)
        response = json_error(401, "invalid_api_key", UNAUTHORIZED_MESSAGE)
        response.headers["WWW-Authenticate"] = 'Bearer realm="agent-cli-proxy"'
        return None, response
    if provider is not None and not record.allows_provider(provider):
        _log.info("proxy.api_key_provider_refused", key_id=record.id,
                  key_prefix=record.key_prefix, provider=provider, path=request.path)
        return None, json_error(403, "provider_not_allowed", FORBIDDEN_PROVIDER_MESSAGE,
                                provider=provider)
    return record.id, None

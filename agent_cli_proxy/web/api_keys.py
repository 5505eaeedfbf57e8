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

POST and PATCH bodies must be sent as ``Content-Type: application/json`` (parameters such
as ``charset`` allowed), else 415 ``unsupported_media_type``: a browser can send a
cross-site ``text/plain`` form without a CORS preflight, never an ``application/json``
one. Strings holding control characters or lone surrogates are refused (400), and error
messages quote offending values with :func:`ascii`, so no input can break the response.

A record is ``{id, keyPrefix, name, createdAt, revokedAt, lastUsedAt, requestCount,
allowedAccounts, allowedProviders}`` (the original's names). ``allowed_providers`` holds
``request_logs.provider`` labels: ``openai``, ``anthropic``, ``gemini``. They name the
API family of a call, i.e. the wire format the client speaks (OpenAI chat/Responses,
Anthropic messages, Gemini), not the vendor of the model that serves it: CLIProxyAPI
translates between formats, so an ``anthropic`` key may reach a GPT model through
``/v1/messages`` and an ``openai`` key a Claude model through ``/v1/chat/completions``.

Proxy side: :func:`authenticate_key` (which key, before the body is read) then
:func:`check_provider` (may that key make this call); :func:`authenticate` composes both.
"""

from __future__ import annotations

import json
from typing import Any, Final

from werkzeug.wrappers import Request, Response

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.providers.routes import PROVIDER_LABELS, is_unbilled
from agent_cli_proxy.storage import DatabaseClosedError, DatabaseError
from agent_cli_proxy.storage import api_keys as store
from agent_cli_proxy.storage.requests import iso_utc
from agent_cli_proxy.web.errors import json_error, json_response
from agent_cli_proxy.web.header_view import HeaderView
from agent_cli_proxy.web.services import ProxyServices

_log = get_logger("web")

PROVIDERS: Final = frozenset(PROVIDER_LABELS.values())
MAX_BODY_BYTES: Final = 64 * 1024
MAX_LIST_ITEMS: Final = 100
MAX_ITEM_CHARS: Final = 200
UNAUTHORIZED_MESSAGE: Final = "Valid Authorization Bearer token or x-api-key required."
FORBIDDEN_PROVIDER_MESSAGE: Final = "provider not allowed for this API key"
UNATTRIBUTED_MESSAGE: Final = ("this API key may only make calls the proxy can attribute "
                               "to its allowed providers")
UNSUPPORTED_MEDIA_MESSAGE: Final = "request body must be sent as Content-Type: application/json"
_MAX_QUOTED: Final = 5  # offending values quoted in one error message
_MAX_QUOTED_CHARS: Final = 40
_CREATE_FIELDS: Final = frozenset({"name", "allowed_providers", "allowed_accounts"})
_PRESENTED: Final = "agent_cli_proxy.presented_keys"  # environ key of presented_keys()
_UPDATE_FIELDS: Final = _CREATE_FIELDS | {"rotate"}


class _BadBody(ValueError):
    pass


# -- body validation ---------------------------------------------------------------------

def _is_json(request: Request) -> bool:
    """``Content-Type: application/json``, with or without parameters (any case)."""
    return request.mimetype == "application/json"


def _unsupported_media_type() -> Response:
    return json_error(415, "unsupported_media_type", UNSUPPORTED_MEDIA_MESSAGE)


def _quoted(values: list[str]) -> str:
    """Offending values for an error message: ``ascii()`` quoted (so a lone surrogate or a
    control character cannot break the JSON answer or forge log lines), each cut short,
    at most a few."""
    shown = [ascii(v[:_MAX_QUOTED_CHARS]) for v in values[:_MAX_QUOTED]]
    more = len(values) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _read_object(request: Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _BadBody(f"body must be at most {MAX_BODY_BYTES} bytes")
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise _BadBody(f"body must be at most {MAX_BODY_BYTES} bytes")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and UnicodeDecodeError; RecursionError is a
        # deeply nested body ("[" * 60000).
        raise _BadBody("body must be a JSON object") from None
    if not isinstance(value, dict):
        raise _BadBody("body must be a JSON object")
    return value


def _check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _BadBody(f"unknown field(s) {_quoted(unknown)}; expected "
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
        if not item.strip().isprintable():
            # Control characters would forge lines in listings and logs; lone surrogates
            # (from "\ud800" escapes) cannot even be stored as UTF-8.
            raise _BadBody(f"{field} entries must not contain control characters")
        items.append(item.strip())
    return list(dict.fromkeys(items))


def _providers(value: object) -> list[str] | None:
    providers = _string_list("allowed_providers", value)
    if providers is not None:
        providers = [p.lower() for p in providers]
        unknown = sorted(set(providers) - PROVIDERS)
        if unknown:
            raise _BadBody(f"allowed_providers: unknown provider(s) {_quoted(unknown)}; "
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
    if not _is_json(request):
        return _unsupported_media_type()
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
    if not _is_json(request):
        return _unsupported_media_type()
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
    cached: list[str] | None = request.environ.get(_PRESENTED)
    if cached is not None:  # asked again for the same request (recording, routing)
        return list(cached)
    headers = HeaderView(request.environ)
    found: list[str] = []
    auth = headers.get("Authorization") or ""
    if auth[:7].lower() == "bearer ":
        found.append(auth[7:].strip())
    for header in ("x-api-key", "x-goog-api-key"):
        found.append((headers.get(header) or "").strip())
    query = request.environ.get("QUERY_STRING", "")
    if "key" in query or "%" in query:  # parsed only when it may be there (%6Bey is key)
        found.append(request.args.get("key", "").strip())
    keys = [k for k in dict.fromkeys(found) if k]
    request.environ[_PRESENTED] = keys
    return list(keys)


def authenticate_key(services: ProxyServices, request: Request
                     ) -> tuple[store.KeyRecord | None, Response | None]:
    """Which managed key the request presents, or the response refusing it.

    Looks at headers and query only, so it can run before the body is read. Returns
    ``(record, None)`` to proceed (record: the valid key, or None when no managed key is
    in use) or ``(None, response)`` to answer with *response* without forwarding.

    * ``PROXY_REQUIRE_API_KEY`` true: one of :func:`presented_keys` must be a valid,
      non-revoked managed key, else 401 ``invalid_api_key``.
    * false: keys are optional. A valid one is returned (and recorded in the row);
      anything else (the client's own provider key, a revoked or unknown key) is ignored
      and the request proceeds without one.

    What the key may do is :func:`check_provider`'s business.
    """
    require = services.settings.proxy_require_api_key
    candidates = presented_keys(request)
    now_s = services.clock.time()
    try:
        # Most proxies have no managed key at all: then no presented key can be one.
        lookups = candidates if candidates and store.any_active_keys(services.db) else []
    except (DatabaseError, DatabaseClosedError):
        lookups = candidates  # each lookup below reports the failure
    for candidate in lookups:
        try:
            record = store.verify_key(services.db, candidate, now_s=now_s)
        except (DatabaseError, DatabaseClosedError):
            _log.exception("proxy.api_key_check_failed", path=request.path)
            if not require:
                return None, None  # keys are optional: serve, unattributed
            return None, json_error(503, "key_check_unavailable",
                                    "the proxy cannot check API keys right now; try again")
        if record is not None:
            return record, None
    if not require:
        return None, None
    _log.info("proxy.api_key_rejected", reason="invalid" if candidates else "missing",
              path=request.path)
    response = json_error(401, "invalid_api_key", UNAUTHORIZED_MESSAGE)
    response.headers["WWW-Authenticate"] = 'Bearer realm="agent-cli-proxy"'
    return None, response


def check_provider(record: store.KeyRecord | None, method: str, path: str,
                   provider: str | None) -> Response | None:
    """None if the key *record* may make this call, else the 403 refusing it.

    *provider* is the ``request_logs.provider`` label of the call as classified
    (:func:`agent_cli_proxy.providers.routes.classify`), or None when it is not an LLM
    call; *method* and *path* are the request's (the path the call was classified on).

    ``allowed_providers`` limits the API family of the call, i.e. the wire format the
    client speaks (``openai``: chat completions/Responses, ``anthropic``: messages,
    ``gemini``: generateContent), not the vendor of the model: CLIProxyAPI translates
    between formats, so which model serves the call is the ``model`` field's business.

    * No key, or a key without ``allowed_providers``: every call is allowed, on every path.
    * A restricted key and an LLM call: allowed if *provider* is in its list, else 403
      ``provider_not_allowed`` (a key's limits hold wherever it is presented).
    * A restricted key and a call that is not an LLM call: it fails closed. Only requests
      known to cost nothing (:func:`agent_cli_proxy.providers.routes.is_unbilled`: model
      lists, token counting, ``/``) pass; anything else (embeddings, images, routes the
      proxy does not know) could be billed without a row the key's limits can apply to,
      so it gets 403 ``provider_not_allowed``.

    ``allowed_accounts`` is not enforced here: the account serving a call is only known
    from CLIProxyAPI afterwards.
    """
    if record is None or record.allowed_providers is None:
        return None
    if provider is not None:
        if record.allows_provider(provider):
            return None
        _log.info("proxy.api_key_provider_refused", key_id=record.id,
                  key_prefix=record.key_prefix, provider=provider, path=path)
        return json_error(403, "provider_not_allowed", FORBIDDEN_PROVIDER_MESSAGE,
                          provider=provider)
    if is_unbilled(method, path):
        return None
    _log.info("proxy.api_key_unattributed_refused", key_id=record.id,
              key_prefix=record.key_prefix, method=method, path=path)
    return json_error(403, "provider_not_allowed", UNATTRIBUTED_MESSAGE)


def authenticate(services: ProxyServices, request: Request, provider: str | None
                 ) -> tuple[int | None, Response | None]:
    """:func:`authenticate_key` then :func:`check_provider` on ``request.method`` and
    ``request.path``.

    Returns ``(key_id, None)`` to proceed (record ``key_id`` in the row; None: no managed
    key) or ``(None, response)`` to answer with *response* without forwarding. *provider*
    is the ``request_logs.provider`` label of an LLM call, or None for a request that is
    not one; a key restricted by ``allowed_providers`` (which limits the API family of the
    call, not the model's vendor) then only passes requests known to cost nothing.
    """
    record, refused = authenticate_key(services, request)
    if refused is not None:
        return None, refused
    refused = check_provider(record, request.method, request.path, provider)
    if refused is not None:
        return None, refused
    return (record.id if record is not None else None), None

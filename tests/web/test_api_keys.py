"""Managed proxy API keys: the admin routes over real waitress, and the proxy-side check
(:func:`agent_cli_proxy.web.api_keys.authenticate`) on werkzeug requests.

The admin-route tests need the routes in ``web/app.py``'s ROUTES (endpoint names starting
with ``admin_``, so the admin access check applies); until then they answer 404.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from agent_cli_proxy.clock import SYSTEM_CLOCK, Clock
from agent_cli_proxy.config import Settings
from agent_cli_proxy.providers.routes import PROVIDER_LABELS
from agent_cli_proxy.storage import api_keys as store
from agent_cli_proxy.storage.database import Database, open_database
from agent_cli_proxy.web import api_keys
from agent_cli_proxy.web.services import ProxyServices
from agent_cli_proxy.wsgi import create_app
from tests.conftest import RunningProxy, start_proxy
from tests.hand_clock import HandClock

KEY_SHAPE = re.compile(r"acp_[0-9a-f]{64}")
RECORD_FIELDS = {"id", "keyPrefix", "name", "createdAt", "revokedAt", "lastUsedAt",
                 "requestCount", "allowedAccounts", "allowedProviders"}


def call(proxy: RunningProxy, method: str, target: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One admin request; *body* is sent as JSON unless it is already bytes."""
    parts = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    try:
        conn.request(method, target, body=data,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


# -- admin routes ------------------------------------------------------------------------

def test_create_list_get_usage(proxy: RunningProxy) -> None:
    status, created = call(proxy, "POST", "/admin/api-keys",
                           {"name": "laptop", "allowed_providers": ["Anthropic", "openai"],
                            "allowed_accounts": ["me@example.com"]})
    assert status == 201
    assert set(created) == RECORD_FIELDS | {"key"}
    assert KEY_SHAPE.fullmatch(created["key"]) and created["keyPrefix"] == created["key"][4:12]
    assert created["name"] == "laptop"
    assert created["allowedProviders"] == ["anthropic", "openai"]
    assert created["allowedAccounts"] == ["me@example.com"]
    assert created["createdAt"].endswith("Z") and created["revokedAt"] is None

    status, plain = call(proxy, "POST", "/admin/api-keys", {"name": "ci"})
    assert status == 201
    assert plain["allowedProviders"] is None and plain["allowedAccounts"] is None

    status, listed = call(proxy, "GET", "/admin/api-keys")
    assert status == 200 and list(listed) == ["apiKeys"]
    assert [k["name"] for k in listed["apiKeys"]] == ["laptop", "ci"]
    assert all(set(k) == RECORD_FIELDS for k in listed["apiKeys"])  # never the secret
    assert created["key"] not in json.dumps(listed)

    status, one = call(proxy, "GET", f"/admin/api-keys/{created['id']}")
    assert status == 200 and one == listed["apiKeys"][0]
    status, usage = call(proxy, "GET", f"/admin/api-keys/{created['id']}/usage")
    assert (status, usage) == (200, {"id": created["id"], "requestCount": 0,
                                     "totalTokens": 0, "totalCostUsd": 0.0})


def test_patch_updates_and_rotates(proxy: RunningProxy) -> None:
    _, created = call(proxy, "POST", "/admin/api-keys",
                      {"name": "bot", "allowed_providers": ["openai"]})
    target = f"/admin/api-keys/{created['id']}"
    status, updated = call(proxy, "PATCH", target,
                           {"name": "bot-2", "allowed_accounts": ["acc-1", "acc-1"]})
    assert status == 200 and "key" not in updated
    assert (updated["name"], updated["allowedProviders"], updated["allowedAccounts"]) == \
        ("bot-2", ["openai"], ["acc-1"])
    status, updated = call(proxy, "PATCH", target, {"allowed_providers": None})
    assert status == 200 and updated["allowedProviders"] is None

    status, rotated = call(proxy, "PATCH", target, {"rotate": True, "name": "bot-3"})
    assert status == 200 and KEY_SHAPE.fullmatch(rotated["key"])
    assert rotated["key"] != created["key"] and rotated["name"] == "bot-3"
    assert rotated["id"] == created["id"]
    assert store.verify_key(proxy.db, created["key"]) is None
    assert store.verify_key(proxy.db, rotated["key"]) is not None

    status, same = call(proxy, "PATCH", target, {"rotate": False})
    assert status == 200 and "key" not in same and same["keyPrefix"] == rotated["keyPrefix"]


def test_delete_revokes_once_and_keeps_the_record(proxy: RunningProxy) -> None:
    _, created = call(proxy, "POST", "/admin/api-keys", {"name": "temp"})
    target = f"/admin/api-keys/{created['id']}"
    status, revoked = call(proxy, "DELETE", target)
    assert status == 200 and revoked["revokedAt"] is not None
    assert store.verify_key(proxy.db, created["key"]) is None
    status, again = call(proxy, "DELETE", target)
    assert status == 200 and again["revokedAt"] == revoked["revokedAt"]
    status, body = call(proxy, "PATCH", target, {"rotate": True})
    assert status == 409 and body["error"]["code"] == "key_revoked"
    _, listed = call(proxy, "GET", "/admin/api-keys")
    assert [k["revokedAt"] for k in listed["apiKeys"]] == [revoked["revokedAt"]]
    status, renamed = call(proxy, "PATCH", target, {"name": "temp (old)"})
    assert status == 200 and renamed["revokedAt"] == revoked["revokedAt"]


BAD_BODIES = [
    (b"{not json", "JSON object"),
    (b"", "JSON object"),
    (b"\xff\xfe\x00", "JSON object"),
    (b'["name"]', "JSON object"),
    (b'"name"', "JSON object"),
    (b"null", "JSON object"),
    ({}, "name is required"),
    ({"allowed_providers": ["openai"]}, "name is required"),
    ({"name": 42}, "name must be"),
    ({"name": None}, "name must be"),
    ({"name": ""}, "name must be"),
    ({"name": "   "}, "name must be"),
    ({"name": "x" * 101}, "at most 100"),
    ({"name": "x" * 100_000}, "at most"),
    ({"name": "two\nlines"}, "control characters"),
    ({"name": "k", "allowed_providers": "openai"}, "allowed_providers must be"),
    ({"name": "k", "allowed_providers": []}, "allowed_providers must be"),
    ({"name": "k", "allowed_providers": [1]}, "non-empty strings"),
    ({"name": "k", "allowed_providers": [""]}, "non-empty strings"),
    ({"name": "k", "allowed_providers": ["claude"]}, "unknown provider"),
    ({"name": "k", "allowed_accounts": {"a": 1}}, "allowed_accounts must be"),
    ({"name": "k", "allowed_accounts": ["a" * 201]}, "at most 200"),
    ({"name": "k", "allowed_accounts": [f"a{i}" for i in range(101)]}, "at most 100"),
    ({"name": "k", "allowedProviders": ["openai"]}, "unknown field"),
    # Nesting deeper than json.loads can recurse: RecursionError, not a 500.
    (b"[" * 60000, "JSON object"),
    (b'{"name":"k","x":' + b"[" * 30000 + b"]" * 30000 + b"}", "JSON object"),
    # Lone surrogates (from \ud800 escapes) and control characters: refused, and the
    # error message survives them.
    ({"name": "\ud800"}, "control characters"),
    ({"name": "a\udfffb"}, "control characters"),
    ({"name": "k", "allowed_accounts": ["\ud800"]}, "control characters"),
    ({"name": "k", "allowed_accounts": ["me@example.com", "a\u0007b"]}, "control characters"),
    ({"name": "k", "allowed_accounts": ["a\u2028b"]}, "control characters"),
    ({"name": "k", "allowed_providers": ["\ud800"]}, "control characters"),
    ({"name": "k", "allowed_providers": ["open\u0000ai"]}, "control characters"),
    ({"name": "k", "\ud800": 1}, "unknown field"),
    ({"name": "k", "x\u001b[2J\ny": 1}, "unknown field"),
    ({"name": "k", "allowed_providers": ["\u00e9\ud83d"]}, "control characters"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES,
                         ids=[str(i) for i in range(len(BAD_BODIES))])
def test_create_refuses_bad_bodies(proxy: RunningProxy, body: Any, message: str) -> None:
    status, answer = call(proxy, "POST", "/admin/api-keys", body)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_body"
    assert message in answer["error"]["message"]
    assert call(proxy, "GET", "/admin/api-keys")[1] == {"apiKeys": []}


@pytest.mark.parametrize(("body", "message"), [
    ({}, "nothing to change"),
    ({"rotate": "yes"}, "rotate must be"),
    ({"name": ""}, "name must be"),
    ({"allowed_providers": ["x"]}, "unknown provider"),
    ({"key": "acp_" + "0" * 64}, "unknown field"),
    (b"[1]", "JSON object"),
])
def test_patch_refuses_bad_bodies_and_changes_nothing(proxy: RunningProxy, body: Any,
                                                      message: str) -> None:
    _, created = call(proxy, "POST", "/admin/api-keys", {"name": "keep"})
    status, answer = call(proxy, "PATCH", f"/admin/api-keys/{created['id']}", body)
    assert status == 400 and message in answer["error"]["message"]
    _, one = call(proxy, "GET", f"/admin/api-keys/{created['id']}")
    assert one == {k: v for k, v in created.items() if k != "key"}


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("GET", "", None), ("PATCH", "", {"name": "x"}), ("DELETE", "", None),
    ("GET", "/usage", None), ("PATCH", "", {"rotate": True}),
])
@pytest.mark.parametrize("key_id", ["7", "0", str(2**63), str(2**80)])
def test_unknown_ids_are_404(proxy: RunningProxy, method: str, suffix: str, body: Any,
                             key_id: str) -> None:
    status, answer = call(proxy, method, f"/admin/api-keys/{key_id}{suffix}", body)
    assert status == 404 and answer["error"]["code"] == "not_found"


def test_non_numeric_ids_are_404(proxy: RunningProxy) -> None:
    for target in ("/admin/api-keys/abc", "/admin/api-keys/-1", "/admin/api-keys/1.0/usage"):
        status, _ = call(proxy, "GET", target)
        assert status == 404, target


def test_routes_are_behind_the_admin_check(make_settings: Callable[..., Settings]) -> None:
    running = start_proxy(make_settings(admin_api_key="admin-secret-123"))
    try:
        for method, target, body in (("GET", "/admin/api-keys", None),
                                     ("POST", "/admin/api-keys", {"name": "x"}),
                                     ("DELETE", "/admin/api-keys/1", None)):
            status, _ = call(running, method, target, body)
            assert status == 401, (method, target)
        assert store.list_keys(running.db) == []
        status, created = call(running, "POST", "/admin/api-keys", {"name": "x"},
                               {"x-admin-token": "admin-secret-123"})
        assert status == 201
        # A managed proxy key is not an admin credential.
        status, _ = call(running, "GET", "/admin/api-keys",
                         headers={"Authorization": f"Bearer {created['key']}"})
        assert status == 401
    finally:
        running.stop()


# -- authenticate: the proxy-side check ---------------------------------------------------

@pytest.fixture
def key_db(make_settings: Callable[..., Settings]) -> Iterator[Database]:
    db = open_database(make_settings().db_path)
    yield db
    db.close()


@pytest.fixture
def services(make_settings: Callable[..., Settings], key_db: Database
             ) -> Iterator[Callable[..., ProxyServices]]:
    """ProxyServices from the composition root, with PROXY_REQUIRE_API_KEY as asked."""
    apps: list[Any] = []

    def build(require: bool, clock: Clock = SYSTEM_CLOCK) -> ProxyServices:
        app = create_app(make_settings(proxy_require_api_key=require), key_db, clock=clock)
        apps.append(app)
        services: ProxyServices = app.services
        return services

    yield build
    for app in apps:
        app.close()


def request(headers: dict[str, str] | None = None, query: str = "", *,
            method: str = "POST", path: str = "/v1/messages") -> Request:
    builder = EnvironBuilder(path=path, method=method,
                             headers=list((headers or {}).items()),
                             query_string=query, data=b"{}")
    try:
        return Request(builder.get_environ())
    finally:
        builder.close()


def new_key(db: Database, providers: list[str] | None = None) -> tuple[int, str]:
    record, key = store.create_key(db, "k", allowed_providers=providers,
                                   allowed_accounts=None, now_iso="2026-11-21T00:00:00.000Z")
    return int(record["id"]), key


def assert_401(result: tuple[int | None, Any]) -> None:
    key_id, response = result
    assert key_id is None and response is not None
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(response.get_data()) == {"error": {
        "type": "proxy_error", "code": "invalid_api_key",
        "message": "Valid Authorization Bearer token or x-api-key required."}}


def test_required_key_missing_or_wrong_is_401(services: Callable[..., ProxyServices],
                                              key_db: Database) -> None:
    svc = services(True)
    new_key(key_db)
    assert_401(api_keys.authenticate(svc, request(), "anthropic"))
    assert_401(api_keys.authenticate(svc, request(), None))
    for headers in ({"Authorization": "Bearer acp_" + "0" * 64},
                    {"Authorization": "Bearer "}, {"x-api-key": "sk-ant-real-key"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}):
        assert_401(api_keys.authenticate(svc, request(headers), "anthropic"))


@pytest.mark.parametrize("placement", ["bearer", "lower-bearer", "x-api-key",
                                       "x-goog-api-key", "query"])
def test_required_key_accepted_where_sdks_send_it(services: Callable[..., ProxyServices],
                                                  key_db: Database, placement: str) -> None:
    svc = services(True)
    key_id, key = new_key(key_db)
    headers = {"bearer": {"Authorization": f"Bearer {key}"},
               "lower-bearer": {"authorization": f"bearer  {key} "},
               "x-api-key": {"x-api-key": key},
               "x-goog-api-key": {"x-goog-api-key": key}}.get(placement, {})
    query = f"alt=sse&key={key}" if placement == "query" else ""
    assert api_keys.authenticate(svc, request(headers, query), "anthropic") == (key_id, None)


def test_any_presented_credential_may_be_the_managed_key(
        services: Callable[..., ProxyServices], key_db: Database) -> None:
    # e.g. an SDK that insists on its own Authorization header beside x-api-key.
    svc = services(True)
    key_id, key = new_key(key_db)
    got = api_keys.authenticate(svc, request({"Authorization": "Bearer sk-other",
                                              "x-api-key": key}), "openai")
    assert got == (key_id, None)


def test_revoked_and_rotated_keys_fail_at_once(services: Callable[..., ProxyServices],
                                               key_db: Database) -> None:
    svc = services(True)
    key_id, key = new_key(key_db)
    auth = {"Authorization": f"Bearer {key}"}
    assert api_keys.authenticate(svc, request(auth), "openai") == (key_id, None)
    rotated = store.rotate_key(key_db, key_id, "2026-11-21T00:00:00.000Z")
    assert rotated is not None
    assert_401(api_keys.authenticate(svc, request(auth), "openai"))
    auth = {"Authorization": f"Bearer {rotated[1]}"}
    assert api_keys.authenticate(svc, request(auth), "openai") == (key_id, None)
    store.revoke_key(key_db, key_id, "2026-11-21T00:00:01.000Z")
    assert_401(api_keys.authenticate(svc, request(auth), "openai"))


@pytest.mark.parametrize("require", [True, False])
def test_provider_limits_hold_whether_or_not_keys_are_required(
        services: Callable[..., ProxyServices], key_db: Database, require: bool) -> None:
    svc = services(require)
    key_id, key = new_key(key_db, ["anthropic", "gemini"])
    auth = {"x-api-key": key}
    assert api_keys.authenticate(svc, request(auth), "anthropic") == (key_id, None)
    assert api_keys.authenticate(svc, request(auth), "gemini") == (key_id, None)
    # Not an LLM call, and known to cost nothing (a POST to /v1/messages with provider None
    # is something else since restricted keys fail closed: see the tests below).
    assert api_keys.authenticate(svc, request(auth, method="GET", path="/v1/models"),
                                 None) == (key_id, None)
    got_id, response = api_keys.authenticate(svc, request(auth), "openai")
    assert got_id is None and response is not None and response.status_code == 403
    error = json.loads(response.get_data())["error"]
    assert (error["code"], error["message"]) == ("provider_not_allowed",
                                                 "provider not allowed for this API key")


def test_optional_keys_are_recorded_when_valid(services: Callable[..., ProxyServices],
                                               key_db: Database) -> None:
    svc = services(False)
    key_id, key = new_key(key_db)
    assert api_keys.authenticate(svc, request(), "openai") == (None, None)
    for headers in ({"Authorization": "Bearer sk-upstream-key"}, {"x-api-key": key[:-1]}):
        assert api_keys.authenticate(svc, request(headers), "openai") == (None, None)
    assert api_keys.authenticate(svc, request({"x-api-key": key}), "openai") == (key_id, None)
    store.revoke_key(key_db, key_id, "2026-11-21T00:00:00.000Z")
    assert api_keys.authenticate(svc, request({"x-api-key": key}), "openai") == (None, None)


def test_authenticate_keeps_last_used_current(services: Callable[..., ProxyServices],
                                              key_db: Database) -> None:
    clock = HandClock(1_795_287_571.0)
    svc = services(True, clock)
    key_id, key = new_key(key_db)
    api_keys.authenticate(svc, request({"x-api-key": key}), "openai")
    first = store.get_key(key_db, key_id)
    assert first is not None and first["lastUsedAt"] == "2026-11-21T18:59:31.000Z"
    clock.now += 120
    api_keys.authenticate(svc, request({"x-api-key": key}), "openai")
    second = store.get_key(key_db, key_id)
    assert second is not None and second["lastUsedAt"] == "2026-11-21T19:01:31.000Z"


def test_provider_labels_match_the_cli_choices() -> None:
    from agent_cli_proxy.cli.api_keys import PROVIDER_CHOICES

    assert set(PROVIDER_CHOICES) == set(PROVIDER_LABELS.values()) == api_keys.PROVIDERS


# -- admin bodies: error messages, media type ---------------------------------------------

def send_raw(proxy: RunningProxy, method: str, target: str, body: bytes,
             headers: dict[str, str]) -> tuple[int, Any]:
    """One request with exactly *headers* (no default Content-Type)."""
    parts = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def test_error_messages_quote_offending_values_safely(proxy: RunningProxy) -> None:
    status, answer = call(proxy, "POST", "/admin/api-keys",
                          b'{"name":"k","\\ud800x":1,"zz\\u0007":2}')
    assert status == 400
    message = answer["error"]["message"]
    assert message.startswith("unknown field(s) 'zz\\x07', '\\ud800x'; expected ")
    assert message.isascii() and message.isprintable()
    status, answer = call(proxy, "POST", "/admin/api-keys",
                          {"name": "k", "allowed_providers": ["claude", "Mistral"]})
    assert status == 400
    assert "unknown provider(s) 'claude', 'mistral'; expected" in answer["error"]["message"]
    many = {f"f{i:03}" + "x" * 100: 1 for i in range(50)}
    status, answer = call(proxy, "POST", "/admin/api-keys", {"name": "k", **many})
    assert status == 400 and "and 45 more" in answer["error"]["message"]
    assert len(answer["error"]["message"]) < 500
    assert call(proxy, "GET", "/admin/api-keys")[1] == {"apiKeys": []}


def test_printable_unicode_is_accepted(proxy: RunningProxy) -> None:
    status, created = call(proxy, "POST", "/admin/api-keys",
                           {"name": "Zo\u00eb's laptop \U0001f4bb",
                            "allowed_accounts": ["j\u00fcrgen@example.com"]})
    assert status == 201
    assert created["name"] == "Zo\u00eb's laptop \U0001f4bb"
    assert created["allowedAccounts"] == ["j\u00fcrgen@example.com"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x",
                                          "application/jsonx", "application/json-patch+json"])
def test_create_requires_json_content_type(proxy: RunningProxy,
                                           content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, answer = send_raw(proxy, "POST", "/admin/api-keys", b'{"name":"csrf"}', headers)
    assert status == 415, answer
    assert answer["error"]["code"] == "unsupported_media_type"
    assert call(proxy, "GET", "/admin/api-keys")[1] == {"apiKeys": []}


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON ; charset=UTF-8"])
def test_json_content_type_with_parameters_is_accepted(proxy: RunningProxy,
                                                      content_type: str) -> None:
    status, created = send_raw(proxy, "POST", "/admin/api-keys", b'{"name":"ok"}',
                               {"Content-Type": content_type})
    assert status == 201 and created["name"] == "ok"
    status, updated = send_raw(proxy, "PATCH", f"/admin/api-keys/{created['id']}",
                               b'{"name":"ok-2"}', {"Content-Type": content_type})
    assert status == 200 and updated["name"] == "ok-2"


def test_patch_requires_json_content_type(proxy: RunningProxy) -> None:
    _, created = call(proxy, "POST", "/admin/api-keys", {"name": "keep"})
    target = f"/admin/api-keys/{created['id']}"
    for headers in ({}, {"Content-Type": "text/plain"}):
        status, answer = send_raw(proxy, "PATCH", target, b'{"rotate":true,"name":"x"}',
                                  headers)
        assert status == 415 and answer["error"]["code"] == "unsupported_media_type"
    _, one = call(proxy, "GET", target)
    assert one == {k: v for k, v in created.items() if k != "key"}
    assert store.verify_key(proxy.db, created["key"]) is not None  # not rotated


def test_reads_and_deletes_need_no_content_type(proxy: RunningProxy) -> None:
    _, created = call(proxy, "POST", "/admin/api-keys", {"name": "k"})
    assert send_raw(proxy, "GET", "/admin/api-keys", b"", {})[0] == 200
    assert send_raw(proxy, "DELETE", f"/admin/api-keys/{created['id']}", b"", {})[0] == 200


# -- authenticate_key / check_provider: the split check ----------------------------------

class _Unreadable:
    """A request body that fails the test if anything reads it."""

    def read(self, *args: Any) -> bytes:
        raise AssertionError("the body was read")

    readline = read


def unread_request(headers: dict[str, str]) -> Request:
    builder = EnvironBuilder(path="/v1/messages", method="POST",
                             headers=list(headers.items()))
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    environ["wsgi.input"] = _Unreadable()
    environ["CONTENT_LENGTH"] = "100"
    return Request(environ)


@pytest.mark.parametrize("require", [True, False])
def test_authenticate_key_reads_no_body(services: Callable[..., ProxyServices],
                                        key_db: Database, require: bool) -> None:
    svc = services(require)
    key_id, key = new_key(key_db, ["anthropic"])
    record, refused = api_keys.authenticate_key(svc, unread_request({"x-api-key": key}))
    assert refused is None and record is not None
    assert (record.id, record.allowed_providers) == (key_id, ("anthropic",))
    record, refused = api_keys.authenticate_key(
        svc, unread_request({"Authorization": "Bearer sk-upstream"}))
    assert record is None
    if require:
        assert refused is not None and refused.status_code == 401
        assert_401((None, refused))
    else:
        assert refused is None


def test_authenticate_key_ignores_revoked_keys_when_optional(
        services: Callable[..., ProxyServices], key_db: Database) -> None:
    svc = services(False)
    key_id, key = new_key(key_db)
    store.revoke_key(key_db, key_id, "2026-11-21T00:00:00.000Z")
    assert api_keys.authenticate_key(svc, request({"x-api-key": key})) == (None, None)


def _record(providers: tuple[str, ...] | None) -> store.KeyRecord:
    return store.KeyRecord(id=7, name="k", key_prefix="abcd1234", allowed_providers=providers,
                           allowed_accounts=None)


UNBILLED = [("GET", "/v1/models"), ("HEAD", "/"), ("GET", "/v1beta/models/gemini-2.5-pro"),
            ("POST", "/v1/messages/count_tokens"),
            ("POST", "/v1beta/models/gemini-2.5-pro:countTokens"),
            ("GET", "/api/provider/openai/v1/models")]
POSSIBLY_BILLED = [("POST", "/v1/embeddings"), ("POST", "/v1/images/generations"),
                   ("POST", "/v1beta/interactions"), ("POST", "/v1/videos"),
                   ("POST", "/v1beta/models/gemini-2.5-pro:embedContent"),
                   ("GET", "/v0/management/config"), ("POST", "/api/internal"),
                   ("PUT", "/v1/messages"), ("POST", "/v1/messages")]


@pytest.mark.parametrize(("method", "path"), UNBILLED + POSSIBLY_BILLED)
@pytest.mark.parametrize("provider", [None, "openai", "anthropic", "gemini"])
def test_no_key_or_unrestricted_key_may_do_anything(method: str, path: str,
                                                    provider: str | None) -> None:
    assert api_keys.check_provider(None, method, path, provider) is None
    assert api_keys.check_provider(_record(None), method, path, provider) is None


@pytest.mark.parametrize(("method", "path"), UNBILLED)
def test_restricted_key_may_make_unbilled_requests(method: str, path: str) -> None:
    assert api_keys.check_provider(_record(("anthropic",)), method, path, None) is None
    # Even a key whose allow-list could not be read (it allows no provider).
    assert api_keys.check_provider(_record(()), method, path, None) is None


@pytest.mark.parametrize(("method", "path"), POSSIBLY_BILLED)
def test_restricted_key_fails_closed_on_unattributed_calls(method: str, path: str) -> None:
    response = api_keys.check_provider(_record(("anthropic", "openai")), method, path, None)
    assert response is not None and response.status_code == 403
    assert json.loads(response.get_data()) == {"error": {
        "type": "proxy_error", "code": "provider_not_allowed",
        "message": "this API key may only make calls the proxy can attribute to its "
                   "allowed providers"}}


def test_restricted_key_and_attributed_calls() -> None:
    record = _record(("anthropic",))
    assert api_keys.check_provider(record, "POST", "/v1/messages", "anthropic") is None
    response = api_keys.check_provider(record, "POST", "/v1/chat/completions", "openai")
    assert response is not None and response.status_code == 403
    assert json.loads(response.get_data())["error"] == {
        "type": "proxy_error", "code": "provider_not_allowed",
        "message": "provider not allowed for this API key", "provider": "openai"}
    response = api_keys.check_provider(_record(()), "POST", "/v1/messages", "anthropic")
    assert response is not None and response.status_code == 403


@pytest.mark.parametrize("require", [True, False])
def test_authenticate_composes_both_checks(services: Callable[..., ProxyServices],
                                           key_db: Database, require: bool) -> None:
    svc = services(require)
    limited_id, limited = new_key(key_db, ["openai"])
    open_id, unlimited = new_key(key_db)
    embeddings = {"method": "POST", "path": "/v1/embeddings"}
    got_id, response = api_keys.authenticate(svc, request({"x-api-key": limited},
                                                          **embeddings), None)
    assert got_id is None and response is not None and response.status_code == 403
    assert json.loads(response.get_data())["error"]["code"] == "provider_not_allowed"
    assert api_keys.authenticate(svc, request({"x-api-key": unlimited}, **embeddings),
                                 None) == (open_id, None)
    count = {"method": "POST", "path": "/v1/messages/count_tokens"}
    assert api_keys.authenticate(svc, request({"x-api-key": limited}, **count),
                                 None) == (limited_id, None)
    chat = {"path": "/v1/chat/completions"}
    assert api_keys.authenticate(svc, request({"x-api-key": limited}, **chat),
                                 "openai") == (limited_id, None)

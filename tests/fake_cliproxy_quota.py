"""Fake vendor quota endpoints: canned bodies, CLIProxyAPI's api-call relay over them, and a
tiny vendor server on loopback for the auth-dir fallback.

* :func:`answer_api_call` implements ``POST /v0/management/api-call`` (spec §1.8) over a
  list of auth files: the fake CLIProxyAPI server (``tests/fake_cliproxy.py``) calls it.
* :func:`vendor_answer` is what the vendors answer: it dispatches on the URL's path to the
  canned Codex, Claude, Gemini, Antigravity and Kimi bodies, and checks the bearer token.
* :class:`FakeVendor` serves :func:`vendor_answer` over HTTP and records every request.

Scripting is per account: an auth file may carry ``"fake_quota": {"status": 401, "body":
…}`` (one answer for every probe) or a list of such answers (used in order, the last one
repeating); ``"fake_quota_hold"``, a ``threading.Event``, keeps api-call from answering
for that account until it is set (a slow vendor); ``"fake_quota_calls"`` collects what
api-call sent for it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

CODEX_USAGE: dict[str, Any] = {
    "plan_type": "plus",
    "rate_limit": {"allowed": True, "limit_reached": False,
                   "primary_window": {"used_percent": 37, "limit_window_seconds": 18000,
                                      "reset_after_seconds": 7400, "reset_at": 1787223000},
                   "secondary_window": {"used_percent": 61, "limit_window_seconds": 604800,
                                        "reset_after_seconds": 290000,
                                        "reset_at": 1787505600}},
    "code_review_rate_limit": None, "additional_rate_limits": [],
}
CLAUDE_USAGE: dict[str, Any] = {
    "five_hour": {"utilization": 42.0, "resets_at": "2026-08-20T14:00:00Z"},
    "seven_day": {"utilization": 18.5, "resets_at": "2026-08-25T03:00:00Z"},
    "seven_day_opus": None,
    "extra_usage": {"is_enabled": False, "monthly_limit": 0, "used_credits": 0,
                    "utilization": None},
}
# The 2026 shape: per-model weekly buckets in a limits[] array.
CLAUDE_USAGE_LIMITS: dict[str, Any] = {
    "five_hour": {"utilization": 7.0, "resets_at": "2026-08-20T14:00:00.000+00:00"},
    "seven_day": {"utilization": 30, "resets_at": None},
    "limits": [{"name": "seven_day_sonnet", "utilization": 12.5,
                "resets_at": "2026-08-25T03:00:00Z"},
               {"model": "claude-opus-4-5", "utilization": 100,
                "resets_at": "2026-08-26T00:00:00Z"},
               "junk", {"name": "mystery"}],
    "new_unknown_key": {"whatever": True},
}
GEMINI_QUOTA: dict[str, Any] = {"buckets": [
    {"modelId": "gemini-2.5-pro", "tokenType": "REQUESTS", "remainingFraction": 0.8,
     "remainingAmount": "800", "resetTime": "2026-08-21T00:00:00Z"},
    {"modelId": "gemini-2.5-flash", "tokenType": "REQUESTS", "remainingFraction": 1,
     "resetTime": "2026-08-21T00:00:00Z"},
]}
ANTIGRAVITY_SUMMARY: dict[str, Any] = {"groups": [
    {"displayName": "Claude", "description": "Claude models", "buckets": [
        {"bucketId": "claude", "displayName": "Claude", "window": "5h",
         "remainingFraction": 0.25, "resetTime": "2026-08-20T15:00:00Z"}]},
    {"displayName": "Gemini Pro", "buckets": [
        {"bucketId": "gemini-pro", "displayName": "Gemini 3 Pro",
         "remainingFraction": 0.5, "resetTime": "2026-08-20T16:00:00Z"}]},
]}
KIMI_USAGES: dict[str, Any] = {
    "user": {"membershipLevel": "LEVEL_INTERMEDIATE"},
    "usage": {"limit": "100", "used": "25", "remaining": "75",
              "resetTime": "2026-08-25T00:00:00Z"},
    "limits": [{"window": {"duration": 300, "timeUnit": "TIME_UNIT_MINUTE"},
                "detail": {"limit": "50", "remaining": "40",
                           "resetTime": "2026-08-20T15:00:00Z"}}],
}

# Path ending -> (provider, canned body).
ROUTES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("/wham/usage", "codex", CODEX_USAGE),
    ("/api/codex/usage", "codex", CODEX_USAGE),
    ("/api/oauth/usage", "claude", CLAUDE_USAGE),
    (":retrieveUserQuotaSummary", "antigravity", ANTIGRAVITY_SUMMARY),
    (":retrieveUserQuota", "gemini-cli", GEMINI_QUOTA),
    ("/usages", "kimi", KIMI_USAGES),
)
TOKEN_PATHS = ("/token", "/oauth/token", "/oauth2/token", "/v1/oauth/token")


def route_of(url: str) -> tuple[str, dict[str, Any]] | None:
    path = urlsplit(url).path
    return next(((p, body) for end, p, body in ROUTES if path.endswith(end)), None)


def token_of(entry: Mapping[str, Any]) -> str | None:
    """The auth file's token in CLIProxyAPI's lookup order (metadata first)."""
    meta = entry.get("metadata")
    for source in (meta if isinstance(meta, Mapping) else {}, entry):
        nested = source.get("token")
        if isinstance(nested, Mapping) and nested.get("access_token"):
            return str(nested["access_token"])
        for key in ("access_token", "api_key", "token", "id_token", "cookie"):
            if isinstance(source.get(key), str) and source[key]:
                return str(source[key])
    return None


def vendor_answer(method: str, url: str, headers: Mapping[str, str], body: str | None, *,
                  valid_tokens: set[str] | None = None,
                  overrides: Mapping[str, dict[str, Any]] | None = None) -> tuple[int, str]:
    """What the vendor behind *url* answers: its canned body, 401 for a wrong token."""
    route = route_of(url)
    if route is None:
        return 404, json.dumps({"error": {"message": "not found"}})
    provider, canned = route
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    token = auth[7:] if auth.startswith("Bearer ") else ""
    if not token or "$TOKEN$" in token or (valid_tokens is not None
                                            and token not in valid_tokens):
        return 401, json.dumps({"error": {"type": "authentication_error",
                                          "message": "invalid bearer token"}})
    if provider in ("gemini-cli", "antigravity") and method.upper() != "POST":
        return 405, json.dumps({"error": {"message": "POST only"}})
    return 200, json.dumps((overrides or {}).get(provider, canned))


def _scripted(entry: dict[str, Any]) -> tuple[int, str] | None:
    script = entry.get("fake_quota")
    if script is None:
        return None
    if isinstance(script, list):
        answer = script.pop(0) if len(script) > 1 else script[0]
    else:
        answer = script
    body = answer.get("body", "")
    return int(answer.get("status", 200)), body if isinstance(body, str) else json.dumps(body)


def _index_of(entry: Mapping[str, Any]) -> str | None:
    value = entry.get("auth_index", entry.get("authIndex"))
    return str(value) if value else None


def answer_api_call(body: dict[str, Any], auth_files: list[dict[str, Any]]
                    ) -> tuple[int, dict[str, Any]]:
    """CLIProxyAPI's ``POST /v0/management/api-call`` (§1.8) over *auth_files*.

    Returns the HTTP status and JSON body CLIProxyAPI would answer: 400 ``auth token not
    found`` for an unknown index or a credential without a token, otherwise 200 with the
    vendor's ``status_code``, ``header`` and ``body`` (a string).
    """
    index = next((body[k] for k in ("auth_index", "authIndex", "AuthIndex") if body.get(k)),
                 None)
    method, url = body.get("method"), body.get("url")
    if not isinstance(method, str) or not method or not isinstance(url, str) or not url:
        return 400, {"error": "method and url are required"}
    if not url.startswith(("http://", "https://")):
        return 400, {"error": "url must be absolute"}
    entry = next((f for f in auth_files if index is not None and _index_of(f) == str(index)),
                 None)
    token = None if entry is None else token_of(entry)
    if entry is None or token is None:
        return 400, {"error": "auth token not found"}
    raw_headers = body.get("header") or {}
    headers = {str(k): str(v).replace("$TOKEN$", token) for k, v in raw_headers.items()}
    data = body.get("data")
    entry.setdefault("fake_quota_calls", []).append(
        {"method": method, "url": url, "header": headers, "data": data})
    hold = entry.get("fake_quota_hold")
    if isinstance(hold, threading.Event):
        hold.wait(30)  # the vendor is slow; a test sets it when it is done with the call
    answer = _scripted(entry)
    if answer is None:
        answer = vendor_answer(method, url, headers, data if isinstance(data, str) else None,
                               valid_tokens={token})
    status, text = answer
    return 200, {"status_code": status, "header": {"Content-Type": ["application/json"]},
                 "body": text}


class FakeVendor:
    """Every vendor's quota endpoint on one loopback port (see ``VendorUrls.at``).

    *tokens* are the bearer tokens it accepts; ``answers[path_end]`` scripts a status and
    body for one route. Every request is recorded as ``(method, path, headers, body)``.
    """

    def __init__(self, tokens: set[str]) -> None:
        self.tokens = tokens
        self.answers: dict[str, tuple[int, str]] = {}
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_VendorHandler,), {"vendor": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _m, path, _h, _b in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _VendorHandler(BaseHTTPRequestHandler):
    vendor: FakeVendor
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        headers = {k: v for k, v in self.headers.items()}
        path = urlsplit(self.path).path
        with self.vendor.lock:
            self.vendor.requests.append((self.command, path, headers, body))
        scripted = next((a for end, a in self.vendor.answers.items() if path.endswith(end)),
                        None)
        status, text = scripted or vendor_answer(
            self.command, "http://vendor" + self.path, headers, body,
            valid_tokens=self.vendor.tokens)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer
    do_POST = _answer

"""The OpenAPI 3.1 description of the admin API and the probes, served at
``/admin/openapi.json``. A test checks that every admin route of the routing table is
described here, with its methods, so the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from agent_cli_proxy import __version__
from agent_cli_proxy.web.errors import json_response
from agent_cli_proxy.web.services import ProxyServices

_JSON_OK = {"description": "OK", "content": {"application/json": {}}}
_ERRORS = {
    "400": {"description": "A parameter is invalid; the error names it."},
    "401": {"description": "ADMIN_API_KEY is set and was not sent (or is wrong)."},
    "403": {"description": "The caller is not on this machine."},
}


def _param(name: str, description: str, *, schema: dict[str, Any] | None = None,
           where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "description": description, "schema": schema or {"type": "string"}}


_DAY = {"type": "string", "format": "date"}
DAY = _param("day", "UTC day (YYYY-MM-DD); default today.", schema=_DAY)
FROM = _param("from", "First day, inclusive (YYYY-MM-DD).", schema=_DAY, required=True)
TO = _param("to", "Last day, inclusive (YYYY-MM-DD).", schema=_DAY, required=True)
ROW_ID = _param("row_id", "request_logs id.", schema={"type": "integer"}, where="path")
KEY_ID = _param("key_id", "API key id.", schema={"type": "integer"}, where="path")
BREAKER_ID = _param("breaker_id", "Upstream id (cliproxyapi, or a custom provider's).",
                    where="path")


def _get(summary: str, *params: dict[str, Any], errors: tuple[str, ...] = ("400",),
         public: bool = False) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _JSON_OK}
    for code in errors if public else (*errors, "401", "403"):
        responses[code] = _ERRORS.get(code, {"description": "Not found."})
    return {"summary": summary, "parameters": list(params), "responses": responses}


def _write(summary: str, ok: str, *params: dict[str, Any],
           body: dict[str, Any] | None = None, required: list[str] | None = None
           ) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary, "parameters": list(params),
        "responses": {ok: _JSON_OK, "400": {"description": "The body is invalid."},
                      "401": _ERRORS["401"], "403": _ERRORS["403"],
                      "404": {"description": "No such key."}}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "properties": body, "required": required or [],
                       "additionalProperties": False}}}}
    return operation


PATHS: dict[str, dict[str, Any]] = {
    "/health": {"get": _get("Liveness: the process answers.", errors=(), public=True)},
    "/ready": {"get": _get("Readiness: database, upstream, prices, background loops "
                           "(503 when a critical check fails; cached 3 s).", errors=(),
                           public=True)},
    "/metrics": {"get": {
        "summary": "Prometheus text exposition (version 0.0.4): request, token and cost "
                   "counters, latency, overhead and TTFB histograms, today's usage gauges, "
                   "price and loop health.",
        "parameters": [],
        "responses": {"200": {"description": "OK", "content": {"text/plain": {}}},
                      "401": _ERRORS["401"], "403": _ERRORS["403"]}}},
    "/admin/usage/today": {"get": _get("Usage of the current UTC day, with its breakdown.")},
    "/admin/usage/range": {"get": _get("Usage per day, newest first.", FROM, TO)},
    "/admin/usage/models": {"get": _get("Usage of one day per provider and model.", DAY)},
    "/admin/usage/providers": {"get": _get("Usage of one day per provider.", DAY)},
    "/admin/usage/accounts": {"get": _get("Usage of one day per CLIProxyAPI account.", DAY)},
    "/admin/usage/accounts/range": {"get": _get("Account usage per day.", FROM, TO)},
    "/admin/usage/accounts/summary": {"get": _get(
        "Account totals over a range (default: the last 7 days).",
        {**FROM, "required": False}, {**TO, "required": False})},
    "/admin/usage/trend": {"get": _get(
        "Hourly buckets of recorded calls.",
        _param("hours", "How many hours back (1-2208, default 24).",
               schema={"type": "integer"}),
        _param("provider", "Only this provider."), _param("model", "Only this model."),
        _param("tool", "Only this tool."))},
    "/admin/stats": {"get": _get("Totals over every recorded call.")},
    "/admin/logs": {"get": _get(
        "Recorded calls, newest first.",
        _param("limit", "Page size (1-200, default 50).", schema={"type": "integer"}),
        _param("offset", "Rows to skip (default 0).", schema={"type": "integer"}),
        _param("tool", "Exact tool."), _param("client_id", "Exact client id."),
        _param("model", "Exact model."),
        _param("status", "A lifecycle (pending, completed, error, aborted) or an HTTP "
                         "status."))},
    "/admin/logs/{row_id}": {"get": _get("One recorded call.", ROW_ID,
                                         errors=("404",))},
    "/admin/logs/{row_id}/cost-audit": {"get": _get(
        "Every cost computed for one call, with the price entry, rule and numbers.", ROW_ID,
        errors=("404",))},
    "/admin/quotas": {"get": _get(
        "Each account's newest quota snapshots, the quota service's status and how each "
        "account's last probe went; refresh=true probes first and answers the refresh "
        "result.", _param("refresh", "true: probe every account first.",
                          schema={"type": "boolean"}),
        _param("provider", "Only this provider."), _param("account", "Only this account."))},
    "/admin/quotas/refresh": {
        "get": _get("Probe every account now (as the original; prefer POST).",
                    errors=("503",)),
        "post": _write("Probe every account now: {timestamp, accounts, inserted, source, "
                       "warnings}; 503 when quota probes are not configured.", "200")},
    "/admin/quotas/probes": {"get": _get(
        "What each provider's quota probe asks ($TOKEN$ stands for the account's token).",
        errors=())},
    "/admin/quotas/history": {"get": _get(
        "Hourly buckets of quota snapshots: last and highest share used per window.",
        _param("hours", "How many hours back (1-2208, default 24).",
               schema={"type": "integer"}),
        _param("provider", "Only this provider."), _param("account", "Only this account."))},
    "/admin/pricing": {"get": _get(
        "Price source status, and which price a model gets and why.",
        _param("model", "Model name as a client would send it."),
        _param("provider", "API family hint (openai, anthropic, gemini)."))},
    "/admin/config": {"get": _get("Effective configuration, every secret redacted.")},
    "/admin/providers": {"get": _get(
        "The default upstream and the custom providers: paths, models, auth type (never a "
        "credential; provider headers by name only).", errors=())},
    "/admin/providers/reload": {"post": {
        "summary": "Re-read the custom providers (PROVIDERS_JSON / PROVIDERS_CONFIG_PATH) "
                   "and put them in force; on any problem the providers in force stay.",
        "parameters": [],
        "responses": {"200": _JSON_OK,
                      "400": {"description": "The configuration is invalid; ``issues`` "
                                             "names every problem."},
                      "401": _ERRORS["401"], "403": _ERRORS["403"]}}},
    "/admin/openapi.json": {"get": _get("This document.", errors=())},
    "/admin/breakers": {"get": _get("Circuit breaker of every upstream used so far.",
                                    errors=())},
    "/admin/breakers/{breaker_id}": {"get": _get("One upstream's circuit breaker.",
                                                 BREAKER_ID, errors=("404",))},
    "/admin/breakers/{breaker_id}/reset": {"post": _write(
        "Close a breaker now (after fixing the upstream).", "200", BREAKER_ID)},
    "/admin/api-keys": {
        "get": _get("Managed proxy API keys (never their secrets).", errors=()),
        "post": _write("Create a key; the response shows it once.", "201", body={
            "name": {"type": "string"},
            "allowed_providers": {"type": ["array", "null"], "items": {"type": "string"}},
            "allowed_accounts": {"type": ["array", "null"], "items": {"type": "string"}}},
            required=["name"]),
    },
    "/admin/api-keys/{key_id}": {
        "get": _get("One key.", KEY_ID, errors=("404",)),
        "patch": _write("Rename, change limits, or rotate (\"rotate\": true; the new key "
                        "is shown once).", "200", KEY_ID, body={
                            "name": {"type": "string"}, "rotate": {"type": "boolean"},
                            "allowed_providers": {"type": ["array", "null"]},
                            "allowed_accounts": {"type": ["array", "null"]}}),
        "delete": _write("Revoke a key at once (its usage history stays).", "200", KEY_ID),
    },
    "/admin/api-keys/{key_id}/usage": {"get": _get("Requests, tokens and cost of one key.",
                                                   KEY_ID, errors=("404",))},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "agent-cli-proxy admin API", "version": __version__,
                 "description": "Read the usage, costs and state a proxy recorded. Only "
                                "callers on the proxy's machine are answered."},
        "paths": PATHS,
        "components": {"securitySchemes": {
            "adminToken": {"type": "apiKey", "in": "header", "name": "x-admin-token"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }},
        "security": [{}, {"adminToken": []}, {"bearer": []}],
    }


def handle(services: ProxyServices, request: Request) -> Response:
    return json_response(document())

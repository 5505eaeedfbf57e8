"""JSON error responses produced by the proxy itself (never by the upstream).

The admin API uses one shape: ``{"error": {"type": "proxy_error", "code": …,
"message": …}}``. On the proxied routes an error is written in the shape the client's
API family uses (:func:`client_error`), so its SDK raises the error type it knows and
shows the message: Anthropic's ``{"type": "error", "error": {"type", "message"}}``,
Gemini's ``{"error": {"code", "message", "status"}}``, OpenAI's ``{"error": {"message",
"type", "param", "code"}}``. The proxy's own ``code`` is kept in every shape.
"""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Response


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    response = Response(body, status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def json_error(status: int, code: str, message: str, **extra: Any) -> Response:
    error: dict[str, Any] = {"type": "proxy_error", "code": code, "message": message}
    error.update(extra)
    return json_response({"error": error}, status=status)


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error", 504: "timeout_error"}
_GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                  499: "CANCELLED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def client_error(style: str, status: int, code: str, message: str, **extra: Any) -> Response:
    """An error in the shape of the client's API family (``openai``, ``anthropic``,
    ``gemini``; see :func:`agent_cli_proxy.providers.routes.error_style`)."""
    if style == "anthropic":
        error: dict[str, Any] = {"type": _ANTHROPIC_TYPES.get(status, "api_error"),
                                 "message": message, "code": code, **extra}
        return json_response({"type": "error", "error": error}, status=status)
    if style == "gemini":
        error = {"code": status, "message": message,
                 "status": _GEMINI_STATUS.get(status, "INTERNAL"), "reason": code, **extra}
        return json_response({"error": error}, status=status)
    kind = "invalid_request_error" if 400 <= status < 500 else "proxy_error"
    error = {"message": message, "type": kind, "param": None, "code": code, **extra}
    return json_response({"error": error}, status=status)

"""JSON error responses produced by the proxy itself (never by the upstream).

One shape everywhere, readable by the OpenAI and Anthropic SDKs alike, which both look
for ``error.message``: ``{"error": {"type": "proxy_error", "code": …, "message": …}}``.
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

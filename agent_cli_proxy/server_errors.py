"""Errors waitress answers by itself, before the proxy's WSGI app runs, written as JSON.

waitress refuses some requests while still reading them: a body larger than
``max_request_body_size`` (refused from its Content-Length before the body is read),
malformed HTTP, oversized headers, and a 500 when the app raised. It writes those as
``text/plain``; SDKs then show a parse failure instead of the reason. Here the same
statuses carry the JSON error shape of the API family the request's path belongs to,
exactly like the errors the proxy writes itself.
"""

from __future__ import annotations

from typing import Any

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from agent_cli_proxy.providers.routes import error_style
from agent_cli_proxy.web.errors import client_error

_CODES = {400: "bad_request", 413: "request_too_large", 431: "request_headers_too_large",
          500: "internal_error", 501: "not_implemented"}


def body_limit(max_request_body_size: int) -> int:
    """The largest accepted body: waitress refuses ``size >= max_request_body_size``."""
    return max_request_body_size - 1


class JsonErrorTask(ErrorTask):
    def execute(self) -> None:
        request: Any = self.request  # the stubs call it an Error; it is the parser
        error = request.error
        # Unset (or bytes) when the request line could not be parsed.
        path = getattr(request, "path", "")
        if not isinstance(path, str):
            path = ""
        extra: dict[str, Any] = {}
        if error.code == 413:
            limit = body_limit(self.channel.server.adj.max_request_body_size)
            message = f"request body exceeds {limit} bytes"
            extra["limit"] = limit
        elif error.code == 500:
            message = "the proxy failed while handling this request (see its log)"
        else:
            message = f"{error.reason}: {error.body}"
        response = client_error(error_style(path or "/"), error.code,
                                _CODES.get(error.code, "bad_request"), message, **extra)
        self.status = f"{error.code} {error.reason}"
        # The request may be unread (a refused body): the connection cannot be reused.
        # Said explicitly, as waitress 2.1 (no set_close_on_finish yet) does.
        self.response_headers = [*self.response_headers, ("Content-Type", "application/json"),
                                 ("Connection", "close")]
        self.close_on_finish = True
        body = response.get_data()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask

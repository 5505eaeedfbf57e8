"""The WSGI application: a routing table of named endpoints and their handlers.

Every path that an AI coding tool or SDK may call (``/``, ``/v1/*``, Gemini's ``/v1beta/*``
and ``/v1alpha/*``, Code Assist's ``/v1internal:*``, ``/api/*``) goes to the proxy endpoint;
the proxy decides which of them are LLM calls worth a row. Anything else is a JSON 404.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.web import proxy
from agent_cli_proxy.web.errors import json_error, json_response

_log = get_logger("web")

Handler = Callable[[Request], Any]

URL_MAP = Map(
    [
        Rule("/health", endpoint="health", methods=["GET", "HEAD"]),
        # Claude Code probes "HEAD /" before its first call: let the upstream answer.
        Rule("/", endpoint="proxy"),
        Rule("/v1/<path:rest>", endpoint="proxy"),
        Rule("/v1beta/<path:rest>", endpoint="proxy"),
        Rule("/v1alpha/<path:rest>", endpoint="proxy"),
        Rule("/v1internal:<rest>", endpoint="proxy"),
        Rule("/api/<path:rest>", endpoint="proxy"),
    ],
    strict_slashes=False,
    merge_slashes=False,
)


class ProxyApp:
    """The composition root builds one of these; it is a plain WSGI callable."""

    def __init__(self, services: proxy.ProxyServices) -> None:
        self.services = services
        self.endpoints: dict[str, Handler] = {
            "health": lambda request: json_response({"status": "ok"}),
            "proxy": lambda request: proxy.handle(services, request),
        }

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        adapter = URL_MAP.bind_to_environ(environ)
        try:
            endpoint, _args = adapter.match()
            response = self.endpoints[endpoint](request)
        except NotFound:
            response = json_error(404, "not_found", f"no route for {request.path}")
        except MethodNotAllowed as exc:
            response = json_error(405, "method_not_allowed",
                                  f"{request.method} is not allowed on {request.path}")
            response.headers["Allow"] = ", ".join(exc.valid_methods or [])
        except HTTPException as exc:
            response = json_error(exc.code or 400, "bad_request", exc.description or str(exc))
        except Exception:
            _log.exception("web.unhandled_error", path=request.path, method=request.method)
            response = json_error(500, "internal_error", "internal proxy error")
        result: Iterable[bytes] = response(environ, start_response)
        return result

    def close(self) -> None:
        self.services.watcher.close()
        self.services.client.close()

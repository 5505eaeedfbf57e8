"""The WSGI application: a routing table of named endpoints and their handlers.

``/health`` and ``/ready`` are probes; ``/admin/*`` is the (loopback-only) admin API.
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
from agent_cli_proxy.web import admin, proxy, ready
from agent_cli_proxy.web.errors import json_error, json_response
from agent_cli_proxy.web.services import ProxyServices

_log = get_logger("web")

Handler = Callable[..., Any]

URL_MAP = Map(
    [
        Rule("/health", endpoint="health", methods=["GET", "HEAD"]),
        Rule("/ready", endpoint="ready", methods=["GET", "HEAD"]),
        Rule("/admin/pricing", endpoint="admin_pricing", methods=["GET", "HEAD"]),
        Rule("/admin/logs/<int:row_id>/cost-audit", endpoint="admin_cost_audit",
             methods=["GET", "HEAD"]),
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

    def __init__(self, services: ProxyServices) -> None:
        self.services = services
        self.endpoints: dict[str, Handler] = {
            "health": lambda request: json_response({"status": "ok"}),
            "ready": lambda request: ready.handle(services, request),
            "admin_pricing": lambda request: admin.pricing(services, request),
            "admin_cost_audit": lambda request, row_id: admin.cost_audit(services, request,
                                                                         row_id),
            "proxy": lambda request, rest="": proxy.handle(services, request),
        }

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        adapter = URL_MAP.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
            if endpoint.startswith("admin_") and not admin.is_local(request):
                response = admin.forbidden()
            else:
                response = self.endpoints[endpoint](request, **args)
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

    def start_background(self) -> None:
        """Start the background loops (the server does; tests may serve without them)."""
        self.services.loops.start()

    def close(self) -> None:
        self.services.loops.stop()
        self.services.watcher.close()
        self.services.client.close()

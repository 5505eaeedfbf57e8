"""The WSGI application: a routing table of named endpoints and their handlers.

``/health`` and ``/ready`` are probes; ``/admin/*`` is the (loopback-only) admin API.
Every path that an AI coding tool or SDK may call (``/``, ``/v1/*``, Gemini's ``/v1beta/*``
and ``/v1alpha/*``, Code Assist's ``/v1internal:*``, ``/api/*``) goes to the proxy endpoint;
the proxy decides which of them are LLM calls worth a row. Anything else is a JSON 404.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.web import (
    admin,
    admin_providers,
    admin_quotas,
    admin_usage,
    api_keys,
    metrics,
    openapi,
    params,
    proxy,
    ready,
)
from agent_cli_proxy.web.browsers import foreign_browser_request
from agent_cli_proxy.web.errors import json_error, json_response
from agent_cli_proxy.web.services import ProxyServices

_log = get_logger("web")
_MAX_REMEMBERED_PATHS = 512
# Served by whichever worker took the connection; with several workers every other route
# is the first worker's (web.workers).
_EVERY_WORKER = frozenset({"proxy", "health"})

Handler = Callable[..., Any]  # (services, request, **route arguments) -> WSGI response
_READ = ["GET", "HEAD"]


def _health(services: ProxyServices, request: Request) -> Any:
    return json_response({"status": "ok"})


def _proxy(services: ProxyServices, request: Request, rest: str = "") -> Any:
    return proxy.handle(services, request)


def _admin_unknown(services: ProxyServices, request: Request, rest: str) -> Any:
    return json_error(404, "not_found", f"no admin route {request.path}")


# Endpoint name -> (rule path, methods, handler). Admin endpoints (names starting with
# "admin_") pass the admin access check first; the catch-all keeps unknown admin paths
# behind it too.
ROUTES: dict[str, tuple[str, list[str] | None, Handler]] = {
    "health": ("/health", _READ, _health),
    # Behind the admin access check, like /admin/*.
    "admin_metrics": ("/metrics", _READ, metrics.handle),
    "ready": ("/ready", _READ, ready.handle),
    "admin_usage_today": ("/admin/usage/today", _READ, admin_usage.usage_today),
    "admin_usage_range": ("/admin/usage/range", _READ, admin_usage.usage_range),
    "admin_usage_models": ("/admin/usage/models", _READ, admin_usage.usage_models),
    "admin_usage_providers": ("/admin/usage/providers", _READ, admin_usage.usage_providers),
    "admin_usage_accounts": ("/admin/usage/accounts", _READ, admin_usage.usage_accounts),
    "admin_usage_accounts_range": ("/admin/usage/accounts/range", _READ,
                                   admin_usage.usage_accounts_range),
    "admin_usage_accounts_summary": ("/admin/usage/accounts/summary", _READ,
                                     admin_usage.usage_accounts_summary),
    "admin_usage_trend": ("/admin/usage/trend", _READ, admin_usage.usage_trend),
    "admin_stats": ("/admin/stats", _READ, admin_usage.stats),
    "admin_logs": ("/admin/logs", _READ, admin_usage.logs),
    "admin_log": ("/admin/logs/<int:row_id>", _READ, admin_usage.log_by_id),
    "admin_cost_audit": ("/admin/logs/<int:row_id>/cost-audit", _READ, admin.cost_audit),
    "admin_quotas": ("/admin/quotas", _READ, admin_quotas.quotas),
    # POST is the honest method; GET is what the original answered (drop-in).
    "admin_quotas_refresh": ("/admin/quotas/refresh", ["GET", "POST"], admin_quotas.refresh),
    "admin_quotas_probes": ("/admin/quotas/probes", _READ, admin_quotas.probes),
    "admin_quotas_history": ("/admin/quotas/history", _READ, admin_quotas.history),
    "admin_pricing": ("/admin/pricing", _READ, admin.pricing),
    "admin_config": ("/admin/config", _READ, admin_usage.config),
    "admin_providers": ("/admin/providers", _READ, admin_providers.providers),
    "admin_providers_reload": ("/admin/providers/reload", ["POST"], admin_providers.reload),
    "admin_openapi": ("/admin/openapi.json", _READ, openapi.handle),
    "admin_api_keys": ("/admin/api-keys", _READ, api_keys.list_all),
    "admin_api_keys_create": ("/admin/api-keys", ["POST"], api_keys.create),
    "admin_api_key": ("/admin/api-keys/<int:key_id>", _READ, api_keys.get_one),
    "admin_api_key_update": ("/admin/api-keys/<int:key_id>", ["PATCH"], api_keys.update),
    "admin_api_key_revoke": ("/admin/api-keys/<int:key_id>", ["DELETE"], api_keys.revoke),
    "admin_api_key_usage": ("/admin/api-keys/<int:key_id>/usage", _READ, api_keys.usage),
    "admin_breakers": ("/admin/breakers", _READ, admin.breakers),
    "admin_breaker": ("/admin/breakers/<breaker_id>", _READ, admin.breaker),
    "admin_breaker_reset": ("/admin/breakers/<breaker_id>/reset", ["POST"],
                            admin.breaker_reset),
    "admin_unknown": ("/admin/<path:rest>", None, _admin_unknown),
    # Claude Code probes "HEAD /" before its first call: let the upstream answer.
    "proxy": ("/", None, _proxy),
}
_PROXY_PREFIXES = ("/v1/<path:rest>", "/v1beta/<path:rest>", "/v1alpha/<path:rest>",
                   "/v1internal:<rest>", "/api/<path:rest>",
                   "/backend-api/codex/<path:rest>")  # Codex's ChatGPT-login routes

URL_MAP = Map(
    [Rule(path, endpoint=name, methods=methods) for name, (path, methods, _) in ROUTES.items()]
    + [Rule(path, endpoint="proxy") for path in _PROXY_PREFIXES],
    strict_slashes=False,
    merge_slashes=False,
)


class ProxyApp:
    """The composition root builds one of these; it is a plain WSGI callable."""

    def __init__(self, services: ProxyServices) -> None:
        self.services = services
        self.endpoints: dict[str, Handler] = {name: route[2] for name, route in ROUTES.items()}
        self._proxy_paths: dict[tuple[str, str], Mapping[str, Any]] = {}

    def _match(self, environ: dict[str, Any]) -> tuple[str, Mapping[str, Any]]:
        """werkzeug's match, remembered for paths of the proxy endpoint: nearly every
        request, the same few paths, and binding and matching cost more than the rest of
        the routing. The proxy's rules take any method, and no other rule matches their
        paths, so the path alone decides."""
        key = (environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
        remembered = self._proxy_paths.get(key)
        if remembered is not None:
            return "proxy", remembered
        endpoint, args = URL_MAP.bind_to_environ(environ).match()
        if endpoint == "proxy":
            if len(self._proxy_paths) >= _MAX_REMEMBERED_PATHS:  # paths are the client's
                self._proxy_paths.clear()
            self._proxy_paths[key] = args
        return endpoint, args

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        # Not stored in the environ ("werkzeug.request"): that reference cycle kept every
        # request's objects alive until the cyclic garbage collector came by.
        request = Request(environ, populate_request=False)
        try:
            endpoint, args = self._match(environ)
            refused = self._refusal(endpoint, request)
            primary = self.services.primary_link
            if refused is None and primary is not None and endpoint not in _EVERY_WORKER:
                # Admin state lives in the first worker: it answers (access checked here).
                response = primary.forward(request,
                                           self.services.settings.max_request_body_bytes)
            else:
                response = refused or self.endpoints[endpoint](self.services, request, **args)
        except params.BadParameter as exc:
            response = json_error(400, "invalid_parameter", str(exc), parameter=exc.name)
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
        finally:
            # A reader a handler took for this thread goes back to the pool: held per
            # thread, every one of the server's hundreds of threads would keep one.
            self.services.db.release_reader()
        result: Iterable[bytes] = response(environ, start_response)
        return result

    def _refusal(self, endpoint: str, request: Request) -> Any:
        settings = self.services.settings
        worker = self.services.worker
        if worker is not None and worker.primary:
            if worker.forwarded(request.environ):
                return None  # the worker that took the connection checked it
            if worker.on_private_listener(request.environ):
                return json_error(403, "workers_only",
                                  "this port is for the proxy's own workers")
        admin_route = endpoint.startswith("admin_")
        # An open proxy on loopback (no client keys) is worth a web page's while too.
        open_proxy = (endpoint == "proxy" and settings.is_loopback_host
                      and not settings.proxy_require_api_key)
        refused = admin.denial(request, settings) if admin_route else None
        if refused is None and (admin_route or open_proxy):
            reason = foreign_browser_request(request, settings.proxy_host)
            if reason is not None:
                refused = json_error(403, "browser_request_refused", reason)
        return refused

    def start_background(self) -> None:
        """Start the background loops (the server does; tests may serve without them)."""
        self.services.loops.start()

    def close(self) -> None:
        self.services.loops.stop()
        self.services.watcher.close()
        if self.services.rows is not None:
            self.services.rows.close()  # what is queued is written first
        if self.services.shared_metrics is not None and self.services.worker is not None \
                and not self.services.worker.primary:
            # The last counts, for the last scrape (OSError: the first worker is gone and
            # took the directory with it).
            with contextlib.suppress(OSError):
                self.services.shared_metrics.publish()
        if self.services.primary_link is not None:
            self.services.primary_link.close()
        self.services.client.close()

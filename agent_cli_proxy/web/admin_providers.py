"""``/admin/providers``: which upstream serves which paths, and reloading custom providers.

* ``GET /admin/providers`` → ``{source, path, providers: [...]}``: the default upstream
  first, then each custom provider as configured, never with a credential (auth values
  are ``[redacted]``, provider headers are listed by name only).
* ``POST /admin/providers/reload`` → ``{ok: true, providers: [...]}`` once the providers
  as configured now are in force; 400 ``{ok: false, error, issues: [{name, message}]}``
  when the configuration has problems, in which case the providers in force stay.
"""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from agent_cli_proxy.config import ConfigError
from agent_cli_proxy.providers.custom_config import registry_view
from agent_cli_proxy.web.errors import json_response
from agent_cli_proxy.web.services import ProxyServices


def providers(services: ProxyServices, request: Request) -> Response:
    return json_response(registry_view(services.settings.cli_proxy_api_url,
                                       services.providers.current))


def reload(services: ProxyServices, request: Request) -> Response:
    try:
        loaded = services.providers.reload()
    except ConfigError as exc:
        issues = [{"name": i.name, "message": i.message} for i in exc.issues]
        return json_response({
            "ok": False,
            "error": {"type": "proxy_error", "code": "invalid_providers",
                      "message": "the configuration is invalid; the providers in force "
                                 "are kept"},
            "issues": issues}, status=400)
    return json_response({"ok": True, **registry_view(services.settings.cli_proxy_api_url,
                                                      loaded),
                          "warnings": list(loaded.warnings)})

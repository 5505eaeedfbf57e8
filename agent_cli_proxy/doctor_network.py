"""``doctor``'s checks that ask another process: the upstream, CLIProxyAPI's management
API, and a proxy already running on ``PROXY_HOST:PROXY_PORT``.

Each sends at most what it says, once, with a short timeout and no retries. The management
check in particular makes exactly one attempt: CLIProxyAPI bans an address for 30 minutes
after 5 failed key checks, and a diagnostic must not be what locks the proxy out.
"""

from __future__ import annotations

import json
from typing import Any

from agent_cli_proxy.config_values import display_url
from agent_cli_proxy.doctor import Check, Context
from agent_cli_proxy.upstream.client import Timeouts, UpstreamClient, UpstreamError
from agent_cli_proxy.upstream.health import probe_upstream

MANAGEMENT_ROUTE = "/v0/management/auth-files"
MAX_BODY_BYTES = 4 * 1024 * 1024  # an auth-files list is small; bound what we read
_REFUSALS = {
    401: "CLIPROXY_MGMT_KEY was rejected (401): it is not CLIProxyAPI's "
         "remote-management secret-key; after 5 failures CLIProxyAPI bans this address for "
         "30 minutes, so fix the key before starting the proxy",
    403: "management access refused (403): remote management is off for this address "
         "(remote-management.allow-remote) or the address is banned after failed keys",
    404: "no management API (404): CLIProxyAPI has no remote-management.secret-key set, "
         "so account attribution cannot work",
}


def _client() -> UpstreamClient:
    return UpstreamClient(maxsize=1, num_pools=2)


def _url_invalid(ctx: Context) -> bool:
    return any(i.name == "CLI_PROXY_API_URL" for i in ctx.issues)


def check_upstream(ctx: Context) -> Check:
    url = ctx.settings.cli_proxy_api_url
    details: dict[str, Any] = {"url": display_url(url), "timeoutS": ctx.timeout_s}
    if _url_invalid(ctx):
        return Check("upstream", "warn", "not checked: CLI_PROXY_API_URL is not valid (see "
                     "config)", details)
    client = _client()
    try:
        probe = probe_upstream(client, url, ctx.timeout_s)
    finally:
        client.close()
    details.update(httpStatus=probe.status, path=probe.path, elapsedMs=probe.elapsed_ms)
    if probe.ok:
        return Check("upstream", "pass", f"{display_url(url)}{probe.path} answered "
                     f"{probe.status}", details)
    return Check("upstream", "fail", f"{display_url(url)} is not healthy: {probe.output}",
                 details)


def check_cliproxy_management(ctx: Context) -> Check:
    key = ctx.settings.cliproxy_mgmt_key
    url = ctx.settings.cli_proxy_api_url.rstrip("/") + MANAGEMENT_ROUTE
    details: dict[str, Any] = {"configured": bool(key), "url": display_url(url)}
    if not key:
        return Check("cliproxy_management", "pass", "not configured (CLIPROXY_MGMT_KEY is "
                     "unset): calls are not attributed to CLIProxyAPI accounts", details)
    if _url_invalid(ctx):
        return Check("cliproxy_management", "warn", "not checked: CLI_PROXY_API_URL is not "
                     "valid (see config)", details)
    client = _client()
    try:
        response = client.send(
            "GET", url, [("Accept", "application/json"), ("Authorization", f"Bearer {key}"),
                         ("X-Management-Key", key)],
            None, Timeouts(connect=ctx.timeout_s, read=ctx.timeout_s))
        try:
            status, body = response.status, response.read(MAX_BODY_BYTES)
        finally:
            response.close()
    except UpstreamError as exc:
        return Check("cliproxy_management", "fail", f"{display_url(url)} unreachable: "
                     f"{exc.message}", details)
    except Exception as exc:  # a body cut off mid-way, and the like
        return Check("cliproxy_management", "fail", f"{display_url(url)} answer broke off: "
                     f"{exc}", details)
    finally:
        client.close()
    details["httpStatus"] = status
    document = _json(body)
    if status in _REFUSALS:
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            details["error"] = document["error"][:200]
        return Check("cliproxy_management", "fail", _REFUSALS[status], details)
    if status != 200 or not isinstance(document, dict) or not isinstance(
            document.get("files"), list):
        return Check("cliproxy_management", "fail", f"{display_url(url)} answered HTTP "
                     f"{status} without an auth-files list", details)
    details["authFiles"] = len(document["files"])
    return Check("cliproxy_management", "pass", f"management key accepted; "
                 f"{len(document['files'])} auth file(s)", details)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def ready_url(host: str, port: int) -> str:
    """Where this configuration's proxy answers; a wildcard address is asked on loopback."""
    host = host.strip()
    if host in ("", "0.0.0.0", "*"):  # noqa: S104 - a listening address, not a bind
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/ready"


def check_service(ctx: Context) -> Check:
    """A proxy running with this configuration: its ``/ready``. None running is only a
    warning (doctor is often run before the first start)."""
    url = ready_url(ctx.settings.proxy_host, ctx.settings.proxy_port)
    details: dict[str, Any] = {"url": url}
    client = _client()
    try:
        response = client.send("GET", url, [("Accept", "application/json")], None,
                               Timeouts(connect=ctx.timeout_s, read=ctx.timeout_s))
        try:
            status, body = response.status, response.read(MAX_BODY_BYTES)
        finally:
            response.close()
    except UpstreamError as exc:
        # The client words its errors for the upstream; here the peer is the proxy.
        reason = exc.message.removeprefix("upstream ")
        details["error"] = reason
        return Check("service", "warn", f"no proxy answers at {url} (not running?): "
                     f"{reason}", details)
    except Exception as exc:
        return Check("service", "fail", f"{url}: answer broke off: {exc}", details)
    finally:
        client.close()
    document = _json(body)
    details["httpStatus"] = status
    if not isinstance(document, dict) or document.get("status") not in ("pass", "warn",
                                                                        "fail"):
        return Check("service", "fail", f"something other than agent-cli-proxy answers at "
                     f"{url} (HTTP {status})", details)
    details["ready"] = document
    checks = document.get("checks")
    bad = sorted(name for name, c in (checks if isinstance(checks, dict) else {}).items()
                 if isinstance(c, dict) and c.get("status") != "pass")
    if document["status"] == "fail":
        return Check("service", "fail", f"the running proxy is not ready (HTTP {status}): "
                     f"{', '.join(bad)} failing", details)
    if document["status"] == "warn":
        return Check("service", "warn", f"the running proxy is ready, degraded: "
                     f"{', '.join(bad)}", details)
    return Check("service", "pass", f"a proxy is running and ready at {url}", details)

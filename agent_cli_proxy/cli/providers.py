"""``agent-cli-proxy providers``: show, locate, create and reload the custom providers.

``show`` and ``path`` read the configuration as the server would; ``init`` writes a
starter document (never over an existing file without ``--force``); ``reload`` asks the
running server to re-read its configuration (``POST /admin/providers/reload``), which is
what SIGHUP does too. Nothing here ever prints a credential.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:  # imports wait until a command runs: --help stays light
    from agent_cli_proxy.config import ConfigIssue, Settings

# The original's starter document: a local Ollama and Zhipu's GLM (spec §10).
EXAMPLE: dict[str, Any] = {"providers": [
    {"id": "local", "type": "openai-compatible", "paths": ["/v1/chat/completions"],
     "upstreamBaseUrl": "http://localhost:11434", "models": ["llama", "qwen"],
     "auth": "none"},
    {"id": "glm", "type": "openai-compatible", "paths": ["/v1/chat/completions"],
     "upstreamBaseUrl": "https://open.bigmodel.cn/api/paas/v4",
     "upstreamPath": "/chat/completions", "models": ["glm"],
     "auth": {"type": "bearer", "env": "GLM_API_KEY"}},
]}
NO_PROVIDERS = "(no custom providers configured)"
INLINE = "PROVIDERS_JSON inline"


def command() -> click.Group:
    """Build the ``providers`` group; ``cli.main`` registers it."""
    from agent_cli_proxy.cli.main import ENV_FILE_OPTION

    @click.group("providers")
    def providers() -> None:
        """Custom providers: upstreams other than CLI_PROXY_API_URL for chosen paths,
        models or clients (PROVIDERS_JSON, PROVIDERS_CONFIG_PATH)."""

    @providers.command("show")
    @ENV_FILE_OPTION
    @click.option("--json", "as_json", is_flag=True,
                  help="Print what GET /admin/providers answers.")
    def show(env_file: str | None, as_json: bool) -> None:
        """Print where each path is forwarded: the default upstream, then every custom
        provider (credentials never shown)."""
        from agent_cli_proxy.cli.main import load_or_exit
        from agent_cli_proxy.config import ConfigError, load_providers
        from agent_cli_proxy.providers.custom_config import registry_view

        settings = load_or_exit(env_file)
        try:
            loaded = load_providers(settings)
        except ConfigError as exc:  # the file changed since the settings were read
            _config_failed(exc.issues)
        for warning in loaded.warnings:
            click.echo(f"agent-cli-proxy: {warning}", err=True)
        view = registry_view(settings.cli_proxy_api_url, loaded)
        click.echo(json.dumps(view, ensure_ascii=False) if as_json else table(view))

    @providers.command("path")
    @ENV_FILE_OPTION
    def path(env_file: str | None) -> None:
        """Print the custom-provider file in use, "PROVIDERS_JSON inline", or that none
        is configured (also when the configuration is invalid: it finds the file to fix)."""
        settings, problems = _settings(env_file)
        if problems:
            click.echo("agent-cli-proxy: note: the configuration has problems; run "
                       "'agent-cli-proxy providers show' to see them", err=True)
        if settings.providers_json:
            click.echo(INLINE)
        elif settings.providers_config_path:
            click.echo(settings.providers_config_path)
        else:
            click.echo(NO_PROVIDERS)

    @providers.command("init")
    @ENV_FILE_OPTION
    @click.option("--path", "target", type=click.Path(dir_okay=False), default=None,
                  help="Write here instead of PROVIDERS_CONFIG_PATH (default: "
                  "~/.config/agent-cli-proxy/providers.json).")
    @click.option("--force", is_flag=True, help="Overwrite an existing file.")
    def init(env_file: str | None, target: str | None, force: bool) -> None:
        """Write a starter providers file (a local Ollama and GLM) to edit."""
        from agent_cli_proxy.config import default_providers_path

        settings, problems = _settings(env_file)
        configured = settings.providers_config_path
        target = target or configured or default_providers_path()
        if not target:
            _fail("no home directory to put providers.json in; pass --path")
        if os.path.exists(target) and not force:
            _fail(f"{target} exists; pass --force to overwrite it")
        from agent_cli_proxy.config import make_private_dirs
        from agent_cli_proxy.setup_config import write_file_atomically

        try:
            # 0600 in 0700 directories: the file is where provider keys (auth.value) go.
            make_private_dirs(os.path.dirname(os.path.abspath(target)))
            write_file_atomically(os.path.abspath(target), json.dumps(EXAMPLE, indent=2) + "\n",
                                  0o600)
        except OSError as exc:
            _fail(f"cannot write {target}: {exc.strerror or exc}")
        click.echo(f"Created providers config: {target}")
        if not configured or os.path.abspath(target) != os.path.abspath(configured):
            click.echo(f"agent-cli-proxy: set PROVIDERS_CONFIG_PATH={target} in the env file "
                       "to use it", err=True)
        if settings.providers_json:
            click.echo("agent-cli-proxy: PROVIDERS_JSON is set and wins over the file",
                       err=True)
        if problems:
            click.echo("agent-cli-proxy: note: the configuration has problems now; "
                       "run 'agent-cli-proxy providers show' to see them", err=True)

    @providers.command("reload")
    @ENV_FILE_OPTION
    def reload(env_file: str | None) -> None:
        """Make the running server re-read its custom providers (as SIGHUP does)."""
        from agent_cli_proxy.cli.main import load_or_exit

        settings = load_or_exit(env_file)
        status, body = _post_reload(settings)
        if status == 200 and isinstance(body, dict):
            ids = [p["id"] for p in body.get("providers", []) if not p.get("builtin")]
            click.echo(f"Reloaded providers: {len(ids)}" + (f" ({', '.join(ids)})"
                                                           if ids else ""))
            for warning in body.get("warnings", []):
                click.echo(f"agent-cli-proxy: {warning}", err=True)
            return
        if status == 400 and isinstance(body, dict) and "issues" in body:
            click.echo("agent-cli-proxy: the server kept its providers; its configuration "
                       "is invalid:", err=True)
            for issue in body["issues"]:
                click.echo(f"  {issue.get('name')}: {issue.get('message')}", err=True)
            sys.exit(_exit_config())
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        hint = {401: " (set ADMIN_API_KEY as the server has it)",
                403: " (the admin API answers only on the server's machine; send SIGHUP "
                     "instead: agent-cli-proxy service reload)"}.get(status, "")
        _fail(f"reload refused: HTTP {status}: {message or body!r}{hint}")

    return providers


def _exit_config() -> int:
    from agent_cli_proxy.cli.main import EXIT_CONFIG

    return EXIT_CONFIG


def _fail(message: str) -> NoReturn:
    click.echo(f"agent-cli-proxy: {message}", err=True)
    sys.exit(1)


def _config_failed(issues: list[ConfigIssue]) -> NoReturn:
    click.echo("agent-cli-proxy: invalid configuration:", err=True)
    for issue in issues:
        click.echo(f"  {issue.name}: {issue.message}", err=True)
    sys.exit(_exit_config())


def _settings(env_file: str | None) -> tuple[Settings, list[ConfigIssue]]:
    """The settings, invalid values replaced by defaults, and every problem: for the
    commands that must work while the configuration is being fixed."""
    from agent_cli_proxy.config import inspect_settings

    return inspect_settings(env_file=env_file)


def _local_host(host: str) -> str:
    """Where to reach a server listening on *host* from this machine."""
    host = host.strip().removeprefix("[").removesuffix("]")
    # A wildcard address is not one to connect to: its loopback counterpart answers.
    wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104
    return wildcard.get(host, host)


def _post_reload(settings: Settings) -> tuple[int, Any]:
    host = _local_host(settings.proxy_host)
    where = f"{host}:{settings.proxy_port}"
    headers = {"Content-Length": "0"}
    if settings.admin_api_key:
        headers["x-admin-token"] = settings.admin_api_key
    conn = http.client.HTTPConnection(host, settings.proxy_port, timeout=30)
    try:
        conn.request("POST", "/admin/providers/reload", headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except OSError as exc:
        _fail(f"no proxy answers on {where} (PROXY_HOST:PROXY_PORT); is the service "
              f"running? ({exc.strerror or exc})")
    except http.client.HTTPException as exc:
        _fail(f"{where} did not answer like agent-cli-proxy: {exc!r}")
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw[:200].decode("utf-8", "replace")


def _auth_text(auth: dict[str, Any]) -> str:
    parts = [str(auth["type"])]
    if "env" in auth:
        parts.append(f"${auth['env']}" + ("" if auth.get("envSet", True) else " (unset)"))
    if "value" in auth:
        parts.append(str(auth["value"]))
    if "header" in auth:
        parts.append(f"in {auth['header']}")
    return " ".join(parts)


def table(view: dict[str, Any]) -> str:
    """The providers as aligned columns, for people (``--json`` is for programs)."""
    header = ("ID", "TYPE", "PATHS", "MODELS", "AUTH", "UPSTREAM")
    rows = [header] + [
        (p["id"], p["type"], ",".join(p["paths"]), ",".join(p.get("models") or ["*"]),
         _auth_text(p["auth"]), p["upstreamBaseUrl"] + (p.get("upstreamPath") or ""))
        for p in view["providers"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)

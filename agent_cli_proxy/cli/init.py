"""``agent-cli-proxy init``: write an env file, by questions or from flags.

Secrets never come from the command line (other users can read it in ``ps``): the
``--*-env NAME`` options name an environment variable holding the secret, and the
questions read secrets without echo. Nothing is printed that could be a secret.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import click

DEFAULT_UPSTREAM = "http://localhost:8317"
DEFAULT_AUTH_DIR = "~/.cli-proxy-api"
# Which option names the environment variable for which secret.
SECRET_OPTIONS = (("cli_proxy_api_key_env", "--cliproxy-api-key-env", "CLI_PROXY_API_KEY"),
                  ("admin_token_env", "--admin-token-env", "ADMIN_API_KEY"),
                  ("mgmt_key_env", "--cliproxy-mgmt-key-env", "CLIPROXY_MGMT_KEY"))


def command() -> click.Command:
    """Build the ``init`` command; ``cli.main`` registers it."""

    @click.command("init")
    @click.option("--env-file", type=click.Path(dir_okay=False), default=None,
                  help="The env file to write. Default: ~/.config/agent-cli-proxy/.env "
                  "($XDG_CONFIG_HOME/agent-cli-proxy/.env).")
    @click.option("--non-interactive", is_flag=True,
                  help="Ask nothing: write only what the options give.")
    @click.option("--force", is_flag=True, help="Replace an existing env file.")
    @click.option("--merge", is_flag=True,
                  help="Keep an existing env file's values and lines; set only the values "
                  "given (or answered).")
    @click.option("--host", default=None, help="PROXY_HOST, the address to listen on.")
    @click.option("--port", type=click.IntRange(1, 65535), default=None,
                  help="PROXY_PORT, the port to listen on.")
    @click.option("--cliproxy-api-url", "upstream_url", default=None, metavar="URL",
                  help="CLI_PROXY_API_URL, the upstream (required for a new file with "
                  "--non-interactive).")
    @click.option("--cliproxy-api-key-env", "cli_proxy_api_key_env", metavar="NAME",
                  default=None, help="Take CLI_PROXY_API_KEY from environment variable NAME.")
    @click.option("--admin-token-env", "admin_token_env", metavar="NAME", default=None,
                  help="Take ADMIN_API_KEY from environment variable NAME.")
    @click.option("--generate-admin-token", is_flag=True,
                  help="Set ADMIN_API_KEY to a new random token (done anyway when --host is "
                  "not loopback and no admin token is given or kept).")
    @click.option("--cliproxy-mgmt-key-env", "mgmt_key_env", metavar="NAME", default=None,
                  help="Take CLIPROXY_MGMT_KEY, CLIProxyAPI's management key, from "
                  "environment variable NAME.")
    @click.option("--cliproxy-auth-dir", "auth_dir", metavar="DIR", default=None,
                  help="CLIPROXY_AUTH_DIR, CLIProxyAPI's auth-file directory (quota probes).")
    @click.option("--data-dir", metavar="DIR", default=None,
                  help="AGENT_CLI_PROXY_DATA_DIR, where the database and price cache go.")
    def init(env_file: str | None, non_interactive: bool, force: bool, merge: bool,
             **options: Any) -> None:
        """Write an env file with the proxy's settings (asks unless --non-interactive)."""
        run(env_file, non_interactive=non_interactive, force=force, merge=merge, **options)

    return init


def run(env_file: str | None, *, non_interactive: bool, force: bool, merge: bool,
        **options: Any) -> None:
    from agent_cli_proxy import config
    from agent_cli_proxy.envfile import UnreadableFile, read_env_file, read_text

    if force and merge:
        raise click.UsageError("--force and --merge exclude each other")
    path = env_file or config.user_env_file()
    if path is None:
        raise click.UsageError("no home directory to put the env file in; give --env-file")
    path = os.path.abspath(os.path.expanduser(path))
    existing_text: str | None = None
    existing: dict[str, str] = {}
    if os.path.lexists(path):
        if not (force or merge):
            _fail(f"{path} already exists; use --force to overwrite it, or --merge to keep "
                  "its values and change only those given")
        try:
            existing_text = read_text(path)
            existing = read_env_file(path)[0] if merge else {}
        except UnreadableFile as exc:
            _fail(f"cannot read {path}: {exc}")
    values = _given_values(options)
    if non_interactive:
        _complete_non_interactive(values, existing, options)
    else:
        _ask(values, existing, options)
    _write(path, values, existing_text, merge)


def _given_values(options: Mapping[str, Any]) -> dict[str, str]:
    """The variables the options set, secrets read from the variables they name."""
    values: dict[str, str] = {}
    for option, variable in (("host", "PROXY_HOST"), ("port", "PROXY_PORT"),
                             ("upstream_url", "CLI_PROXY_API_URL"),
                             ("auth_dir", "CLIPROXY_AUTH_DIR"),
                             ("data_dir", "AGENT_CLI_PROXY_DATA_DIR")):
        if options.get(option) is not None:
            values[variable] = str(options[option])
    for option, flag, variable in SECRET_OPTIONS:
        name = options.get(option)
        if name is None:
            continue
        secret = os.environ.get(name, "")
        if not secret:
            raise click.UsageError(f"{flag} names {name}, which is not set or empty")
        values[variable] = secret
    if options.get("generate_admin_token"):
        if "ADMIN_API_KEY" in values:
            raise click.UsageError("--generate-admin-token and --admin-token-env exclude "
                                   "each other")
        from agent_cli_proxy.setup_config import generate_secret

        values["ADMIN_API_KEY"] = generate_secret()
    return values


def _complete_non_interactive(values: dict[str, str], existing: Mapping[str, str],
                              options: Mapping[str, Any]) -> None:
    if "CLI_PROXY_API_URL" not in values and "CLI_PROXY_API_URL" not in existing:
        raise click.UsageError("--cliproxy-api-url is required with --non-interactive "
                               "(unless --merge keeps the file's CLI_PROXY_API_URL)")
    _admin_token_off_loopback(values, existing)


def _admin_token_off_loopback(values: dict[str, str], existing: Mapping[str, str]) -> None:
    """Off loopback the admin API must not rest on the address check alone."""
    from agent_cli_proxy.config_values import is_loopback
    from agent_cli_proxy.setup_config import generate_secret

    host = values.get("PROXY_HOST", existing.get("PROXY_HOST", "127.0.0.1")).strip()
    if not is_loopback(host) and not (values.get("ADMIN_API_KEY")
                                      or existing.get("ADMIN_API_KEY")):
        values["ADMIN_API_KEY"] = generate_secret()
        click.echo(f"agent-cli-proxy: PROXY_HOST {host} is not loopback: generated an "
                   "ADMIN_API_KEY", err=True)


def _ask(values: dict[str, str], existing: Mapping[str, str],
         options: Mapping[str, Any]) -> None:
    """The questions, each defaulting to the option given, else the file's value, else the
    built-in default; a question whose answer an option gave is not asked."""

    def current(variable: str, default: str) -> str:
        return values.get(variable) or existing.get(variable) or default

    for variable, question, default in (
            ("PROXY_HOST", "Address to listen on (PROXY_HOST)", "127.0.0.1"),
            ("PROXY_PORT", "Port to listen on (PROXY_PORT)", "3100"),
            ("CLI_PROXY_API_URL", "Upstream URL, CLIProxyAPI or compatible "
                                  "(CLI_PROXY_API_URL)", DEFAULT_UPSTREAM)):
        if options.get(_option_of(variable)) is None:
            values[variable] = click.prompt(question, default=current(variable, default))
    if options.get("cli_proxy_api_key_env") is None:
        kept = existing.get("CLI_PROXY_API_KEY")
        answer = click.prompt(
            "Key the proxy sends upstream (CLI_PROXY_API_KEY; empty: "
            + ("keep the current one)" if kept else "'proxy', CLIProxyAPI's sample key)"),
            default="", show_default=False, hide_input=True)
        if answer:
            values["CLI_PROXY_API_KEY"] = answer
        elif not kept:
            values["CLI_PROXY_API_KEY"] = "proxy"
    if "ADMIN_API_KEY" not in values and not existing.get("ADMIN_API_KEY"):
        from agent_cli_proxy.config_values import is_loopback
        from agent_cli_proxy.setup_config import generate_secret

        if not is_loopback(values["PROXY_HOST"].strip()):
            _admin_token_off_loopback(values, existing)
        elif click.confirm("Generate an ADMIN_API_KEY for the admin API and /metrics?",
                           default=False):
            values["ADMIN_API_KEY"] = generate_secret()
    if options.get("mgmt_key_env") is None and click.confirm(
            "Attribute calls to CLIProxyAPI accounts (needs its management key)?",
            default=bool(existing.get("CLIPROXY_MGMT_KEY"))):
        answer = click.prompt("CLIProxyAPI management key (CLIPROXY_MGMT_KEY; empty: keep)",
                              default="", show_default=False, hide_input=True)
        if answer:
            values["CLIPROXY_MGMT_KEY"] = answer
        elif not existing.get("CLIPROXY_MGMT_KEY"):
            _fail("a management key is needed for account attribution")
    if options.get("auth_dir") is None and click.confirm(
            "Probe subscription quotas from CLIProxyAPI's auth files?",
            default=bool(existing.get("CLIPROXY_AUTH_DIR"))):
        answer = click.prompt("CLIProxyAPI auth directory (CLIPROXY_AUTH_DIR)",
                              default=current("CLIPROXY_AUTH_DIR", DEFAULT_AUTH_DIR))
        values["CLIPROXY_AUTH_DIR"] = os.path.expanduser(answer)


def _option_of(variable: str) -> str:
    return {"PROXY_HOST": "host", "PROXY_PORT": "port",
            "CLI_PROXY_API_URL": "upstream_url"}[variable]


def _write(path: str, values: dict[str, str], existing_text: str | None, merge: bool) -> None:
    from agent_cli_proxy.cli.main import EXIT_CONFIG
    from agent_cli_proxy.config import FIELDS, ConfigError
    from agent_cli_proxy.setup_config import SetupError, save

    try:
        written = save(path, values, existing=existing_text, merge=merge)
    except ConfigError as exc:
        click.echo(f"agent-cli-proxy: not written: {path} would be an invalid configuration:",
                   err=True)
        for issue in exc.issues:
            click.echo(f"  {issue.name}: {issue.message}", err=True)
        sys.exit(EXIT_CONFIG)
    except SetupError as exc:
        _fail(str(exc))
    secret = {f.name for f in FIELDS if f.secret}
    shown = [f"{n} (secret)" if n in secret else n for n in written.changed]
    click.echo(f"wrote {written.path} (mode {written.mode:04o})")
    if shown:
        click.echo(f"  set: {', '.join(shown)}")
    for warning in written.warnings:
        click.echo(f"agent-cli-proxy: warning: {warning}", err=True)
    named = "" if path == _default_path() else f" --env-file {path}"
    click.echo("next: agent-cli-proxy doctor" + named)
    click.echo("      agent-cli-proxy service install" + named + "   (or: agent-cli-proxy serve"
               + named + ")")


def _default_path() -> str | None:
    from agent_cli_proxy.config import user_env_file

    found = user_env_file()
    return os.path.abspath(found) if found else None


def _fail(message: str) -> NoReturn:
    click.echo(f"agent-cli-proxy: {message}", err=True)
    sys.exit(1)

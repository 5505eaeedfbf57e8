"""The ``agent-cli-proxy`` command group; each command is a thin call into the library."""

from __future__ import annotations

import sys

import click

from agent_cli_proxy import __version__
from agent_cli_proxy.cli import api_keys, backfill, db, doctor, init, paths, providers, service
from agent_cli_proxy.config import ConfigError, Settings, load_settings

# EX_CONFIG from sysexits.h: a service manager can tell "fix the configuration" apart
# from a crash (systemd: RestartPreventExitStatus=78).
EXIT_CONFIG = 78

ENV_FILE_OPTION = click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read settings from this env file instead of the default search "
    "($AGENT_CLI_PROXY_ENV, ~/.config/agent-cli-proxy/.env, "
    "/etc/agent-cli-proxy/agent-cli-proxy.env). The process environment still wins.",
)


def load_or_exit(env_file: str | None) -> Settings:
    """Settings, or every configuration problem on stderr and exit status 78."""
    try:
        return load_settings(env_file=env_file)
    except ConfigError as exc:
        click.echo("agent-cli-proxy: invalid configuration:", err=True)
        for issue in exc.issues:
            click.echo(f"  {issue.name}: {issue.message}", err=True)
        sys.exit(EXIT_CONFIG)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="agent-cli-proxy")
def cli() -> None:
    """Usage and cost proxy for AI coding tools.

    Point Claude Code, Codex CLI, Gemini CLI, OpenCode or any OpenAI/Anthropic SDK at
    this proxy; it forwards every call to CLI_PROXY_API_URL unchanged and records which
    tool and session made it, the tokens it used and how it ended.
    """


@cli.command()
@ENV_FILE_OPTION
def serve(env_file: str | None) -> None:
    """Run the proxy in the foreground until SIGTERM or SIGINT."""
    from agent_cli_proxy import log
    from agent_cli_proxy.server import serve as run_server

    settings = load_or_exit(env_file)
    log.configure(settings.log_level, settings.log_format)
    try:
        code = run_server(settings)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(f"agent-cli-proxy: {issue.name}: {issue.message}", err=True)
        sys.exit(EXIT_CONFIG)
    except OSError as exc:
        # The usual cause: the port is taken or the DB directory is not writable.
        click.echo(f"agent-cli-proxy: cannot start: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


cli.add_command(backfill.command())
cli.add_command(api_keys.command())
cli.add_command(providers.command())
cli.add_command(init.command())
cli.add_command(db.command())
cli.add_command(paths.command())
cli.add_command(doctor.command())
cli.add_command(service.command())


def main() -> None:
    cli(prog_name="agent-cli-proxy")

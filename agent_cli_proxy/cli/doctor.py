"""``agent-cli-proxy doctor``: check the installation, for people or as JSON."""

from __future__ import annotations

import sys

import click


def command() -> click.Command:
    """Build the ``doctor`` command; ``cli.main`` registers it."""
    from agent_cli_proxy.cli.main import ENV_FILE_OPTION

    @click.command("doctor")
    @ENV_FILE_OPTION
    @click.option("--json", "as_json", is_flag=True,
                  help="Print the report as JSON (a stable schema, for bug reports).")
    @click.option("--timeout", type=click.FloatRange(0.1, 60.0), default=2.0,
                  show_default=True, help="Seconds each network check may take.")
    def doctor(env_file: str | None, as_json: bool, timeout: float) -> None:
        """Check configuration, files, database, prices, upstream and a running proxy.

        Changes nothing. Exit status 0 when no check fails (warnings allowed), else 1.
        """
        from agent_cli_proxy import doctor as checks
        from agent_cli_proxy import log

        # Library warnings would interleave with the report; the report says it all.
        log.configure("error", "json")
        report = checks.run(env_file, timeout_s=timeout)
        click.echo(checks.to_json(report) if as_json else checks.render_text(report))
        sys.exit(1 if checks.failed(report) else 0)

    return doctor

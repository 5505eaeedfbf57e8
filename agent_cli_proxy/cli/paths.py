"""``agent-cli-proxy paths``: where the env file, database, caches and units are."""

from __future__ import annotations

import json

import click


def command() -> click.Command:
    """Build the ``paths`` command; ``cli.main`` registers it."""
    from agent_cli_proxy.cli.main import ENV_FILE_OPTION

    @click.command("paths")
    @ENV_FILE_OPTION
    @click.option("--json", "as_json", is_flag=True, help="Print the paths as one JSON object.")
    def paths(env_file: str | None, as_json: bool) -> None:
        """Print the env file in use and every file and directory the proxy uses."""
        from agent_cli_proxy import paths as where

        found, issues = where.resolve(env_file)
        if as_json:
            click.echo(json.dumps(found.as_dict(), indent=2))
        else:
            click.echo(where.text(found))
        if issues:
            # The paths are still right (invalid values fall back to their defaults).
            click.echo(f"agent-cli-proxy: the configuration has {len(issues)} problem(s); "
                       "see 'agent-cli-proxy doctor'", err=True)

    return paths

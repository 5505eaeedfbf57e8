"""Every command and subcommand answers ``--help`` (exit 0, its own usage line)."""

from __future__ import annotations

import click
import pytest

from agent_cli_proxy.cli.main import cli
from tests.cli.cli_helpers import invoke


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _paths(command, (*prefix, name))
    return found


@pytest.mark.parametrize("path", _paths(cli), ids=" ".join)
def test_help(path: tuple[str, ...]) -> None:
    result = invoke([*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: agent-cli-proxy {' '.join(path)}")

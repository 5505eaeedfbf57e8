"""Docs drift is a test failure: every CLI command and option appears in the man page."""

from __future__ import annotations

from pathlib import Path

import click

from agent_cli_proxy.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
MAN1 = (ROOT / "man" / "agent-cli-proxy.1").read_text()


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, prefix + name + " "))
    return found


def _roff_text(flag: str) -> str:
    return flag.replace("-", r"\-")


def test_every_command_is_in_the_man_page() -> None:
    for name, _ in _commands(cli):
        assert f".B {name}" in MAN1 or f"agent-cli-proxy {name}" in MAN1, name


def test_every_option_is_in_the_man_page() -> None:
    for name, command in [("", cli), *_commands(cli)]:
        for param in command.params:
            for flag in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                assert _roff_text(flag) in MAN1, f"{name or 'agent-cli-proxy'} {flag}"


def test_readme_names_the_env_man_page() -> None:
    assert "man/agent-cli-proxy.env.5" in (ROOT / "README.md").read_text()

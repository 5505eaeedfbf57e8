"""Running ``agent-cli-proxy`` in-process with click's CliRunner, in a private home.

Commands call ``log.configure``, which binds the package's loggers to the runner's
captured streams; :func:`invoke` puts the loggers back afterwards so later tests do not
write to a closed stream.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent_cli_proxy import config
from agent_cli_proxy.cli.main import cli

_LOGGERS = ("agent_cli_proxy", "waitress")


@dataclass(frozen=True)
class Outcome:
    """What a command did: its exit code, stdout, stderr, and ``output`` (both, as the
    terminal shows them)."""

    exit_code: int
    stdout: str
    stderr: str
    output: str


def invoke(args: Sequence[str], input: str | None = None) -> Outcome:
    saved = [(logging.getLogger(n), logging.getLogger(n).handlers[:],
              logging.getLogger(n).level, logging.getLogger(n).propagate) for n in _LOGGERS]
    try:
        try:
            # click 8.1 (the floor) mixes stderr into stdout unless told not to; click 8.2+
            # always keeps them apart and no longer takes the option.
            runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg, unused-ignore]
        except TypeError:
            runner = CliRunner()
        result = runner.invoke(cli, list(args), input=input, prog_name="agent-cli-proxy",
                               catch_exceptions=False)
        both = result.output if result.output != result.stdout else (
            result.stdout + result.stderr)
        return Outcome(result.exit_code, result.stdout, result.stderr, both)
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own (no XDG overrides, no named env file) and a system env file that
    cannot exist, so nothing of this machine's configuration is read or written."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "AGENT_CLI_PROXY_ENV",
                 "CLI_PROXY_API_URL", "CLI_PROXY_API_KEY", "PROXY_LOCAL_OK", "DB_PATH",
                 "ADMIN_API_KEY", "CLIPROXY_MGMT_KEY", "PROXY_HOST", "PROXY_PORT",
                 "AGENT_CLI_PROXY_DATA_DIR", "PRICING_CACHE_PATH", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config, "SYSTEM_ENV_FILE", str(tmp_path / "etc" / "system.env"))
    return home


def user_env(home: Path) -> Path:
    return home / ".config" / "agent-cli-proxy" / ".env"


def tree(root: Path) -> set[str]:
    """Every path under *root* (to show a command created nothing)."""
    return {os.path.relpath(os.path.join(d, n), root)
            for d, dirs, files in os.walk(root) for n in [*dirs, *files]}

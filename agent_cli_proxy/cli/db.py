"""``agent-cli-proxy db``: create, migrate and check the database at ``DB_PATH``.

``init`` and ``migrate`` write (each migration in its own short transaction, safe beside a
running server); ``check`` only reads, through :mod:`agent_cli_proxy.storage.inspect`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:  # imports wait until a command runs: --help stays light
    from agent_cli_proxy.config import Settings
    from agent_cli_proxy.storage.inspect import DatabaseReport


def command() -> click.Group:
    """Build the ``db`` group; ``cli.main`` registers it."""
    from agent_cli_proxy.cli.main import ENV_FILE_OPTION

    @click.group("db")
    def db() -> None:
        """Create, migrate and check the database (DB_PATH)."""

    @db.command("init")
    @ENV_FILE_OPTION
    def init(env_file: str | None) -> None:
        """Create the database if needed and apply every migration."""
        settings = _settings(env_file)
        existed = os.path.exists(settings.db_path)
        applied = _migrate(settings)
        verb = "migrated" if existed else "created"
        click.echo(f"{verb} {settings.db_path}" + _applied_text(applied))

    @db.command("migrate")
    @ENV_FILE_OPTION
    def migrate(env_file: str | None) -> None:
        """Apply pending migrations to an existing database and name each one."""
        settings = _settings(env_file)
        if not os.path.exists(settings.db_path):
            _fail(f"no database at {settings.db_path} (DB_PATH); create it with "
                  "'agent-cli-proxy db init'")
        applied = _migrate(settings)
        click.echo(f"migrated {settings.db_path}" + _applied_text(applied))

    @db.command("check")
    @ENV_FILE_OPTION
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    def check(env_file: str | None, as_json: bool) -> None:
        """Report schema version, pending migrations and integrity, read-only."""
        from agent_cli_proxy.storage.inspect import inspect_database

        settings = _settings(env_file)
        report = inspect_database(settings.db_path)
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
        else:
            click.echo(report_text(report))
        sys.exit(0 if report.ok else 1)

    return db


def _settings(env_file: str | None) -> Settings:
    from agent_cli_proxy import log
    from agent_cli_proxy.cli.main import load_or_exit

    settings = load_or_exit(env_file)
    log.configure("warn", settings.log_format)  # stdout is for the command's output
    if settings.db_path == ":memory:":
        _fail("DB_PATH is :memory:; there is no database file to work on")
    return settings


def _migrate(settings: Settings) -> list[str]:
    from agent_cli_proxy.config import ConfigError, ensure_directories
    from agent_cli_proxy.storage import Database, DatabaseError, MigrationError
    from agent_cli_proxy.storage.migrations import migrate

    try:
        ensure_directories(settings)
        _create_private(settings.db_path)
        db = Database(settings.db_path)
    except ConfigError as exc:
        _fail("; ".join(f"{i.name}: {i.message}" for i in exc.issues))
    except (DatabaseError, OSError) as exc:
        _fail(f"cannot open database {settings.db_path}: {exc}")
    try:
        return migrate(db)
    except (DatabaseError, MigrationError) as exc:
        _fail(f"migration failed on {settings.db_path}: {exc}")
    finally:
        db.close()


def _create_private(path: str) -> None:
    """Create an empty database file readable by its owner only; SQLite gives its -wal and
    -shm files the same mode. (It would otherwise follow the umask, often 0644.)"""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _applied_text(applied: list[str]) -> str:
    if not applied:
        return ": schema already current, nothing applied"
    return ": applied " + ", ".join(applied)


def report_text(report: DatabaseReport) -> str:
    """The report for people."""
    from agent_cli_proxy.storage.migrations import MIGRATIONS

    if not report.exists:
        return f"{report.path}: no database (create it with 'agent-cli-proxy db init')"
    if report.error is not None:
        return f"{report.path}: cannot be read: {report.error}"
    lines = [f"database: {report.path}",
             f"schema version: {report.schema_version} of {len(MIGRATIONS)}"
             + (f" (latest {report.applied[-1]})" if report.applied else "")]
    lines.append("pending migrations: " + (", ".join(report.pending) or "none")
                 + (" (applied by 'agent-cli-proxy db migrate' or the next start)"
                    if report.pending else ""))
    if report.unknown:
        lines.append("migrations from a newer version: " + ", ".join(report.unknown))
    if report.original:
        lines.append(f"original's migrations recorded: {len(report.original)}")
    lines.append("integrity: " + ("ok" if report.integrity == ("ok",)
                                  else "FAILED\n  " + "\n  ".join(report.integrity)))
    return "\n".join(lines)


def _fail(message: str) -> NoReturn:
    click.echo(f"agent-cli-proxy: {message}", err=True)
    sys.exit(1)

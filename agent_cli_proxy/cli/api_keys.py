"""``agent-cli-proxy api-keys``: create, list, rotate and revoke managed proxy API keys.

They work on the database at ``DB_PATH`` directly (safe beside a running server: every
change is one short write transaction, and the server reads keys afresh on each call),
and refuse to create one when there is no database yet: a typo in ``DB_PATH`` would
otherwise put the key where the server never looks.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:  # imports wait until a command runs: --help stays light
    from agent_cli_proxy.storage import Database

# request_logs.provider labels (providers.routes.PROVIDER_LABELS; a test keeps them equal).
PROVIDER_CHOICES = ("anthropic", "gemini", "openai")


def command() -> click.Group:
    """Build the ``api-keys`` group; ``cli.main`` registers it."""
    from agent_cli_proxy.cli.main import ENV_FILE_OPTION

    @click.group("api-keys")
    def api_keys() -> None:
        """Manage the API keys clients present to the proxy (PROXY_REQUIRE_API_KEY)."""

    @api_keys.command("create")
    @ENV_FILE_OPTION
    @click.argument("name")
    @click.option("--provider", "providers", multiple=True,
                  type=click.Choice(PROVIDER_CHOICES, case_sensitive=False),
                  help="Allow only this provider (repeat for several). Default: all.")
    @click.option("--account", "accounts", multiple=True,
                  help="Allow only this CLIProxyAPI account (repeat for several). "
                  "Default: all.")
    @click.option("--json", "as_json", is_flag=True,
                  help="Print the new key's record, with the key, as JSON.")
    def create(env_file: str | None, name: str, providers: tuple[str, ...],
               accounts: tuple[str, ...], as_json: bool) -> None:
        """Create a key named NAME and print it (the only time it is shown)."""
        from agent_cli_proxy.storage import api_keys as store

        try:
            name = store.clean_name(name)
        except ValueError as exc:
            _fail(str(exc))
        if any(not a.strip() for a in accounts):
            _fail("--account must not be empty")
        with _database(env_file) as db:
            record, key = store.create_key(
                db, name,
                allowed_providers=list(dict.fromkeys(p.lower() for p in providers)) or None,
                allowed_accounts=list(dict.fromkeys(a.strip() for a in accounts)) or None,
                now_iso=_now_iso())
        if as_json:
            click.echo(json.dumps({**record, "key": key}, ensure_ascii=False))
        else:
            click.echo(f"id: {record['id']}")
            click.echo(f"key: {key}")
        click.echo("agent-cli-proxy: store the key now; it cannot be shown again.", err=True)

    @api_keys.command("list")
    @ENV_FILE_OPTION
    @click.option("--json", "as_json", is_flag=True,
                  help='Print {"apiKeys": [...]} as the admin API does.')
    def list_command(env_file: str | None, as_json: bool) -> None:
        """List every key (never the secrets), revoked ones included."""
        from agent_cli_proxy.storage import api_keys as store

        with _database(env_file) as db:
            records = store.list_keys(db)
        if as_json:
            click.echo(json.dumps({"apiKeys": records}, ensure_ascii=False))
        else:
            click.echo(table(records))

    @api_keys.command("rotate")
    @ENV_FILE_OPTION
    @click.argument("key_id", metavar="ID", type=click.IntRange(min=1))
    def rotate(env_file: str | None, key_id: int) -> None:
        """Give key ID a new secret and print it; the old one stops working at once."""
        from agent_cli_proxy.storage import api_keys as store

        with _database(env_file) as db:
            try:
                rotated = store.rotate_key(db, key_id, _now_iso())
            except store.KeyRevokedError:
                _fail(f"API key {key_id} is revoked; create a new one")
        if rotated is None:
            _fail(f"no API key with id {key_id}")
        record, key = rotated
        click.echo(f"id: {record['id']}")
        click.echo(f"key: {key}")
        click.echo("agent-cli-proxy: store the key now; it cannot be shown again.", err=True)

    @api_keys.command("revoke")
    @ENV_FILE_OPTION
    @click.argument("key_id", metavar="ID", type=click.IntRange(min=1))
    def revoke(env_file: str | None, key_id: int) -> None:
        """Revoke key ID: the proxy refuses it from the next request on."""
        from agent_cli_proxy.storage import api_keys as store

        with _database(env_file) as db:
            before = store.get_key(db, key_id)
            if before is None or not store.revoke_key(db, key_id, _now_iso()):
                _fail(f"no API key with id {key_id}")
        if before["revokedAt"] is not None:
            click.echo(f"API key {key_id} ({before['name']}) was already revoked at "
                       f"{before['revokedAt']}")
        else:
            click.echo(f"revoked API key {key_id} ({before['name']})")

    return api_keys


def _fail(message: str) -> NoReturn:
    click.echo(f"agent-cli-proxy: {message}", err=True)
    sys.exit(1)


def _now_iso() -> str:
    from agent_cli_proxy.storage import iso_utc

    return iso_utc(time.time())


@contextmanager
def _database(env_file: str | None) -> Iterator[Database]:
    """The migrated database at DB_PATH, closed afterwards; exit 1 if it is missing or
    cannot be opened, 78 if the configuration is invalid."""
    from agent_cli_proxy import log
    from agent_cli_proxy.cli.main import load_or_exit
    from agent_cli_proxy.storage import Database, DatabaseError, MigrationError

    settings = load_or_exit(env_file)
    log.configure("warn", settings.log_format)  # stdout is for the command's output
    if not os.path.exists(settings.db_path):
        _fail(f"no database at {settings.db_path} (DB_PATH); start the server once "
              "to create it")
    try:
        db = Database.open(settings.db_path)
    except (DatabaseError, MigrationError, OSError) as exc:
        _fail(f"cannot open database {settings.db_path}: {exc}")
    try:
        yield db
    except DatabaseError as exc:
        _fail(f"database error on {settings.db_path}: {exc}")
    finally:
        db.close()


def table(records: list[dict[str, Any]]) -> str:
    """Keys as aligned columns, for people (``--json`` is for programs)."""
    header = ("ID", "PREFIX", "NAME", "STATUS", "CREATED", "LAST USED", "REQUESTS",
              "PROVIDERS", "ACCOUNTS")
    rows = [header] + [
        (str(r["id"]), r["keyPrefix"], r["name"], "revoked" if r["revokedAt"] else "active",
         r["createdAt"] or "-", r["lastUsedAt"] or "-", str(r["requestCount"]),
         ",".join(r["allowedProviders"]) if r["allowedProviders"] is not None else "all",
         ",".join(r["allowedAccounts"]) if r["allowedAccounts"] is not None else "all")
        for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)

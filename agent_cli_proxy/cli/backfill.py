"""``agent-cli-proxy backfill-costs``: price recorded calls whose price was unknown.

Offline by design: the prices are those of the pricing cache file the server keeps
(``PRICING_CACHE_PATH``), else the built-in table, with ``PRICING_OVERRIDES_JSON`` and
``PRICING_ALIASES_JSON`` on top. It is safe to run beside a running server: every change
is re-checked against the row in the same transaction that writes it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the command's imports wait until it runs: --help stays light
    from agent_cli_proxy.storage.costs import BackfillReport


def command() -> click.Command:
    """Build the click command; ``cli.main`` registers it.

    Built on demand rather than at import: it uses ``cli.main``'s shared option and
    settings loader, and ``cli.main`` imports this module to register it.
    """
    from agent_cli_proxy.cli.main import ENV_FILE_OPTION

    @click.command("backfill-costs")
    @ENV_FILE_OPTION
    @click.option("--all", "all_rows", is_flag=True,
                  help="Ignore COST_BACKFILL_LOOKBACK_MS: look at the whole history.")
    @click.option("--recompute", is_flag=True,
                  help="Re-price rows already priced too (prices changed). A row whose "
                  "price is no longer known keeps its cost. Refused on built-in prices.")
    @click.option("--dry-run", is_flag=True,
                  help="Report what would change; write nothing.")
    def backfill_costs(env_file: str | None, all_rows: bool, recompute: bool,
                       dry_run: bool) -> None:
        """Price recorded calls whose cost is still pending, from the cached prices."""
        run(env_file, all_rows=all_rows, recompute=recompute, dry_run=dry_run)

    return backfill_costs


def run(env_file: str | None, *, all_rows: bool, recompute: bool, dry_run: bool) -> None:
    """The command's body: settings, database, prices, backfill, summary."""
    from agent_cli_proxy import log
    from agent_cli_proxy.cli.main import load_or_exit
    from agent_cli_proxy.storage import Database, DatabaseError, MigrationError
    from agent_cli_proxy.storage.costs import backfill_costs
    from agent_cli_proxy.storage.migrations import pending_migrations
    from agent_cli_proxy.usage.cost import CostResult, compute_cost
    from agent_cli_proxy.usage.model import Usage
    from agent_cli_proxy.workers.pricing import PricingService

    settings = load_or_exit(env_file)
    # Warnings only (on stderr): stdout is the summary a user or a script reads.
    log.configure("warn", settings.log_format)
    if not os.path.exists(settings.db_path):
        # Opening would create an empty database; there is nothing to price in one.
        click.echo(f"agent-cli-proxy: no database at {settings.db_path} (DB_PATH)", err=True)
        sys.exit(1)
    pricing = PricingService(settings)
    table = pricing.load()
    if pricing.source == "builtin":
        click.echo(f"agent-cli-proxy: no usable pricing cache at {settings.pricing_cache_path};"
                   " using the built-in prices", err=True)
        if recompute and not dry_run:
            # Re-pricing history from a small, dated table would replace good costs with
            # older numbers; that needs fetched prices (run the server once).
            click.echo("agent-cli-proxy: refusing --recompute on the built-in prices",
                       err=True)
            sys.exit(1)

    def price(model: str | None, api_provider: str | None, usage: Usage) -> CostResult:
        return compute_cost(table, model, api_provider, usage)

    try:
        # A dry run must not write, and migrating is writing.
        db = Database.open(settings.db_path, migrate=not dry_run)
        pending = pending_migrations(db.reader())
    except (DatabaseError, MigrationError, OSError) as exc:
        click.echo(f"agent-cli-proxy: cannot open database {settings.db_path}: {exc}",
                   err=True)
        sys.exit(1)
    if pending:
        db.close()
        click.echo(f"agent-cli-proxy: database {settings.db_path} needs migrations "
                   f"({', '.join(pending)}); run without --dry-run or start the server once",
                   err=True)
        sys.exit(1)
    try:
        report = backfill_costs(
            db, price, now_ms=round(time.time() * 1000),
            lookback_ms=None if all_rows else settings.cost_backfill_lookback_ms,
            chunk_size=settings.cost_backfill_chunk_size, dry_run=dry_run,
            recompute_all=recompute)
    except DatabaseError as exc:
        click.echo(f"agent-cli-proxy: backfill failed on {settings.db_path}: {exc}", err=True)
        sys.exit(1)
    finally:
        db.close()
    click.echo(summary(report, dry_run=dry_run))


def summary(report: BackfillReport, *, dry_run: bool) -> str:
    """The one line the command prints."""
    line = (f"backfill-costs: scanned={report.scanned} changed={report.changed} "
            f"ok={report.ok} pending={report.pending} unsupported={report.unsupported} "
            f"old_total=${report.old_total_usd:.6f} new_total=${report.new_total_usd:.6f}")
    if report.skipped:
        line += f" skipped={report.skipped}"
    return line + (" (dry run, nothing written)" if dry_run else "")

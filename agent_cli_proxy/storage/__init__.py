"""The only package that imports sqlite3: the database, its migrations and repositories.

Other packages use the names re-exported here. ``DatabaseError`` is sqlite3's base
exception under a storage name, so callers can catch storage failures without importing
sqlite3 themselves.
"""

from sqlite3 import Error as DatabaseError

from agent_cli_proxy.storage.daily_usage import daily_usage_mismatches, get_daily_usage
from agent_cli_proxy.storage.database import Database, DatabaseClosedError, open_database
from agent_cli_proxy.storage.migrations import applied_migrations, migrate, pending_migrations
from agent_cli_proxy.storage.reports import (
    account_usage_for_day,
    account_usage_range,
    accounts_summary,
    list_logs,
    normalize_log_row,
    providers_for_day,
    stats,
    usage_for_day,
    usage_range,
    usage_summary,
    usage_trend,
)
from agent_cli_proxy.storage.requests import (
    Finalization,
    PendingRow,
    finalize,
    get_request,
    insert_pending,
    iso_utc,
    list_requests,
    recover_stale_pending,
)
from agent_cli_proxy.storage.schema import MigrationError

__all__ = [
    "Database",
    "DatabaseClosedError",
    "DatabaseError",
    "Finalization",
    "MigrationError",
    "PendingRow",
    "account_usage_for_day",
    "account_usage_range",
    "accounts_summary",
    "applied_migrations",
    "daily_usage_mismatches",
    "finalize",
    "get_daily_usage",
    "get_request",
    "insert_pending",
    "iso_utc",
    "list_logs",
    "list_requests",
    "migrate",
    "normalize_log_row",
    "open_database",
    "pending_migrations",
    "providers_for_day",
    "recover_stale_pending",
    "stats",
    "usage_for_day",
    "usage_range",
    "usage_summary",
    "usage_trend",
]

"""The schema as data: every table's columns, in one place, shared by all migrations.

The column lists are the TypeScript original's final shape (its snapshot migrations
001-007 plus the newer 002_quota_local_usage_index and 008-013) followed by the columns
this implementation adds. A migration builds ``CREATE TABLE IF NOT EXISTS`` from a list
for a fresh file and adds whichever columns an existing file lacks, so a database from
any version of the original converges on the same columns without guessing from error
messages.

Nothing here is dropped or renamed: the original must still be able to read the file.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    """(name, declaration) in creation order."""
    constraints: tuple[str, ...] = ()
    """Table constraints (composite primary keys), only used when creating."""

    def create_sql(self) -> str:
        parts = [f"{name} {decl}" for name, decl in self.columns] + list(self.constraints)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  " + ",\n  ".join(parts) + "\n)"


MAX_ID = 2**63 - 1  # SQLite's largest integer: no row id can be beyond it
LIFECYCLE_STATUSES = ("pending", "completed", "error", "aborted")
COST_STATUSES = ("unresolved", "ok", "pending", "unsupported")

_TOKENS = "INTEGER DEFAULT 0"

REQUEST_LOGS = Table("request_logs", (
    ("id", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    # 001
    ("provider", "TEXT NOT NULL"),
    ("model", "TEXT NOT NULL"),
    ("tool", "TEXT DEFAULT 'unknown'"),
    ("client_id", "TEXT DEFAULT 'unknown'"),
    ("path", "TEXT NOT NULL"),
    ("streamed", "INTEGER DEFAULT 0"),
    ("status", "INTEGER"),
    ("prompt_tokens", _TOKENS),
    ("completion_tokens", _TOKENS),
    ("cache_creation_tokens", _TOKENS),
    ("cache_read_tokens", _TOKENS),
    ("total_tokens", _TOKENS),
    ("cost_usd", "REAL DEFAULT 0"),
    ("incomplete", "INTEGER NOT NULL DEFAULT 0"),
    ("error_code", "TEXT"),
    ("latency_ms", "INTEGER"),
    ("started_at", "TEXT NOT NULL"),
    ("finished_at", "TEXT"),
    ("meta_json", "TEXT"),
    # 003
    ("actual_model", "TEXT"),
    ("source_ip", "TEXT"),
    ("user_agent", "TEXT"),
    # 004
    ("cliproxy_account", "TEXT"),
    ("cliproxy_auth_index", "TEXT"),
    ("cliproxy_source", "TEXT"),
    ("request_id", "TEXT"),
    ("reasoning_tokens", _TOKENS),
    ("correlated_at", "TEXT"),
    # 005
    ("lifecycle_status", "TEXT NOT NULL DEFAULT 'pending' CHECK(lifecycle_status IN "
                         "('pending', 'completed', 'error', 'aborted'))"),
    ("cost_status", "TEXT NOT NULL DEFAULT 'unresolved' CHECK(cost_status IN "
                    "('unresolved', 'ok', 'pending', 'unsupported'))"),
    ("subscription_code", "TEXT"),
    ("finalized_at", "TEXT"),
    ("error_message", "TEXT"),
    # 002 (added for real by the original's self-heal pass)
    ("agent", "TEXT"),
    ("source", "TEXT DEFAULT 'proxy'"),
    ("msg_id", "TEXT"),
    # newer original: 008, 011, and the cost attribution columns its code writes
    ("proxy_api_key_id", "INTEGER REFERENCES api_keys(id)"),
    ("actual_provider", "TEXT"),
    ("cost_provider", "TEXT"),
    ("cost_model", "TEXT"),
))

# Added by py-0003; kept apart so the baseline stays exactly the original's shape.
REQUEST_LOGS_PY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("requested_model", "TEXT"),
    ("session_id", "TEXT"),
    ("identify_rule", "TEXT"),
    ("cache_creation_1h_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("upstream_status", "INTEGER"),
    ("upstream_latency_ms", "INTEGER"),
)

_DAILY_SUMS = (
    ("request_count", _TOKENS),
    ("prompt_tokens", _TOKENS),
    ("completion_tokens", _TOKENS),
    ("cache_creation_tokens", _TOKENS),
    ("cache_read_tokens", _TOKENS),
)

DAILY_USAGE = Table("daily_usage", (
    ("day", "TEXT NOT NULL"),
    ("provider", "TEXT NOT NULL"),
    ("model", "TEXT NOT NULL"),
    *_DAILY_SUMS,
    ("total_tokens", _TOKENS),
    ("cost_usd", "REAL DEFAULT 0"),
), ("PRIMARY KEY (day, provider, model)",))

DAILY_ACCOUNT_USAGE = Table("daily_account_usage", (
    ("day", "TEXT NOT NULL"),
    ("provider", "TEXT NOT NULL"),
    ("model", "TEXT NOT NULL"),
    ("cliproxy_account", "TEXT NOT NULL"),
    ("cliproxy_auth_index", "TEXT"),
    *_DAILY_SUMS,
    ("reasoning_tokens", _TOKENS),
    ("total_tokens", _TOKENS),
    ("cost_usd", "REAL DEFAULT 0"),
), ("PRIMARY KEY (day, provider, model, cliproxy_account)",))

QUOTA_SNAPSHOTS = Table("quota_snapshots", (
    ("id", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    ("timestamp", "TEXT NOT NULL"),
    ("provider", "TEXT NOT NULL"),
    ("account", "TEXT NOT NULL"),
    ("quota_type", "TEXT NOT NULL"),
    ("used_pct", "REAL"),
    ("remaining", "REAL"),
    ("remaining_raw", "TEXT"),
    ("resets_at", "TEXT"),
    ("raw_json", "TEXT"),
    ("model", "TEXT"),  # newer original 012
))

COST_AUDIT = Table("cost_audit", (
    ("id", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    ("request_log_id", "INTEGER REFERENCES request_logs(id)"),
    ("model", "TEXT"),
    ("provider", "TEXT"),
    ("source", "TEXT"),
    ("base_cost_usd", "REAL"),
    ("calc_at", "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP"),
))

# Added by py-0004: what reproduces an audited cost (the rule that found the price, the
# price table key, and the numbers of the computation as JSON). Nullable, so rows the
# original wrote, and the original itself, keep working.
COST_AUDIT_PY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rule", "TEXT"),
    ("price_key", "TEXT"),
    ("detail_json", "TEXT"),
)

API_KEYS = Table("api_keys", (
    ("id", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    ("key_hash", "TEXT NOT NULL UNIQUE"),
    ("key_prefix", "TEXT NOT NULL"),
    ("name", "TEXT NOT NULL"),
    ("created_at", "TEXT NOT NULL DEFAULT (datetime('now'))"),
    ("revoked_at", "TEXT"),
    ("last_used_at", "TEXT"),
    ("allowed_accounts", "TEXT"),  # 009: JSON array text
    ("allowed_providers", "TEXT"),
))

# Plans were removed by the newer original (its 013 drops this table); the snapshot still
# uses it, so it is created unless that 013 is recorded, and kept wherever it exists.
ACCOUNT_SUBSCRIPTIONS = Table("account_subscriptions", (
    ("cliproxy_account", "TEXT PRIMARY KEY"),
    ("subscription_code", "TEXT NOT NULL"),
    ("bound_at", "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP"),
))

# Added by py-0005: CLIProxyAPI usage details (v6 /usage, v7 usage queue) already matched
# to a row by the account correlator, so that each is matched at most once, across ticks
# and restarts (the original rebuilt its pool every tick, spec §12.7). The key is a digest
# of the detail, never its client API key. Rows older than the look-back are pruned.
CLIPROXY_USAGE_MATCHES = Table("cliproxy_usage_matches", (
    ("detail_key", "TEXT PRIMARY KEY"),
    ("request_log_id", "INTEGER"),
    ("detail_at", "TEXT NOT NULL"),
    ("matched_at", "TEXT NOT NULL"),
))

# api_keys before request_logs: request_logs references it.
TABLES: tuple[Table, ...] = (
    API_KEYS, REQUEST_LOGS, DAILY_USAGE, DAILY_ACCOUNT_USAGE, QUOTA_SNAPSHOTS, COST_AUDIT,
    ACCOUNT_SUBSCRIPTIONS,
)

# (name, table, columns, WHERE clause or ""); all non-unique.
INDEXES: tuple[tuple[str, str, str, str], ...] = (
    ("idx_request_logs_started_at", "request_logs", "started_at", ""),
    ("idx_request_logs_tool", "request_logs", "tool", ""),
    ("idx_request_logs_client_id", "request_logs", "client_id", ""),
    ("idx_request_logs_cliproxy_account", "request_logs", "cliproxy_account", ""),
    ("idx_request_logs_cliproxy_auth_index", "request_logs", "cliproxy_auth_index", ""),
    ("idx_request_logs_request_id", "request_logs", "request_id", ""),
    ("idx_request_logs_lifecycle_status", "request_logs", "lifecycle_status", ""),
    ("idx_request_logs_cost_status", "request_logs", "cost_status", ""),
    ("idx_request_logs_subscription_code", "request_logs", "subscription_code",
     "subscription_code IS NOT NULL"),
    ("idx_request_logs_msg_id", "request_logs", "msg_id", "msg_id IS NOT NULL"),
    ("idx_request_logs_provider_cliproxy_account_started_at", "request_logs",
     "provider, cliproxy_account, started_at", ""),
    ("idx_daily_usage_day", "daily_usage", "day", ""),
    ("idx_daily_account_usage_day", "daily_account_usage", "day", ""),
    ("idx_daily_account_usage_account", "daily_account_usage", "cliproxy_account", ""),
    ("idx_quota_snapshots_provider", "quota_snapshots", "provider, account, timestamp", ""),
    ("idx_cost_audit_request_log_id", "cost_audit", "request_log_id", ""),
    ("idx_account_subscriptions_subscription_code", "account_subscriptions",
     "subscription_code", ""),
)


def index_sql(name: str, table: str, columns: str, where: str) -> str:
    suffix = f" WHERE {where}" if where else ""
    return f"CREATE INDEX IF NOT EXISTS {name} ON {table}({columns}){suffix}"


# -- introspection (PRAGMA based, never by parsing error messages) ----------------------

def table_exists(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return row is not None


def column_names(conn: sqlite3.Connection, table: str) -> set[str]:
    # PRAGMA arguments cannot be bound; table names here come from the constants above.
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}


def index_is_unique(conn: sqlite3.Connection, table: str, index: str) -> bool | None:
    """Whether *index* on *table* is UNIQUE; None if it does not exist."""
    for row in conn.execute(f"PRAGMA index_list({table})"):
        if row[1] == index:
            return bool(row[2])
    return None


def add_missing_columns(conn: sqlite3.Connection, table: str,
                        columns: tuple[tuple[str, str], ...]) -> list[str]:
    """``ALTER TABLE … ADD COLUMN`` for each of *columns* the table lacks; returns them."""
    present = column_names(conn, table)
    added: list[str] = []
    for name, decl in columns:
        if name in present:
            continue
        upper = decl.upper()
        if "PRIMARY KEY" in upper or ("NOT NULL" in upper and "DEFAULT" not in upper):
            # Such a column exists since the original's first migration; a table
            # without it is not an agent-cli-proxy table and must not be patched.
            raise MigrationError(f"{table} has no column {name!r}: not an agent-cli-proxy "
                                 "database (or a damaged one)")
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
        added.append(name)
    return added


class MigrationError(RuntimeError):
    """The database cannot be brought to the current schema."""

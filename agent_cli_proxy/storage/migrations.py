"""Numbered schema migrations, recorded in the database they change.

Compatibility with the TypeScript original is the point of this module. The original
records its migration *file names* in ``schema_migrations(name, applied_at)``
(``001_init.sql`` … ``007_drop_msg_id_unique.sql``, newer versions up to ``013_…``).
We share that table and record our own steps under names of a different shape
(``py-0001-baseline`` …) that can never collide with a file name of theirs, so a
``proxy.db`` from any version of the original is upgraded in place, keeps all its
history, and stays readable by the original: we only add tables, columns and indexes.

Every step is written to be correct on a fresh file *and* on any original file, using
``IF NOT EXISTS`` and ``PRAGMA table_info`` rather than running a statement and ignoring
the error it raises. Each step runs in one ``BEGIN IMMEDIATE`` transaction together with
the row that records it, so a crash leaves it either fully applied or not at all, and two
processes migrating the same file at once cannot both apply a step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.storage import schema
from agent_cli_proxy.storage.database import Database

log = get_logger("storage")

SCHEMA_MIGRATIONS_SQL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)

# The original snapshot's own steps. After our baseline the file holds a superset of
# their combined effect, so we record any of them that are missing: if the original is
# ever started on the file again, it must not re-run them. Re-running 005 would be
# harmful: its unconditional UPDATE rewrites the lifecycle and cost status of every row
# (pending and aborted rows become completed/error, 'unsupported' becomes 'pending').
ORIGINAL_SNAPSHOT_MIGRATIONS: tuple[str, ...] = (
    "001_init.sql",
    "002_agent_attribution.sql",
    "003_enhanced_logging.sql",
    "004_cliproxy_attribution.sql",
    "005_lifecycle_cost_subscription.sql",
    "006_account_subscriptions.sql",
    "007_drop_msg_id_unique.sql",
)
# The newer original's step that removed plans (account_subscriptions).
DROPPED_ACCOUNT_SUBSCRIPTIONS = "013_drop_account_subscriptions.sql"

# The original's 005 lifecycle backfill. Before 005 there was no lifecycle: a row was
# written once the call had ended, so every such row is finished and is classified from
# the fields it has. {where} narrows it when the column already existed.
_LIFECYCLE_BACKFILL = """
UPDATE request_logs
SET lifecycle_status = CASE
      WHEN incomplete = 1 OR error_code IS NOT NULL OR status >= 400 THEN 'error'
      ELSE 'completed'
    END,
    finalized_at = COALESCE(finalized_at, finished_at, started_at),
    cost_status = CASE WHEN cost_usd > 0 THEN 'ok' ELSE 'pending' END
WHERE lifecycle_status = 'pending' AND ({where})
"""
# A row the original left 'pending' although it carries an outcome (a half-applied
# upgrade); rows with no outcome are real in-flight rows, left to boot recovery.
_LOOKS_FINISHED = (
    "(finalized_at IS NULL OR cost_status = 'unresolved') AND (finished_at IS NOT NULL "
    "OR incomplete = 1 OR error_code IS NOT NULL OR status IS NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    apply: Callable[[sqlite3.Connection], None]
    doc: str


def _baseline(conn: sqlite3.Connection) -> None:
    fresh = not schema.table_exists(conn, "request_logs")
    had_lifecycle = fresh or "lifecycle_status" in schema.column_names(conn, "request_logs")
    dropped_plans = DROPPED_ACCOUNT_SUBSCRIPTIONS in applied_migrations(conn)
    for table in schema.TABLES:
        exists = schema.table_exists(conn, table.name)
        if table is schema.ACCOUNT_SUBSCRIPTIONS and dropped_plans:
            continue  # the newer original dropped it on purpose: do not revive it
        if exists:
            added = schema.add_missing_columns(conn, table.name, table.columns)
            if added:
                log.info("storage.columns_added", table=table.name, columns=added)
        else:
            conn.execute(table.create_sql())
    where = "1" if not had_lifecycle else _LOOKS_FINISHED
    changed = conn.execute(_LIFECYCLE_BACKFILL.format(where=where)).rowcount
    if changed:
        log.info("storage.lifecycle_backfilled", rows=changed, legacy=not had_lifecycle)
    for name, table_name, columns, cond in schema.INDEXES:
        if schema.table_exists(conn, table_name):
            conn.execute(schema.index_sql(name, table_name, columns, cond))
    conn.executemany("INSERT OR IGNORE INTO schema_migrations (name) VALUES (?)",
                     [(n,) for n in ORIGINAL_SNAPSHOT_MIGRATIONS])


def _msg_id_non_unique(conn: sqlite3.Connection) -> None:
    # The same message id legitimately appears on several rows (client retries, one
    # message fanned out to several calls); a UNIQUE index would make the proxy drop a
    # real, billed call at insert time. The original flip-flopped (002 unique, 007 not,
    # 010 unique again); we keep it non-unique under the same name.
    name, table, columns, cond = next(i for i in schema.INDEXES
                                      if i[0] == "idx_request_logs_msg_id")
    if schema.index_is_unique(conn, table, name):
        conn.execute(f"DROP INDEX {name}")
        log.info("storage.msg_id_index_made_non_unique")
    conn.execute(schema.index_sql(name, table, columns, cond))


def _request_logs_columns(conn: sqlite3.Connection) -> None:
    schema.add_missing_columns(conn, "request_logs", schema.REQUEST_LOGS_PY_COLUMNS)
    # Per-key usage and (later) per-key budgets sum over a key's recent rows.
    conn.execute(schema.index_sql("idx_request_logs_proxy_api_key_id", "request_logs",
                                  "proxy_api_key_id, started_at",
                                  "proxy_api_key_id IS NOT NULL"))


def _cost_audit_detail(conn: sqlite3.Connection) -> None:
    schema.add_missing_columns(conn, "cost_audit", schema.COST_AUDIT_PY_COLUMNS)


def _usage_matches(conn: sqlite3.Connection) -> None:
    conn.execute(schema.CLIPROXY_USAGE_MATCHES.create_sql())
    conn.execute(schema.index_sql("idx_cliproxy_usage_matches_detail_at",
                                  "cliproxy_usage_matches", "detail_at", ""))


MIGRATIONS: tuple[Migration, ...] = (
    Migration("py-0001-baseline", _baseline,
              "Every table, column and index of the original (snapshot 001-007 and newer "
              "002_quota_local_usage_index, 008-012); 005 lifecycle backfill."),
    Migration("py-0002-msg-id-non-unique", _msg_id_non_unique,
              "Replace a UNIQUE idx_request_logs_msg_id with a non-unique one."),
    Migration("py-0003-request-logs-columns", _request_logs_columns,
              "requested_model, session_id, identify_rule, cache_creation_1h_tokens, "
              "upstream_status, upstream_latency_ms; index on proxy_api_key_id."),
    Migration("py-0004-cost-audit-detail", _cost_audit_detail,
              "cost_audit.rule, price_key, detail_json: how each audited cost was found."),
    Migration("py-0005-cliproxy-usage-matches", _usage_matches,
              "cliproxy_usage_matches: CLIProxyAPI usage details the correlator has used."),
)


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """Names recorded in ``schema_migrations`` (ours and the original's), oldest first."""
    if not schema.table_exists(conn, "schema_migrations"):
        return []
    rows = conn.execute("SELECT name FROM schema_migrations ORDER BY rowid").fetchall()
    return [str(r[0]) for r in rows]


def pending_migrations(conn: sqlite3.Connection) -> list[str]:
    """Our migrations not yet applied to this database (for ``doctor``)."""
    done = set(applied_migrations(conn))
    return [m.name for m in MIGRATIONS if m.name not in done]


def migrate(db: Database) -> list[str]:
    """Apply every pending migration, each in its own transaction; return their names."""
    with db.write() as conn:
        conn.execute(SCHEMA_MIGRATIONS_SQL)
    newly: list[str] = []
    for migration in MIGRATIONS:
        with db.write() as conn:
            # Checked inside the transaction: another process may have just applied it.
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE name = ?",
                                (migration.name,)).fetchone()
            if done is None:
                migration.apply(conn)
                conn.execute("INSERT INTO schema_migrations (name) VALUES (?)",
                             (migration.name,))
        if done is None:
            newly.append(migration.name)
            log.info("storage.migration_applied", name=migration.name, path=str(db.path))
    return newly

"""Migrations: a fresh file, idempotence, and databases written by the original."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy.storage import (
    Database,
    applied_migrations,
    migrate,
    open_database,
    pending_migrations,
    recover_stale_pending,
)
from agent_cli_proxy.storage.migrations import MIGRATIONS
from tests.storage.original_db import (
    ORIGINAL_BUILDERS,
    ORIGINAL_COLUMNS,
    ORIGINAL_SELF_HEAL_BACKFILL,
    SNAPSHOT_NAMES,
    raw_connect,
)

OUR_NAMES = [m.name for m in MIGRATIONS]

EXPECTED_COLUMNS = {
    "request_logs": {
        "id", "provider", "model", "tool", "client_id", "path", "streamed", "status",
        "prompt_tokens", "completion_tokens", "cache_creation_tokens", "cache_read_tokens",
        "total_tokens", "cost_usd", "incomplete", "error_code", "latency_ms", "started_at",
        "finished_at", "meta_json", "actual_model", "source_ip", "user_agent",
        "cliproxy_account", "cliproxy_auth_index", "cliproxy_source", "request_id",
        "reasoning_tokens", "correlated_at", "lifecycle_status", "cost_status",
        "subscription_code", "finalized_at", "error_message", "agent", "source", "msg_id",
        "proxy_api_key_id", "actual_provider", "cost_provider", "cost_model",
        # ours
        "requested_model", "session_id", "identify_rule", "cache_creation_1h_tokens",
        "upstream_status", "upstream_latency_ms",
    },
    "daily_usage": {"day", "provider", "model", "request_count", "prompt_tokens",
                    "completion_tokens", "cache_creation_tokens", "cache_read_tokens",
                    "total_tokens", "cost_usd"},
    "daily_account_usage": {"day", "provider", "model", "cliproxy_account",
                            "cliproxy_auth_index", "request_count", "prompt_tokens",
                            "completion_tokens", "cache_creation_tokens",
                            "cache_read_tokens", "reasoning_tokens", "total_tokens",
                            "cost_usd"},
    "quota_snapshots": {"id", "timestamp", "provider", "account", "quota_type", "used_pct",
                        "remaining", "remaining_raw", "resets_at", "raw_json", "model"},
    "cost_audit": {"id", "request_log_id", "model", "provider", "source", "base_cost_usd",
                   "calc_at"},
    "api_keys": {"id", "key_hash", "key_prefix", "name", "created_at", "revoked_at",
                 "last_used_at", "allowed_accounts", "allowed_providers"},
}

EXPECTED_INDEXES = {
    "idx_request_logs_started_at", "idx_request_logs_tool", "idx_request_logs_client_id",
    "idx_request_logs_cliproxy_account", "idx_request_logs_cliproxy_auth_index",
    "idx_request_logs_request_id", "idx_request_logs_lifecycle_status",
    "idx_request_logs_cost_status", "idx_request_logs_subscription_code",
    "idx_request_logs_msg_id", "idx_request_logs_provider_cliproxy_account_started_at",
    "idx_request_logs_proxy_api_key_id", "idx_daily_usage_day",
    "idx_daily_account_usage_day", "idx_daily_account_usage_account",
    "idx_quota_snapshots_provider", "idx_cost_audit_request_log_id",
}


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def indexes(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_%'")}


def msg_id_index_unique(conn: sqlite3.Connection) -> bool:
    return next(bool(r[2]) for r in conn.execute("PRAGMA index_list(request_logs)")
                if r[1] == "idx_request_logs_msg_id")


def schema_dump(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(
        "SELECT type, name, sql FROM sqlite_master ORDER BY type, name")]


def assert_final_schema(conn: sqlite3.Connection) -> None:
    for table, expected in EXPECTED_COLUMNS.items():
        assert expected <= columns(conn, table), table
    missing = EXPECTED_INDEXES - indexes(conn)
    assert not missing
    assert not msg_id_index_unique(conn)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_fresh_database_has_everything(db: Database) -> None:
    conn = db.reader()
    assert_final_schema(conn)
    assert columns(conn, "request_logs") == EXPECTED_COLUMNS["request_logs"]
    assert "account_subscriptions" in {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    # Our steps, plus the original's snapshot names so the original never re-runs 005.
    assert applied_migrations(conn) == SNAPSHOT_NAMES + OUR_NAMES
    assert pending_migrations(conn) == []
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrate_twice_is_a_no_op(db: Database) -> None:
    before = schema_dump(db.reader())
    rows_before = applied_migrations(db.reader())
    assert migrate(db) == []
    assert schema_dump(db.reader()) == before
    assert applied_migrations(db.reader()) == rows_before


def test_reopen_applies_nothing(db_path: Path) -> None:
    open_database(db_path).close()
    db = Database.open(db_path, migrate=False)
    try:
        assert migrate(db) == []
    finally:
        db.close()


def test_open_without_migrate_leaves_file_empty(db_path: Path) -> None:
    db = Database.open(db_path, migrate=False)
    try:
        assert applied_migrations(db.reader()) == []
        assert pending_migrations(db.reader()) == OUR_NAMES
        assert migrate(db) == OUR_NAMES
    finally:
        db.close()


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    conn = raw_connect(path)
    try:
        return {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM request_logs")}
    finally:
        conn.close()


@pytest.mark.parametrize("variant", ["legacy", "snapshot", "newer"])
def test_original_database_is_upgraded_in_place(tmp_path: Path, variant: str) -> None:
    path = tmp_path / "proxy.db"
    ORIGINAL_BUILDERS[variant](path)
    before = _rows(path)
    conn = raw_connect(path)
    names_before = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY rowid")]
    other_tables_before = {
        t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY rowid")]
        for t in ("cost_audit", "quota_snapshots", "api_keys", "account_subscriptions",
                  "daily_usage")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (t,)).fetchone()
    }
    conn.close()

    db = open_database(path)
    try:
        conn = db.reader()
        assert_final_schema(conn)
        # Their names untouched; snapshot steps our baseline subsumed, then ours, appended.
        subsumed = [n for n in SNAPSHOT_NAMES if n not in names_before]
        assert subsumed == ([] if variant != "legacy" else SNAPSHOT_NAMES[4:])
        assert applied_migrations(conn) == names_before + subsumed + OUR_NAMES
        after = {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM request_logs")}
        assert after.keys() == before.keys()
        for request_id, old in before.items():
            for column, value in old.items():
                if variant == "legacy" and column in ("lifecycle_status", "finalized_at",
                                                      "cost_status"):
                    continue
                assert after[request_id][column] == value, (request_id, column)
        for table, rows in other_tables_before.items():
            now = [tuple(r)[:len(rows[0])] if rows else tuple(r)
                   for r in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")]
            assert now == rows, table
        # daily_usage is history too: its totals stay exactly as the original wrote them
        # (checked with the other tables above), even where the original under-counted.
    finally:
        db.close()


def test_legacy_rows_get_lifecycle_backfilled(tmp_path: Path) -> None:
    path = tmp_path / "proxy.db"
    ORIGINAL_BUILDERS["legacy"](path)
    with open_database(path) as db:
        rows = {r["request_id"]: r for r in db.reader().execute(
            "SELECT request_id, lifecycle_status, cost_status, finalized_at, finished_at,"
            " started_at FROM request_logs")}
    assert dict(rows["legacy-ok"]) == {
        "request_id": "legacy-ok", "lifecycle_status": "completed", "cost_status": "ok",
        "finalized_at": "2026-02-01T09:00:00.900Z", "finished_at": "2026-02-01T09:00:00.900Z",
        "started_at": "2026-02-01T09:00:00.000Z"}
    assert rows["legacy-502"]["lifecycle_status"] == "error"
    assert rows["legacy-502"]["cost_status"] == "pending"
    assert rows["legacy-free"]["lifecycle_status"] == "completed"
    assert rows["legacy-free"]["cost_status"] == "pending"
    assert rows["legacy-free"]["finalized_at"] == "2026-02-02T11:00:00.000Z"
    assert rows["legacy-429"]["lifecycle_status"] == "error"


def test_snapshot_lifecycles_are_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "proxy.db"
    ORIGINAL_BUILDERS["snapshot"](path)
    with open_database(path) as db:
        got = {r[0]: (r[1], r[2]) for r in db.reader().execute(
            "SELECT request_id, lifecycle_status, cost_status FROM request_logs")}
        summary = [tuple(r) for r in db.reader().execute(
            "SELECT day, request_count FROM daily_usage ORDER BY day")]
    assert got == {"s-ok": ("completed", "ok"), "s-dup": ("completed", "ok"),
                   "s-recovered": ("aborted", "pending"), "s-stale": ("pending", "unresolved")}
    # 2026-03-02: the two the original counted; its boot-recovered row stays uncounted
    # (rewriting old totals could lose traffic whose rows were deleted by hand).
    assert summary == [("2026-03-02", 2)]
    # The original's own stale pending row is closed by our recovery like any other, and
    # from then on it is counted.
    with open_database(path) as db:
        assert recover_stale_pending(db, 600_000, 1_800_000_000_000) == 1
        summary = [tuple(r) for r in db.reader().execute(
            "SELECT day, request_count FROM daily_usage ORDER BY day")]
    assert summary == [("2026-03-02", 2), ("2026-03-03", 1)]


@pytest.mark.parametrize("variant", ["legacy", "newer"])
def test_unique_msg_id_index_is_replaced(tmp_path: Path, variant: str) -> None:
    path = tmp_path / "proxy.db"
    ORIGINAL_BUILDERS[variant](path)
    conn = raw_connect(path)
    assert msg_id_index_unique(conn)
    conn.close()
    with open_database(path) as db:
        assert not msg_id_index_unique(db.reader())
        with db.write() as w:
            for _ in range(2):
                w.execute("INSERT INTO request_logs (provider, model, path, started_at, msg_id)"
                          " VALUES ('openai', 'm', '/p', '2026-01-01T00:00:00.000Z', 'same')")


@pytest.mark.parametrize(("variant", "rows"), [
    ("legacy", 0),  # pre-006: created, since 006 is now recorded as done
    ("snapshot", 1),  # kept with its binding
    ("newer", None),  # dropped by the original's 013 on purpose: not revived
])
def test_account_subscriptions(tmp_path: Path, variant: str, rows: int | None) -> None:
    path = tmp_path / "proxy.db"
    ORIGINAL_BUILDERS[variant](path)
    with open_database(path) as db:
        conn = db.reader()
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'account_subscriptions'").fetchone()
        if rows is None:
            assert found is None
        else:
            assert conn.execute("SELECT COUNT(*) FROM account_subscriptions"
                                ).fetchone()[0] == rows


@pytest.mark.parametrize("variant", ["fresh", "legacy", "snapshot", "newer"])
def test_original_can_still_use_the_upgraded_file(tmp_path: Path, variant: str) -> None:
    path = tmp_path / "proxy.db"
    if variant != "fresh":
        ORIGINAL_BUILDERS[variant](path)
    open_database(path).close()
    conn = raw_connect(path)
    try:
        # The original's runner would only run snapshot files it has not recorded.
        recorded = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        assert set(SNAPSHOT_NAMES) <= recorded
        # Its repository's INSERT (no knowledge of our columns) and its readers work.
        values = {c: None for c in ORIGINAL_COLUMNS} | {
            "provider": "openai", "model": "gpt-4o", "path": "/v1/chat/completions",
            "streamed": 0, "prompt_tokens": 1, "completion_tokens": 1,
            "cache_creation_tokens": 0, "cache_read_tokens": 0, "total_tokens": 2,
            "cost_usd": 0.0, "incomplete": 0, "reasoning_tokens": 0,
            "started_at": "2026-07-01T00:00:00.000Z", "request_id": "from-original"}
        conn.execute(f"INSERT INTO request_logs ({', '.join(values)}) VALUES "
                     f"({', '.join('?' for _ in values)})", tuple(values.values()))
        row = conn.execute("SELECT * FROM request_logs WHERE request_id = 'from-original'"
                           ).fetchone()
        assert row["lifecycle_status"] == "pending"
        assert row["cache_creation_1h_tokens"] == 0
        conn.execute("SELECT * FROM request_logs ORDER BY started_at DESC LIMIT 50").fetchall()
        conn.execute("SELECT * FROM daily_usage WHERE day = '2026-07-01'").fetchall()
        # The self-heal pass it runs at every boot leaves our schema and rows alone.
        lifecycles = conn.execute("SELECT id, lifecycle_status, cost_status FROM request_logs"
                                  " ORDER BY id").fetchall()
        conn.execute(ORIGINAL_SELF_HEAL_BACKFILL)
        conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS idx_request_logs_msg_id"
                     " ON request_logs(msg_id) WHERE msg_id IS NOT NULL")
        assert not msg_id_index_unique(conn)
        assert conn.execute("SELECT id, lifecycle_status, cost_status FROM request_logs"
                            " ORDER BY id").fetchall() == lifecycles
    finally:
        conn.close()


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE request_logs (id INTEGER PRIMARY KEY, question TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="not an agent-cli-proxy database"):
        open_database(path)
    # Nothing of ours was recorded: the failing step rolled back.
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT name FROM schema_migrations")] == []
    conn.close()


def test_two_openers_migrate_once(db_path: Path) -> None:
    # Two processes starting together (e.g. the server and a CLI command).
    dbs = [Database(db_path), Database(db_path)]
    start = threading.Barrier(2)
    results: list[list[str]] = []

    def run(db: Database) -> None:
        start.wait()
        results.append(migrate(db))

    threads = [threading.Thread(target=run, args=(d,)) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(results[0] + results[1]) == sorted(OUR_NAMES)
        assert applied_migrations(dbs[0].reader()) == SNAPSHOT_NAMES + OUR_NAMES
    finally:
        for d in dbs:
            d.close()

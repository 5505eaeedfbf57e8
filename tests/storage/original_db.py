"""The TypeScript original's schema and history, reproduced by hand for upgrade tests.

The builders replay the original's DDL migration by migration, as literal SQL
(deliberately not generated from ``storage.schema``, so a mistake there cannot hide
here), and fill in history the way the original's code would have: rows plus the
``daily_usage`` upserts it made for them (and the ones it forgot).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

# -- the original's DDL --------------------------------------------------------------------

# 001_init.sql of the snapshot (before agent attribution and lifecycle).
ORIG_001 = """
CREATE TABLE IF NOT EXISTS request_logs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  tool TEXT DEFAULT 'unknown',
  client_id TEXT DEFAULT 'unknown',
  path TEXT NOT NULL,
  streamed INTEGER DEFAULT 0,
  status INTEGER,
  prompt_tokens INTEGER DEFAULT 0,
  completion_tokens INTEGER DEFAULT 0,
  cache_creation_tokens INTEGER DEFAULT 0,
  cache_read_tokens INTEGER DEFAULT 0,
  total_tokens INTEGER DEFAULT 0,
  cost_usd REAL DEFAULT 0,
  incomplete INTEGER NOT NULL DEFAULT 0,
  error_code TEXT,
  latency_ms INTEGER,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  meta_json TEXT
);
CREATE INDEX IF NOT EXISTS idx_request_logs_started_at ON request_logs(started_at);
CREATE INDEX IF NOT EXISTS idx_request_logs_tool ON request_logs(tool);
CREATE INDEX IF NOT EXISTS idx_request_logs_client_id ON request_logs(client_id);
CREATE TABLE IF NOT EXISTS daily_usage (
  day TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
  request_count INTEGER DEFAULT 0, prompt_tokens INTEGER DEFAULT 0,
  completion_tokens INTEGER DEFAULT 0, cache_creation_tokens INTEGER DEFAULT 0,
  cache_read_tokens INTEGER DEFAULT 0, total_tokens INTEGER DEFAULT 0, cost_usd REAL DEFAULT 0,
  PRIMARY KEY (day, provider, model)
);
CREATE INDEX IF NOT EXISTS idx_daily_usage_day ON daily_usage(day);
"""

# 002: the ADD COLUMN IF NOT EXISTS lines were a syntax error the original swallowed; its
# self-heal pass added the columns later. The msg_id index was UNIQUE.
ORIG_002 = """
ALTER TABLE request_logs ADD COLUMN agent TEXT;
ALTER TABLE request_logs ADD COLUMN source TEXT DEFAULT 'proxy';
ALTER TABLE request_logs ADD COLUMN msg_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS idx_request_logs_msg_id
  ON request_logs(msg_id) WHERE msg_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS quota_snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL, provider TEXT NOT NULL,
  account TEXT NOT NULL, quota_type TEXT NOT NULL, used_pct REAL, remaining REAL,
  remaining_raw TEXT, resets_at TEXT, raw_json TEXT
);
CREATE INDEX IF NOT EXISTS idx_quota_snapshots_provider
  ON quota_snapshots(provider, account, timestamp);
"""

ORIG_003 = """
ALTER TABLE request_logs ADD COLUMN actual_model TEXT;
ALTER TABLE request_logs ADD COLUMN source_ip TEXT;
ALTER TABLE request_logs ADD COLUMN user_agent TEXT;
"""

ORIG_004 = """
ALTER TABLE request_logs ADD COLUMN cliproxy_account TEXT;
ALTER TABLE request_logs ADD COLUMN cliproxy_auth_index TEXT;
ALTER TABLE request_logs ADD COLUMN cliproxy_source TEXT;
ALTER TABLE request_logs ADD COLUMN request_id TEXT;
ALTER TABLE request_logs ADD COLUMN reasoning_tokens INTEGER DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN correlated_at TEXT;
CREATE INDEX IF NOT EXISTS idx_request_logs_cliproxy_account ON request_logs(cliproxy_account);
CREATE INDEX IF NOT EXISTS idx_request_logs_cliproxy_auth_index
  ON request_logs(cliproxy_auth_index);
CREATE INDEX IF NOT EXISTS idx_request_logs_request_id ON request_logs(request_id);
CREATE TABLE IF NOT EXISTS daily_account_usage (
  day TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
  cliproxy_account TEXT NOT NULL, cliproxy_auth_index TEXT,
  request_count INTEGER DEFAULT 0, prompt_tokens INTEGER DEFAULT 0,
  completion_tokens INTEGER DEFAULT 0, cache_creation_tokens INTEGER DEFAULT 0,
  cache_read_tokens INTEGER DEFAULT 0, reasoning_tokens INTEGER DEFAULT 0,
  total_tokens INTEGER DEFAULT 0, cost_usd REAL DEFAULT 0,
  PRIMARY KEY (day, provider, model, cliproxy_account)
);
CREATE INDEX IF NOT EXISTS idx_daily_account_usage_day ON daily_account_usage(day);
CREATE INDEX IF NOT EXISTS idx_daily_account_usage_account
  ON daily_account_usage(cliproxy_account);
"""

# 005 without its backfill UPDATE: the fixture inserts rows already in post-005 shape.
ORIG_005 = """
ALTER TABLE request_logs ADD COLUMN lifecycle_status TEXT NOT NULL DEFAULT 'pending'
  CHECK(lifecycle_status IN ('pending', 'completed', 'error', 'aborted'));
ALTER TABLE request_logs ADD COLUMN cost_status TEXT NOT NULL DEFAULT 'unresolved'
  CHECK(cost_status IN ('unresolved', 'ok', 'pending', 'unsupported'));
ALTER TABLE request_logs ADD COLUMN subscription_code TEXT;
ALTER TABLE request_logs ADD COLUMN finalized_at TEXT;
ALTER TABLE request_logs ADD COLUMN error_message TEXT;
CREATE INDEX IF NOT EXISTS idx_request_logs_lifecycle_status ON request_logs(lifecycle_status);
CREATE INDEX IF NOT EXISTS idx_request_logs_cost_status ON request_logs(cost_status);
CREATE INDEX IF NOT EXISTS idx_request_logs_subscription_code
  ON request_logs(subscription_code) WHERE subscription_code IS NOT NULL;
CREATE TABLE IF NOT EXISTS cost_audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, request_log_id INTEGER, model TEXT, provider TEXT,
  source TEXT, base_cost_usd REAL, calc_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  FOREIGN KEY (request_log_id) REFERENCES request_logs(id)
);
CREATE INDEX IF NOT EXISTS idx_cost_audit_request_log_id ON cost_audit(request_log_id);
"""

ORIG_006 = """
CREATE TABLE IF NOT EXISTS account_subscriptions (
  cliproxy_account TEXT PRIMARY KEY, subscription_code TEXT NOT NULL,
  bound_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_account_subscriptions_subscription_code
  ON account_subscriptions(subscription_code);
"""

ORIG_007 = """
DROP INDEX IF EXISTS idx_request_logs_msg_id;
CREATE INDEX IF NOT EXISTS idx_request_logs_msg_id ON request_logs(msg_id) WHERE msg_id IS NOT NULL;
"""

ORIG_NEWER = {
    "002_quota_local_usage_index.sql": """
CREATE INDEX IF NOT EXISTS idx_request_logs_provider_cliproxy_account_started_at
ON request_logs(provider, cliproxy_account, started_at);""",
    "008_api_keys.sql": """
CREATE TABLE IF NOT EXISTS api_keys (
  id INTEGER PRIMARY KEY AUTOINCREMENT, key_hash TEXT NOT NULL UNIQUE,
  key_prefix TEXT NOT NULL, name TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (datetime('now')), revoked_at TEXT, last_used_at TEXT
);
ALTER TABLE request_logs ADD COLUMN proxy_api_key_id INTEGER REFERENCES api_keys(id);""",
    "009_api_key_allowed_accounts.sql": """
ALTER TABLE api_keys ADD COLUMN allowed_accounts TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_providers TEXT;""",
    "010_unique_msg_id.sql": """
DROP INDEX IF EXISTS idx_request_logs_msg_id;
CREATE UNIQUE INDEX idx_request_logs_msg_id ON request_logs(msg_id) WHERE msg_id IS NOT NULL;""",
    "011_actual_provider.sql": "ALTER TABLE request_logs ADD COLUMN actual_provider TEXT;",
    "012_quota_model_dimension.sql": "ALTER TABLE quota_snapshots ADD COLUMN model TEXT;",
    "013_drop_account_subscriptions.sql": """
DROP INDEX IF EXISTS idx_account_subscriptions_subscription_code;
DROP TABLE IF EXISTS account_subscriptions;""",
}

# Run by the original after its migrations, at every boot.
ORIGINAL_SELF_HEAL_BACKFILL = """
UPDATE request_logs
SET lifecycle_status = CASE WHEN incomplete = 1 OR error_code IS NOT NULL OR status >= 400
                            THEN 'error' ELSE 'completed' END,
    finalized_at = COALESCE(finalized_at, finished_at, started_at),
    cost_status = CASE WHEN cost_usd > 0 THEN 'ok' ELSE 'pending' END
WHERE lifecycle_status = 'pending'
  AND (finalized_at IS NULL OR cost_status = 'unresolved')
  AND (finished_at IS NOT NULL OR incomplete = 1 OR error_code IS NOT NULL
       OR status IS NOT NULL)
"""

SNAPSHOT_NAMES = [
    "001_init.sql", "002_agent_attribution.sql", "003_enhanced_logging.sql",
    "004_cliproxy_attribution.sql", "005_lifecycle_cost_subscription.sql",
    "006_account_subscriptions.sql", "007_drop_msg_id_unique.sql",
]
_SNAPSHOT_DDL = [ORIG_001, ORIG_002, ORIG_003, ORIG_004, ORIG_005, ORIG_006, ORIG_007]

# The columns an original snapshot row is written with (its repository's INSERT).
ORIGINAL_COLUMNS = [
    "provider", "model", "tool", "client_id", "path", "streamed", "status", "prompt_tokens",
    "completion_tokens", "cache_creation_tokens", "cache_read_tokens", "total_tokens",
    "cost_usd", "incomplete", "error_code", "latency_ms", "started_at", "finished_at",
    "meta_json", "actual_model", "source_ip", "user_agent", "cliproxy_account",
    "request_id", "reasoning_tokens", "agent", "source", "msg_id",
]


def _apply_original(conn: sqlite3.Connection, names: list[str], ddl: list[str]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                 "name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)")
    for name, sql in zip(names, ddl, strict=True):
        conn.executescript(sql)
        conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                     (name, "2026-03-01 10:00:00"))


def original_insert(conn: sqlite3.Connection, daily: bool = True, **row: Any) -> int:
    """Insert a row the way the original did, and (if *daily*) its daily_usage upsert."""
    values = {"tool": "opencode", "client_id": "opencode-sess", "streamed": 1,
              "prompt_tokens": 0, "completion_tokens": 0, "cache_creation_tokens": 0,
              "cache_read_tokens": 0, "total_tokens": 0, "cost_usd": 0.0, "incomplete": 0,
              "source": "proxy", **row}
    cols = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    cur = conn.execute(f"INSERT INTO request_logs ({cols}) VALUES ({marks})",
                       tuple(values.values()))
    if daily:
        conn.execute(
            "INSERT INTO daily_usage VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(day, provider, model) DO UPDATE SET "
            "request_count = request_count + 1, prompt_tokens = prompt_tokens + ?, "
            "completion_tokens = completion_tokens + ?, "
            "cache_creation_tokens = cache_creation_tokens + ?, "
            "cache_read_tokens = cache_read_tokens + ?, total_tokens = total_tokens + ?, "
            "cost_usd = cost_usd + ?",
            (values["started_at"][:10], values["provider"], values["model"],
             *([values[k] for k in ("prompt_tokens", "completion_tokens",
                                    "cache_creation_tokens", "cache_read_tokens",
                                    "total_tokens", "cost_usd")] * 2)),
        )
    assert cur.lastrowid is not None
    return cur.lastrowid


def build_legacy_db(path: Path) -> None:
    """An original database from before 005: no lifecycle, UNIQUE msg_id index."""
    conn = sqlite3.connect(path, isolation_level=None)
    _apply_original(conn, SNAPSHOT_NAMES[:4], _SNAPSHOT_DDL[:4])
    common: dict[str, Any] = {"provider": "anthropic", "model": "claude-sonnet-4",
                              "path": "/v1/messages"}
    original_insert(conn, **common, status=200, prompt_tokens=100, completion_tokens=20,
                    total_tokens=120, cost_usd=0.0006, latency_ms=900,
                    started_at="2026-02-01T09:00:00.000Z", finished_at="2026-02-01T09:00:00.900Z",
                    msg_id="m-1", request_id="legacy-ok")
    original_insert(conn, **common, status=502, incomplete=1, error_code="upstream_error",
                    latency_ms=30, started_at="2026-02-01T09:05:00.000Z",
                    finished_at="2026-02-01T09:05:00.030Z", request_id="legacy-502")
    # Finished but never given a finished_at: finalized_at must fall back to started_at.
    original_insert(conn, **common, status=200, started_at="2026-02-02T11:00:00.000Z",
                    request_id="legacy-free")
    original_insert(conn, provider="openai", model="gpt-4o", path="/v1/chat/completions",
                    status=429, started_at="2026-02-02T12:00:00.000Z",
                    finished_at="2026-02-02T12:00:00.010Z", request_id="legacy-429")
    conn.close()


def build_snapshot_db(path: Path) -> None:
    """An original v0.1.0 database (001-007) with typical history, including its bugs:
    a boot-recovered row missing from daily_usage, and a stale pending row."""
    conn = sqlite3.connect(path, isolation_level=None)
    _apply_original(conn, SNAPSHOT_NAMES, _SNAPSHOT_DDL)
    base: dict[str, Any] = {"provider": "openai", "model": "gpt-4o", "path": "/v1/chat/completions"}
    done: dict[str, Any] = {"lifecycle_status": "completed", "cost_status": "ok"}
    original_insert(conn, **base, **done, status=200, prompt_tokens=10, completion_tokens=5,
                    total_tokens=15, cache_read_tokens=2, reasoning_tokens=1,
                    cost_usd=7.25e-05, latency_ms=300, started_at="2026-03-02T08:00:00.000Z",
                    finished_at="2026-03-02T08:00:00.300Z",
                    finalized_at="2026-03-02T08:00:00.300Z", msg_id="dup", request_id="s-ok")
    # The same msg_id on a second row: legitimate, allowed since 007.
    original_insert(conn, **base, **done, status=200, prompt_tokens=3, completion_tokens=1,
                    total_tokens=4, cost_usd=1.75e-05, started_at="2026-03-02T08:01:00.000Z",
                    finished_at="2026-03-02T08:01:00.100Z",
                    finalized_at="2026-03-02T08:01:00.100Z", msg_id="dup", request_id="s-dup")
    original_insert(conn, **base, daily=False, lifecycle_status="aborted",
                    cost_status="pending", incomplete=1, error_message="boot-recovery",
                    started_at="2026-03-02T09:00:00.000Z",
                    finished_at="2026-03-02T09:30:00.000Z",
                    finalized_at="2026-03-02T09:30:00.000Z", request_id="s-recovered")
    original_insert(conn, **base, daily=False, lifecycle_status="pending",
                    cost_status="unresolved", started_at="2026-03-03T10:00:00.000Z",
                    request_id="s-stale")
    conn.execute("INSERT INTO account_subscriptions (cliproxy_account, subscription_code) "
                 "VALUES ('me@example.com', 'claude-max')")
    conn.execute("INSERT INTO cost_audit (request_log_id, model, provider, source, "
                 "base_cost_usd) VALUES (1, 'gpt-4o', 'openai', 'pricing', 7.25e-05)")
    conn.close()


def build_newer_db(path: Path) -> None:
    """An original v0.2.x database: snapshot plus 002_quota…, 008-013 (UNIQUE msg_id
    again, account_subscriptions dropped, api_keys, proxy_api_key_id, actual_provider)."""
    build_snapshot_db(path)
    conn = sqlite3.connect(path, isolation_level=None)
    # 010 would refuse the duplicate msg_id; the original's own DB could not have it.
    conn.execute("UPDATE request_logs SET msg_id = 'dup-2' WHERE request_id = 's-dup'")
    _apply_original(conn, list(ORIG_NEWER), list(ORIG_NEWER.values()))
    conn.execute("INSERT INTO api_keys (key_hash, key_prefix, name, allowed_providers) "
                 "VALUES ('ab' || hex(zeroblob(31)), 'abcd1234', 'laptop', '[\"openai\"]')")
    original_insert(conn, provider="openai", model="gpt-5.4", path="/v1/responses",
                    lifecycle_status="completed", cost_status="ok", status=200,
                    prompt_tokens=50, completion_tokens=50, total_tokens=100, cost_usd=0.001,
                    started_at="2026-06-01T00:00:00.000Z", finished_at="2026-06-01T00:00:01.000Z",
                    finalized_at="2026-06-01T00:00:01.000Z", proxy_api_key_id=1,
                    actual_provider="openai", request_id="n-key")
    conn.execute("INSERT INTO quota_snapshots (timestamp, provider, account, quota_type, "
                 "used_pct, model) VALUES ('2026-06-01T00:00:00.000Z', 'codex', 'me', "
                 "'5h', 42.0, 'gpt-5.4')")
    conn.close()


ORIGINAL_BUILDERS: dict[str, Callable[[Path], None]] = {
    "legacy": build_legacy_db, "snapshot": build_snapshot_db, "newer": build_newer_db,
}


def raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn

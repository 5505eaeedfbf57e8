"""``agent-cli-proxy backfill-costs`` as a real process against a real database file."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy.storage import (
    Finalization,
    PendingRow,
    daily_usage_mismatches,
    finalize,
    insert_pending,
    iso_utc,
    open_database,
)
from agent_cli_proxy.usage.model import Usage

MODELS_DEV: dict[str, Any] = {
    "openai": {"id": "openai", "models": {
        "gpt-4o": {"id": "gpt-4o", "cost": {"input": 2.5, "output": 10}}}},
}
PLAIN = Usage(prompt_tokens=1000, completion_tokens=500)  # gpt-4o: $0.0075
SUMMARY = re.compile(
    r"^backfill-costs: scanned=(\d+) changed=(\d+) ok=(\d+) pending=(\d+) unsupported=(\d+) "
    r"old_total=\$(\d+\.\d{6}) new_total=\$(\d+\.\d{6})( \(dry run, nothing written\))?$")


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    # A clean environment: no user env file, no inherited settings.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data")}
    env.update(values)
    return env


def backfill(tmp_path: Path, *args: str, env_file: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agent_cli_proxy", "backfill-costs"]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    return subprocess.run([*command, *args], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=60)


def summary(result: subprocess.CompletedProcess[str]) -> tuple[Any, ...]:
    match = SUMMARY.match(result.stdout.strip())
    assert match, result.stdout + result.stderr
    *counts, old, new, dry = match.groups()
    return (*map(int, counts), float(old), float(new), dry is not None)


def add_row(db_path: Path, model: str, started_at: str) -> None:
    db = open_database(db_path)
    try:
        row_id = insert_pending(db, PendingRow(
            provider="openai", model=model, requested_model=model, tool="codex",
            client_id="codex-1", path="/v1/chat/completions", streamed=False,
            started_at=started_at, request_id="r", meta_json=None, user_agent=None,
            source_ip=None, agent=None, msg_id=None, session_id=None, identify_rule=None))
        assert finalize(db, row_id, Finalization(
            lifecycle_status="completed", status=200, model=model, actual_model=model,
            usage=PLAIN, streamed=False, latency_ms=10, finished_at=started_at,
            cost_status="pending"))
    finally:
        db.close()


def table_dump(db_path: Path) -> list[list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db_path)
    try:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("request_logs", "daily_usage", "cost_audit", "schema_migrations")]
    finally:
        conn.close()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """An env file, a pricing cache in the server's format, and a database with two recent
    calls (one to a model with no price) and one a month old."""
    db_path, cache = tmp_path / "state" / "proxy.db", tmp_path / "state" / "pricing.json"
    env_file = tmp_path / "proxy.env"
    env_file.write_text(f"PROXY_LOCAL_OK=1\nDB_PATH={db_path}\nPRICING_CACHE_PATH={cache}\n")
    now = time.time()
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"version": 1, "fetched_at": now - 60,
                                 "url": "https://models.dev/api.json", "data": MODELS_DEV}))
    add_row(db_path, "gpt-4o", iso_utc(now - 3600))
    add_row(db_path, "mystery-model-1", iso_utc(now - 3600))
    add_row(db_path, "gpt-4o", iso_utc(now - 30 * 86_400))
    return env_file, db_path


def test_dry_run_then_backfill_then_all(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    env_file, db_path = setup
    before = table_dump(db_path)

    dry = backfill(tmp_path, "--dry-run", env_file=env_file)
    assert dry.returncode == 0, dry.stderr
    assert summary(dry) == (2, 1, 1, 1, 0, 0.0, 0.0075, True)
    assert table_dump(db_path) == before

    real = backfill(tmp_path, env_file=env_file)
    assert real.returncode == 0, real.stderr
    assert summary(real) == (2, 1, 1, 1, 0, 0.0, 0.0075, False)
    assert real.stderr == ""  # the cache was used: no note about built-in prices

    again = backfill(tmp_path, env_file=env_file)
    assert summary(again) == (1, 0, 0, 1, 0, 0.0, 0.0, False)

    everything = backfill(tmp_path, "--all", env_file=env_file)
    # --all drops the look-back window: the month-old call is priced too; rows already
    # priced are not looked at.
    assert summary(everything) == (2, 1, 1, 1, 0, 0.0, 0.0075, False)

    recomputed = backfill(tmp_path, "--all", "--recompute", env_file=env_file)
    # Same prices: every row is re-priced, none changes.
    assert summary(recomputed) == (3, 0, 2, 1, 0, 0.015, 0.015, False)

    db = open_database(db_path)
    try:
        assert daily_usage_mismatches(db) == []
        audits = db.reader().execute("SELECT COUNT(*) FROM cost_audit").fetchone()[0]
        assert audits == 3 + 2  # one per finalize, one per priced row
    finally:
        db.close()


def test_without_a_cache_the_builtin_prices_are_used(tmp_path: Path,
                                                     setup: tuple[Path, Path]) -> None:
    env_file, db_path = setup
    (db_path.parent / "pricing.json").unlink()
    env_file.write_text(env_file.read_text() +
                        'PRICING_OVERRIDES_JSON={"mystery-model-1":{"input":1,"output":2}}\n')
    result = backfill(tmp_path, env_file=env_file)
    assert result.returncode == 0, result.stderr
    assert "built-in prices" in result.stderr
    scanned, changed, ok, pending, *_ = summary(result)
    assert scanned == 2 and changed == ok >= 1 and ok + pending == 2
    conn = sqlite3.connect(db_path)
    try:
        # The override priced the model no table lists.
        assert conn.execute("SELECT cost_status, cost_usd FROM request_logs WHERE model = "
                            "'mystery-model-1'").fetchone() == ("ok", 0.002)
    finally:
        conn.close()


def test_recompute_is_refused_on_builtin_prices(tmp_path: Path,
                                                setup: tuple[Path, Path]) -> None:
    env_file, db_path = setup
    (db_path.parent / "pricing.json").unlink()
    before = table_dump(db_path)
    refused = backfill(tmp_path, "--recompute", env_file=env_file)
    assert refused.returncode == 1
    assert "refusing --recompute on the built-in prices" in refused.stderr
    assert table_dump(db_path) == before
    dry = backfill(tmp_path, "--recompute", "--dry-run", env_file=env_file)
    assert dry.returncode == 0, dry.stderr


def test_bad_configuration_exits_78(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    env_file, db_path = setup
    before = table_dump(db_path)
    env_file.write_text(env_file.read_text() + "COST_BACKFILL_CHUNK_SIZE=0\n")
    result = backfill(tmp_path, env_file=env_file)
    assert result.returncode == 78
    assert "COST_BACKFILL_CHUNK_SIZE" in result.stderr
    assert result.stdout == ""
    missing = backfill(tmp_path, env_file=tmp_path / "missing.env")
    assert missing.returncode == 78
    assert table_dump(db_path) == before


def test_unreadable_or_missing_database_exits_1(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database, not even close" * 100)
    env_file = tmp_path / "proxy.env"
    env_file.write_text(f"PROXY_LOCAL_OK=1\nDB_PATH={garbage}\n"
                        f"PRICING_CACHE_PATH={tmp_path / 'none.json'}\n")
    result = backfill(tmp_path, env_file=env_file)
    assert result.returncode == 1
    assert f"cannot open database {garbage}" in result.stderr
    assert "Traceback" not in result.stderr

    env_file.write_text(f"PROXY_LOCAL_OK=1\nDB_PATH={tmp_path / 'nowhere' / 'proxy.db'}\n")
    result = backfill(tmp_path, env_file=env_file)
    assert result.returncode == 1
    assert "no database at" in result.stderr
    assert not (tmp_path / "nowhere").exists()  # not created as a side effect

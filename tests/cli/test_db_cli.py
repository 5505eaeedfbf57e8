"""``agent-cli-proxy db init|migrate|check`` on real database files."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from agent_cli_proxy.storage import open_database
from agent_cli_proxy.storage.migrations import MIGRATIONS
from tests.cli.cli_helpers import invoke, private_home
from tests.storage.original_db import build_snapshot_db

ALL = [m.name for m in MIGRATIONS]


@pytest.fixture
def env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    private_home(tmp_path, monkeypatch)
    path = tmp_path / "proxy.env"
    path.write_text(f"CLI_PROXY_API_URL=http://127.0.0.1:9\n"
                    f"DB_PATH={tmp_path / 'state' / 'deeper' / 'proxy.db'}\n")
    return path


def db_path(env_file: Path) -> Path:
    return env_file.parent / "state" / "deeper" / "proxy.db"


def files_of(path: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime_ns) of the database and its side files."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.parent.iterdir() if p.name.startswith(path.name)}


def test_init_creates_a_private_database_with_every_migration(env_file: Path) -> None:
    result = invoke(["db", "init", "--env-file", str(env_file)])
    assert result.exit_code == 0, result.output
    path = db_path(env_file)
    assert result.output.startswith(f"created {path}: applied {', '.join(ALL)}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = invoke(["db", "init", "--env-file", str(env_file)])
    assert again.exit_code == 0
    assert again.output == f"migrated {path}: schema already current, nothing applied\n"


def test_migrate_names_what_it_applied(env_file: Path) -> None:
    path = db_path(env_file)
    path.parent.mkdir(parents=True)
    build_snapshot_db(path)  # the original's database: none of our migrations yet
    result = invoke(["db", "migrate", "--env-file", str(env_file)])
    assert result.exit_code == 0, result.output
    assert result.output == f"migrated {path}: applied {', '.join(ALL)}\n"
    nothing = invoke(["db", "migrate", "--env-file", str(env_file)])
    assert "nothing applied" in nothing.output


def test_migrate_refuses_a_missing_database(env_file: Path) -> None:
    result = invoke(["db", "migrate", "--env-file", str(env_file)])
    assert result.exit_code == 1
    assert "no database" in result.output and "db init" in result.output
    assert not db_path(env_file).parent.exists()


def test_check_reports_and_changes_nothing(env_file: Path) -> None:
    path = db_path(env_file)
    path.parent.mkdir(parents=True)
    open_database(path).close()
    before = files_of(path)
    assert set(before) == {"proxy.db"}  # a clean close leaves no -wal or -shm
    result = invoke(["db", "check", "--env-file", str(env_file)])
    assert result.exit_code == 0, result.output
    assert f"schema version: {len(ALL)} of {len(ALL)}" in result.output
    assert "pending migrations: none" in result.output
    assert "integrity: ok" in result.output
    assert files_of(path) == before
    report = json.loads(invoke(["db", "check", "--json", "--env-file", str(env_file)]).output)
    assert report["ok"] is True and report["pending"] == [] and report["applied"] == ALL
    assert report["integrity"] == ["ok"] and report["schemaVersion"] == len(ALL)


def test_check_beside_an_open_database(env_file: Path) -> None:
    path = db_path(env_file)
    path.parent.mkdir(parents=True)
    db = open_database(path)
    try:
        with db.write() as conn:
            conn.execute("INSERT INTO schema_migrations (name) VALUES ('py-9999-future')")
        result = invoke(["db", "check", "--json", "--env-file", str(env_file)])
    finally:
        db.close()
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["unknown"] == ["py-9999-future"]


def test_check_lists_pending_migrations(env_file: Path) -> None:
    path = db_path(env_file)
    path.parent.mkdir(parents=True)
    build_snapshot_db(path)
    result = invoke(["db", "check", "--env-file", str(env_file)])
    assert result.exit_code == 0, result.output  # pending is not a fault: serve migrates
    assert f"schema version: 0 of {len(ALL)}" in result.output
    assert "pending migrations: " + ", ".join(ALL) in result.output
    assert "original's migrations recorded: 7" in result.output


def test_check_fails_on_a_missing_database(env_file: Path) -> None:
    result = invoke(["db", "check", "--env-file", str(env_file)])
    assert result.exit_code == 1 and "no database" in result.output
    assert not db_path(env_file).parent.exists()


def test_check_fails_on_a_file_that_is_not_a_database(env_file: Path) -> None:
    path = db_path(env_file)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not SQLite " * 300)
    result = invoke(["db", "check", "--env-file", str(env_file)])
    assert result.exit_code == 1
    assert "cannot be read: file is not a database" in result.output


def corrupt_a_table(path: Path) -> None:
    """Overwrite the b-tree page of request_logs' first index with garbage."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND "
                        "tbl_name = 'request_logs' ORDER BY name LIMIT 1").fetchone()[0]
    conn.close()
    with open(path, "r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\x0d" + b"\xff" * 40)  # a leaf page claiming cells it does not have


def test_check_fails_on_a_damaged_database(env_file: Path) -> None:
    path = db_path(env_file)
    path.parent.mkdir(parents=True)
    open_database(path).close()
    corrupt_a_table(path)
    result = invoke(["db", "check", "--json", "--env-file", str(env_file)])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False and report["error"] is None
    assert report["applied"] == ALL  # what could be read is still reported
    assert report["integrity"] != ["ok"] and "malformed" in " ".join(report["integrity"])
    text = invoke(["db", "check", "--env-file", str(env_file)])
    assert text.exit_code == 1 and "integrity: FAILED" in text.output


def test_bad_configuration_exits_78(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private_home(tmp_path, monkeypatch)
    env = tmp_path / "bad.env"
    env.write_text("CLI_PROXY_API_URL=http://127.0.0.1:9\nPROXY_PORT=huge\n")
    result = invoke(["db", "check", "--env-file", str(env)])
    assert result.exit_code == 78 and "PROXY_PORT" in result.output

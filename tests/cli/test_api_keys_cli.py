"""``agent-cli-proxy api-keys`` as a real process against a real database file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent_cli_proxy.storage import api_keys as store
from agent_cli_proxy.storage import open_database

KEY_LINE = re.compile(r"^key: (acp_[0-9a-f]{64})$", re.MULTILINE)
ID_LINE = re.compile(r"^id: (\d+)$", re.MULTILINE)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    db_path = tmp_path / "data" / "proxy.db"
    open_database(db_path).close()  # what the server does on its first start
    path = tmp_path / "proxy.env"
    path.write_text(f"CLI_PROXY_API_URL=http://127.0.0.1:9\nDB_PATH={db_path}\n")
    return path


def run(tmp_path: Path, *args: str, env_file: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    # A clean environment: no user env file, no inherited settings.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    command = [sys.executable, "-m", "agent_cli_proxy", "api-keys", *args]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def db_path_of(env_file: Path) -> Path:
    return Path(env_file.read_text().split("DB_PATH=")[1].strip())


def test_create_prints_the_key_once_and_it_verifies(tmp_path: Path, env_file: Path) -> None:
    result = run(tmp_path, "create", "laptop", "--provider", "anthropic", "--provider",
                 "OpenAI", "--account", "me@example.com", env_file=env_file)
    assert result.returncode == 0, result.stderr
    key_match, id_match = KEY_LINE.search(result.stdout), ID_LINE.search(result.stdout)
    assert key_match and id_match
    assert "cannot be shown again" in result.stderr
    key, key_id = key_match.group(1), int(id_match.group(1))
    db = open_database(db_path_of(env_file))
    try:
        found = store.verify_key(db, key)
        assert found is not None and found.id == key_id and found.name == "laptop"
        assert found.allowed_providers == ("anthropic", "openai")
        assert found.allowed_accounts == ("me@example.com",)
    finally:
        db.close()

    listed = run(tmp_path, "list", env_file=env_file)
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout and key[4:12] in listed.stdout
    header, line = listed.stdout.splitlines()
    assert header.split()[:3] == ["ID", "PREFIX", "NAME"]
    assert line.split()[:4] == [str(key_id), key[4:12], "laptop", "active"]
    assert "anthropic,openai" in line and "me@example.com" in line


def test_create_json_and_list_json(tmp_path: Path, env_file: Path) -> None:
    created = run(tmp_path, "create", "ci", "--json", env_file=env_file)
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    assert re.fullmatch(r"acp_[0-9a-f]{64}", record["key"])
    assert record["allowedProviders"] is None and record["allowedAccounts"] is None
    listed = run(tmp_path, "list", "--json", env_file=env_file)
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body == {"apiKeys": [{k: v for k, v in record.items() if k != "key"}]}


def test_revoke_then_rotate_refused(tmp_path: Path, env_file: Path) -> None:
    key_id = ID_LINE.search(run(tmp_path, "create", "temp", env_file=env_file).stdout)
    assert key_id
    revoked = run(tmp_path, "revoke", key_id.group(1), env_file=env_file)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked API key {key_id.group(1)} (temp)"
    again = run(tmp_path, "revoke", key_id.group(1), env_file=env_file)
    assert again.returncode == 0 and "already revoked" in again.stdout
    listed = run(tmp_path, "list", env_file=env_file)
    assert "revoked" in listed.stdout.splitlines()[1]
    rotate = run(tmp_path, "rotate", key_id.group(1), env_file=env_file)
    assert rotate.returncode == 1 and "revoked" in rotate.stderr


def test_rotate_prints_a_new_key(tmp_path: Path, env_file: Path) -> None:
    first = run(tmp_path, "create", "bot", env_file=env_file).stdout
    old, key_id = KEY_LINE.search(first), ID_LINE.search(first)
    assert old and key_id
    rotated = run(tmp_path, "rotate", key_id.group(1), env_file=env_file)
    assert rotated.returncode == 0, rotated.stderr
    new = KEY_LINE.search(rotated.stdout)
    assert new and new.group(1) != old.group(1)
    db = open_database(db_path_of(env_file))
    try:
        assert store.verify_key(db, old.group(1)) is None
        found = store.verify_key(db, new.group(1))
        assert found is not None and found.id == int(key_id.group(1))
    finally:
        db.close()


def test_unknown_id_and_bad_input_exit_1_or_2(tmp_path: Path, env_file: Path) -> None:
    for command in ("revoke", "rotate"):
        result = run(tmp_path, command, "42", env_file=env_file)
        assert result.returncode == 1 and "no API key with id 42" in result.stderr, command
    for name in ("", "   ", "x" * 101):
        result = run(tmp_path, "create", name, env_file=env_file)
        assert result.returncode == 1 and "name must" in result.stderr
    # Usage errors are click's: exit 2, nothing written.
    bad_usage: list[tuple[str, ...]] = [("create", "k", "--provider", "claude"),
                                        ("revoke", "abc"), ("revoke", "0"), ("create",)]
    for args in bad_usage:
        assert run(tmp_path, *args, env_file=env_file).returncode == 2, args
    assert json.loads(run(tmp_path, "list", "--json", env_file=env_file).stdout) == \
        {"apiKeys": []}


def test_missing_database_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "proxy.db"
    env_file = tmp_path / "proxy.env"
    env_file.write_text(f"CLI_PROXY_API_URL=http://127.0.0.1:9\nDB_PATH={missing}\n")
    for args in (("create", "k"), ("list",), ("revoke", "1")):
        result = run(tmp_path, *args, env_file=env_file)
        assert result.returncode == 1, args
        assert f"no database at {missing}" in result.stderr
    assert not missing.exists() and not missing.parent.exists()


def test_bad_configuration_exits_78(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("CLI_PROXY_API_URL=http://127.0.0.1:9\nPROXY_PORT=banana\n")
    result = run(tmp_path, "list", env_file=env_file)
    assert result.returncode == 78
    assert "PROXY_PORT" in result.stderr

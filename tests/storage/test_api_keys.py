"""The api_keys repository: create, verify, list, update, rotate, revoke, usage."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy.storage import (
    Database,
    Finalization,
    PendingRow,
    finalize,
    insert_pending,
    iso_utc,
)
from agent_cli_proxy.storage import api_keys as store
from agent_cli_proxy.usage.model import Usage

NOW = "2026-11-21T18:59:31.701Z"
NOW_S = 1_795_287_571.701  # NOW as Unix seconds
KEY_SHAPE = re.compile(r"acp_[0-9a-f]{64}")


def _get(db: Database, key_id: int) -> dict[str, Any]:
    record = store.get_key(db, key_id)
    assert record is not None
    return record


def _create(db: Database, name: str = "ci", **limits: list[str] | None
            ) -> tuple[dict[str, Any], str]:
    return store.create_key(db, name, allowed_providers=limits.get("providers"),
                            allowed_accounts=limits.get("accounts"), now_iso=NOW)


def test_create_returns_the_key_once_and_stores_only_its_hash(db: Database,
                                                              db_path: Path) -> None:
    record, key = _create(db, "laptop", providers=["anthropic"], accounts=["a@example.com"])
    assert KEY_SHAPE.fullmatch(key)
    assert record == {
        "id": 1, "keyPrefix": key[4:12], "name": "laptop", "createdAt": NOW,
        "revokedAt": None, "lastUsedAt": None, "requestCount": 0,
        "allowedAccounts": ["a@example.com"], "allowedProviders": ["anthropic"],
    }
    conn = sqlite3.connect(db_path)
    try:
        stored = conn.execute("SELECT key_hash, key_prefix FROM api_keys").fetchone()
    finally:
        conn.close()
    assert stored == (hashlib.sha256(key.encode()).hexdigest(), key[4:12])
    # Neither the key nor its random part is in any file: the WAL, then the checkpointed db.
    for close in (False, True):
        if close:
            db.close()
        for path in db_path.parent.iterdir():
            data = path.read_bytes()
            assert key.encode() not in data and key[4:].encode() not in data, path


def test_every_key_is_new(db: Database) -> None:
    keys = {_create(db, f"k{i}")[1] for i in range(20)}
    assert len(keys) == 20


def test_verify_finds_live_keys_only(db: Database) -> None:
    record, key = _create(db, providers=["openai", "gemini"])
    found = store.verify_key(db, key)
    assert found == store.KeyRecord(id=record["id"], name="ci",
                                    key_prefix=key[4:12],
                                    allowed_providers=("openai", "gemini"),
                                    allowed_accounts=None)
    assert found.allows_provider("openai") and not found.allows_provider("anthropic")
    assert store.verify_key(db, f"  {key}\n") == found  # header whitespace
    for wrong in ("", key[:-1], key + "0", key.upper(), key[4:], "acp_" + "0" * 64,
                  "x" * 10_000, "\ud800"):
        assert store.verify_key(db, wrong) is None, wrong


def test_unrestricted_key_allows_every_provider(db: Database) -> None:
    _, key = _create(db)
    found = store.verify_key(db, key)
    assert found is not None and found.allowed_providers is None
    assert all(found.allows_provider(p) for p in ("openai", "anthropic", "gemini"))


def test_revoked_key_fails_at_once_and_keeps_first_revocation(db: Database) -> None:
    record, key = _create(db)
    key_id = int(record["id"])
    assert store.verify_key(db, key) is not None
    assert store.revoke_key(db, key_id, NOW) is True
    assert store.verify_key(db, key) is None
    assert store.revoke_key(db, key_id, "2030-01-01T00:00:00.000Z") is True
    assert _get(db, key_id)["revokedAt"] == NOW
    assert store.revoke_key(db, 999, NOW) is False
    assert store.revoke_key(db, 2**70, NOW) is False


def test_rotate_replaces_the_secret_keeps_the_rest(db: Database) -> None:
    record, old = _create(db, "bot", providers=["anthropic"])
    key_id = int(record["id"])
    rotated = store.rotate_key(db, key_id, NOW)
    assert rotated is not None
    new_record, new = rotated
    assert new != old and KEY_SHAPE.fullmatch(new)
    assert new_record["keyPrefix"] == new[4:12]
    assert {k: v for k, v in new_record.items() if k != "keyPrefix"} == \
        {k: v for k, v in record.items() if k != "keyPrefix"}
    assert store.verify_key(db, old) is None
    found = store.verify_key(db, new)
    assert found is not None and found.id == key_id and found.allowed_providers == ("anthropic",)
    assert store.rotate_key(db, 999, NOW) is None
    store.revoke_key(db, key_id, NOW)
    with pytest.raises(store.KeyRevokedError):
        store.rotate_key(db, key_id, NOW)
    assert store.verify_key(db, new) is None


def test_update_changes_only_what_is_given(db: Database) -> None:
    record, key = _create(db, "one", providers=["openai"], accounts=["a"])
    key_id = int(record["id"])
    updated = store.update_key(db, key_id, name="  two ")
    assert updated is not None
    assert (updated["name"], updated["allowedProviders"], updated["allowedAccounts"]) == \
        ("two", ["openai"], ["a"])
    updated = store.update_key(db, key_id, allowed_providers=["gemini", "gemini", "openai"])
    assert updated is not None and updated["allowedProviders"] == ["gemini", "openai"]
    updated = store.update_key(db, key_id, allowed_accounts=None)
    assert updated is not None and updated["allowedAccounts"] is None
    assert updated["name"] == "two" and updated["allowedProviders"] == ["gemini", "openai"]
    assert store.update_key(db, key_id) == store.get_key(db, key_id)
    found = store.verify_key(db, key)
    assert found is not None and found.allowed_providers == ("gemini", "openai")
    assert store.update_key(db, 999, name="x") is None


@pytest.mark.parametrize("bad", ["", "   ", "x" * 101, "a\nb", "tab\there", "esc\x1b[2J"])
def test_bad_names_are_refused(db: Database, bad: str) -> None:
    with pytest.raises(ValueError):
        _create(db, bad)
    record, _ = _create(db, "ok")
    with pytest.raises(ValueError):
        store.update_key(db, int(record["id"]), name=bad)
    assert store.list_keys(db)[0]["name"] == "ok"


def test_empty_allow_list_is_refused(db: Database) -> None:
    with pytest.raises(ValueError):
        _create(db, providers=[])
    with pytest.raises(ValueError):
        _create(db, accounts=[""])


def test_sql_looking_names_are_stored_literally(db: Database) -> None:
    names = ["x'); DROP TABLE api_keys; --", "Robert'); --", '" OR 1=1 --', "ünïcödé 🔑"]
    for name in names:
        _create(db, name, accounts=["a'; DELETE FROM request_logs; --"])
    listed = store.list_keys(db)
    assert [r["name"] for r in listed] == names
    assert listed[0]["allowedAccounts"] == ["a'; DELETE FROM request_logs; --"]


def test_list_includes_revoked_keys_and_request_counts(
        db: Database, make_pending: Callable[..., PendingRow]) -> None:
    first, _ = _create(db, "first")
    second, _ = _create(db, "second")
    store.revoke_key(db, int(second["id"]), NOW)
    for _ in range(3):
        insert_pending(db, make_pending(proxy_api_key_id=first["id"]))
    insert_pending(db, make_pending())  # no key
    listed = store.list_keys(db)
    assert [(r["name"], r["requestCount"], r["revokedAt"]) for r in listed] == [
        ("first", 3, None), ("second", 0, NOW)]


def test_usage_sums_the_keys_calls(db: Database,
                                   make_pending: Callable[..., PendingRow]) -> None:
    record, _ = _create(db)
    key_id = int(record["id"])
    assert store.key_usage(db, key_id) == {"id": key_id, "requestCount": 0, "totalTokens": 0,
                                           "totalCostUsd": 0.0}
    for cost in (0.25, 0.5):
        row_id = insert_pending(db, make_pending(proxy_api_key_id=key_id))
        assert finalize(db, row_id, Finalization(
            lifecycle_status="completed", status=200, model="gpt-4o", actual_model=None,
            usage=Usage(prompt_tokens=100, completion_tokens=20), streamed=False,
            latency_ms=5, finished_at=NOW, cost_usd=cost, cost_status="ok"))
    insert_pending(db, make_pending(proxy_api_key_id=key_id))  # still pending: counted
    insert_pending(db, make_pending())
    assert store.key_usage(db, key_id) == {"id": key_id, "requestCount": 3,
                                           "totalTokens": 240, "totalCostUsd": 0.75}
    assert store.key_usage(db, 999) is None
    assert store.key_usage(db, 2**64) is None


def test_pending_row_records_the_key(db: Database, make_pending: Callable[..., PendingRow],
                                     db_path: Path) -> None:
    record, _ = _create(db)
    with_key = insert_pending(db, make_pending(proxy_api_key_id=record["id"]))
    without = insert_pending(db, make_pending())
    conn = sqlite3.connect(db_path)
    try:
        rows = dict(conn.execute("SELECT id, proxy_api_key_id FROM request_logs").fetchall())
    finally:
        conn.close()
    assert rows == {with_key: record["id"], without: None}


def test_last_used_is_written_at_most_once_a_minute(db: Database) -> None:
    record, key = _create(db)
    key_id = int(record["id"])
    assert store.verify_key(db, key) is not None  # no clock given: no write
    assert _get(db, key_id)["lastUsedAt"] is None

    writes: list[str] = []
    original = db.write

    def counting_write() -> Any:
        writes.append("w")
        return original()

    db.write = counting_write  # type: ignore[method-assign]
    try:
        for offset in (0.0, 1.0, 30.0, 59.9):
            assert store.verify_key(db, key, now_s=NOW_S + offset) is not None
        assert len(writes) == 1
        assert _get(db, key_id)["lastUsedAt"] == iso_utc(NOW_S)
        assert store.verify_key(db, key, now_s=NOW_S + 61) is not None
        assert len(writes) == 2
        assert _get(db, key_id)["lastUsedAt"] == iso_utc(NOW_S + 61)
    finally:
        db.write = original  # type: ignore[method-assign]


def test_keys_written_by_the_original_still_verify(db: Database) -> None:
    # The original: 64 hex characters, no prefix, created_at from datetime('now'),
    # allow-lists as JSON text, an empty array meaning "no restriction".
    legacy = "ab" * 32
    with db.write() as conn:
        conn.execute(
            "INSERT INTO api_keys (key_hash, key_prefix, name, created_at, last_used_at,"
            " allowed_providers, allowed_accounts) VALUES (?, ?, 'old', '2026-01-01 10:00:00',"
            " '2026-01-02 10:00:00', '[]', '[\"acc\"]')",
            (hashlib.sha256(legacy.encode()).hexdigest(), legacy[:8]))
    found = store.verify_key(db, legacy, now_s=NOW_S)
    assert found is not None and found.allowed_providers is None
    assert found.allowed_accounts == ("acc",)
    record = store.list_keys(db)[0]
    assert record["keyPrefix"] == "abababab" and record["lastUsedAt"] == iso_utc(NOW_S)


def test_unreadable_allow_list_allows_nothing(db: Database) -> None:
    _, key = _create(db)
    with db.write() as conn:
        conn.execute("UPDATE api_keys SET allowed_providers = 'openai'")
    found = store.verify_key(db, key)
    assert found is not None and found.allowed_providers == ()
    assert not found.allows_provider("openai")
    assert store.list_keys(db)[0]["allowedProviders"] == []


def test_any_active_keys_follows_every_writer(db: Database, db_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(store, "_monotonic", lambda: clock[0])

    def later() -> None:  # another process's commits are looked for this often
        clock[0] += store.FOREIGN_RECHECK_S

    now = "2026-11-21T00:00:00.000Z"
    assert store.any_active_keys(db) is False
    assert store.any_active_keys(db) is False  # known without a query now
    record, _ = store.create_key(db, "a", allowed_providers=None, allowed_accounts=None,
                                 now_iso=now)
    assert store.any_active_keys(db) is True
    assert store.revoke_key(db, record["id"], now)
    assert store.any_active_keys(db) is False
    # Another process: the original, or the CLI with its own connection.
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("INSERT INTO api_keys (key_hash, key_prefix, name) VALUES ('h','p','x')")
        assert store.any_active_keys(db) is False  # not looked for yet
        later()
        assert store.any_active_keys(db) is True
        other.execute("UPDATE api_keys SET revoked_at = 'now' WHERE key_hash = 'h'")
        later()
        assert store.any_active_keys(db) is False
        # While this process writes, the check reads the table instead of waiting.
        later()
        with db._write_lock:
            other_thread: list[bool] = []
            t = threading.Thread(target=lambda: other_thread.append(store.any_active_keys(db)))
            t.start()
            t.join()
            assert other_thread == [False]
            other.execute("UPDATE api_keys SET revoked_at = NULL WHERE key_hash = 'h'")
            later()
            t = threading.Thread(target=lambda: other_thread.append(store.any_active_keys(db)))
            t.start()
            t.join()
            assert other_thread == [False, True]
        # In a write transaction of this process, the data_version read as it began
        # stands in: nobody else can commit before it ends.
        assert store.any_active_keys(db) is True  # the version that goes with it
        later()
        with db.write():
            assert _checked_in_thread(db, monkeypatch, table_read=False) is True
        other.execute("UPDATE api_keys SET revoked_at = 'now' WHERE key_hash = 'h'")
        later()
        with db.write():  # began after the foreign commit: the table is read again
            assert _checked_in_thread(db, monkeypatch, table_read=True) is False
    finally:
        other.close()
    assert store.any_active_keys(db) is False


def _checked_in_thread(db: Database, monkeypatch: pytest.MonkeyPatch, *,
                       table_read: bool) -> bool:
    """any_active_keys from another thread (this one holds the writer), asserting
    whether it read the api_keys table."""
    reads: list[bool] = []
    answers: list[bool] = []
    real_read = db.read

    def read() -> Any:
        reads.append(True)
        return real_read()

    with monkeypatch.context() as patched:
        patched.setattr(db, "read", read)
        t = threading.Thread(target=lambda: answers.append(store.any_active_keys(db)))
        t.start()
        t.join()
    assert bool(reads) is table_read
    return answers[0]

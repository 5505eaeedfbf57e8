"""The proxy's key check: on pooled readers (no connection per server thread), and current
when another process (the ``api-keys`` CLI) changes the keys: a revocation at once, a
first key within ``FOREIGN_RECHECK_S``."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator

import pytest

from agent_cli_proxy.config import Settings
from agent_cli_proxy.storage import api_keys as store
from agent_cli_proxy.storage import open_database
from agent_cli_proxy.storage.database import MAX_IDLE_READERS
from tests.conftest import RunningProxy, start_proxy
from tests.web.test_api_keys_e2e import GPT, get
from tests.web.test_relay_formats import post

NOW = "2026-11-21T00:00:00.000Z"


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Moves the clock of the "any keys?" check past its recheck interval."""
    clock = [1000.0]
    monkeypatch.setattr(store, "_monotonic", lambda: clock[0])

    def move() -> None:
        clock[0] += store.FOREIGN_RECHECK_S

    return move


@pytest.fixture
def strict(make_settings: Callable[..., Settings]) -> Iterator[RunningProxy]:
    running = start_proxy(make_settings(proxy_require_api_key=True, proxy_threads=32))
    yield running
    running.stop()


def test_key_checks_and_admin_reads_leave_no_reader_on_server_threads(
        strict: RunningProxy) -> None:
    _, key = store.create_key(strict.db, "pool", allowed_providers=None,
                              allowed_accounts=None, now_iso=NOW)
    failures: list[object] = []

    def client() -> None:
        for _ in range(6):
            for headers in ({"Authorization": f"Bearer {key}"}, {"x-api-key": "sk-unknown"}):
                status = post(strict, *GPT, headers)[0]
                if status not in (200, 401):
                    failures.append(status)
            if get(strict, "/admin/api-keys", {}) != 200 or get(strict, "/ready", {}) != 200:
                failures.append("admin")

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(strict.final_rows(72)) == 72
    # Before the pool, each server thread that ever checked a key kept a connection.
    assert strict.db.reader_count() == 0
    assert strict.db.idle_reader_count() <= MAX_IDLE_READERS


def test_a_key_revoked_by_another_process_is_refused_at_once(strict: RunningProxy) -> None:
    _, key = store.create_key(strict.db, "cli", allowed_providers=None,
                              allowed_accounts=None, now_iso=NOW)
    auth = {"Authorization": f"Bearer {key}"}
    assert post(strict, *GPT, auth)[0] == 200
    # What `agent-cli-proxy api-keys revoke` does, from its own process and connection.
    other = sqlite3.connect(strict.settings.db_path, isolation_level=None)
    try:
        other.execute("UPDATE api_keys SET revoked_at = ? WHERE key_hash = ?",
                      ("2026-11-21T00:00:01.000Z", store.hash_key(key)))
    finally:
        other.close()
    assert post(strict, *GPT, auth)[0] == 401
    assert len(strict.final_rows(1)) == 1


def test_a_key_created_by_another_process_works_at_the_next_check(
        strict: RunningProxy, later: Callable[[], None]) -> None:
    assert post(strict, *GPT, {"Authorization": "Bearer acp_" + "0" * 64})[0] == 401
    cli = open_database(strict.settings.db_path)  # the CLI's own Database
    try:
        _, key = store.create_key(cli, "from the CLI", allowed_providers=None,
                                  allowed_accounts=None, now_iso=NOW)
    finally:
        cli.close()
    assert post(strict, *GPT, {"Authorization": f"Bearer {key}"})[0] == 401  # not looked for yet
    later()
    assert post(strict, *GPT, {"Authorization": f"Bearer {key}"})[0] == 200


def test_without_managed_keys_presented_keys_are_not_looked_up(
        proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[str] = []
    verify = store.verify_key

    def counting(db: object, plaintext: str, **kwargs: object) -> object:
        lookups.append(plaintext)
        return verify(db, plaintext, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "verify_key", counting)
    for _ in range(3):  # the client's own provider key, as most clients send one
        assert post(proxy, *GPT, {"Authorization": "Bearer sk-provider"})[0] == 200
    assert lookups == []
    # A key created here (admin API, CLI in-process) is known at once ...
    record, key = store.create_key(proxy.db, "now", allowed_providers=None,
                                   allowed_accounts=None, now_iso=NOW)
    assert post(proxy, *GPT, {"Authorization": f"Bearer {key}"})[0] == 200
    assert lookups == [key]
    assert proxy.final_rows(4)[-1]["proxy_api_key_id"] == record["id"]
    # ... and so is the last one going away.
    assert store.revoke_key(proxy.db, int(record["id"]), NOW)
    lookups.clear()
    assert post(proxy, *GPT, {"Authorization": f"Bearer {key}"})[0] == 200
    assert lookups == []


def test_a_key_the_original_inserts_is_seen_at_the_next_check(
        strict: RunningProxy, later: Callable[[], None]) -> None:
    key = "f" * 64  # the original's key format, written by the original's own process
    assert post(strict, *GPT, {"Authorization": f"Bearer {key}"})[0] == 401
    other = sqlite3.connect(strict.settings.db_path, isolation_level=None)
    try:
        other.execute("INSERT INTO api_keys (key_hash, key_prefix, name) VALUES (?, ?, ?)",
                      (store.hash_key(key), key[:8], "original"))
    finally:
        other.close()
    later()
    assert post(strict, *GPT, {"Authorization": f"Bearer {key}"})[0] == 200


@pytest.mark.parametrize(("query", "keys"), [
    ("", []), ("alt=sse", []), ("key=acp_a", ["acp_a"]), ("%6Bey=acp_b", ["acp_b"]),
    ("k%65y=acp_c&alt=sse", ["acp_c"]),
])
def test_a_key_in_the_query_is_presented_however_its_name_is_spelt(
        query: str, keys: list[str]) -> None:
    # Parsed only when the query may name one; werkzeug decodes %6Bey to key.
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from agent_cli_proxy.web.api_keys import presented_keys

    environ = EnvironBuilder(path="/v1beta/models/m:generateContent",
                             query_string=query).get_environ()
    assert presented_keys(Request(environ)) == keys

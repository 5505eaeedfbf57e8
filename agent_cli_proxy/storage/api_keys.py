"""The ``api_keys`` repository: managed proxy API keys that clients present to the proxy.

A key is shown once, when it is created (or rotated), and only its SHA-256 hex digest is
stored, so a copy of ``proxy.db`` cannot be used to call the proxy. Verifying a key is a
lookup of its digest in a UNIQUE index: no comparison of secrets happens in Python, so
there is nothing to time.

Key format: ``acp_`` followed by 64 lower-case hex characters (32 random bytes), e.g.
``acp_3f9c…``. The fixed prefix lets secret scanners and people recognise a leaked key;
the underscore keeps the whole key one word for double-click selection. ``key_prefix``
(shown in listings to tell keys apart) is the first 8 hex characters after ``acp_``.
Keys the original created (64 hex characters, no prefix, ``key_prefix`` = their first 8
characters) keep working: verification hashes whatever the client sends.

Keys are never deleted, only revoked, so ``request_logs.proxy_api_key_id`` always names
a row. ``allowed_providers`` / ``allowed_accounts`` are JSON arrays of strings; NULL (or
an empty array, which the original may have written) means "no restriction". A value
that is not a JSON array of strings restricts the key to nothing (fail closed).

Dicts returned here use the admin API's camelCase field names.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.requests import iso_utc
from agent_cli_proxy.storage.schema import MAX_ID

log = get_logger("storage")

KEY_SCHEME: Final = "acp_"
KEY_HEX_CHARS: Final = 64
KEY_PREFIX_CHARS: Final = 8
MAX_NAME_CHARS: Final = 100
MAX_PRESENTED_CHARS: Final = 512
"""Longer credentials are not ours; they are refused without hashing."""
LAST_USED_GRANULARITY_S: Final = 60.0
"""``last_used_at`` is rewritten at most this often per key: a request needs one indexed
read to verify its key, and a write transaction only once a minute."""


class _Unset(Enum):
    UNSET = 0


UNSET: Final = _Unset.UNSET
"""``update_key`` default: leave this field as it is (None means "no restriction")."""


class KeyRevokedError(Exception):
    """The key exists but is revoked: it cannot be rotated back to life."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A valid, non-revoked key, as the proxy needs it to admit a request."""

    id: int
    name: str
    key_prefix: str
    allowed_providers: tuple[str, ...] | None
    """None: every provider."""
    allowed_accounts: tuple[str, ...] | None
    """None: every account."""

    def allows_provider(self, provider: str) -> bool:
        return self.allowed_providers is None or provider in self.allowed_providers


def hash_key(plaintext: str) -> str:
    """The stored form of a key: SHA-256 hex of its UTF-8 bytes (as the original)."""
    return hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key and its ``key_prefix``."""
    body = secrets.token_hex(KEY_HEX_CHARS // 2)
    return KEY_SCHEME + body, body[:KEY_PREFIX_CHARS]


def clean_name(name: str) -> str:
    """*name* without surrounding whitespace; ValueError if empty or too long."""
    cleaned = name.strip()
    if not cleaned:
        raise ValueError("name must be a non-empty string")
    if len(cleaned) > MAX_NAME_CHARS:
        raise ValueError(f"name must be at most {MAX_NAME_CHARS} characters")
    if not cleaned.isprintable():
        # A newline or escape sequence in a name would forge lines in listings and logs.
        raise ValueError("name must not contain control characters")
    return cleaned


def _encode_list(values: list[str] | None) -> str | None:
    if values is None:
        return None
    if not values:
        # An empty list would read back as "no restriction" (the original's meaning);
        # refuse rather than store the opposite of what a caller may have meant.
        raise ValueError("an allow-list must not be empty (use None for no restriction)")
    if not all(isinstance(v, str) and v for v in values):
        raise ValueError("an allow-list holds non-empty strings")
    return json.dumps(list(dict.fromkeys(values)), ensure_ascii=False)


def _decode_list(raw: object, column: str, key_id: int) -> tuple[str, ...] | None:
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(str(raw))
    except ValueError:
        value = None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value) or None
    log.warning("api_keys.bad_allow_list", key_id=key_id, column=column)
    return ()  # unreadable restriction: allow nothing rather than everything


def _public(row: sqlite3.Row, request_count: int) -> dict[str, Any]:
    providers = _decode_list(row["allowed_providers"], "allowed_providers", row["id"])
    accounts = _decode_list(row["allowed_accounts"], "allowed_accounts", row["id"])
    return {
        "id": row["id"],
        "keyPrefix": row["key_prefix"],
        "name": row["name"],
        "createdAt": row["created_at"],
        "revokedAt": row["revoked_at"],
        "lastUsedAt": row["last_used_at"],
        "requestCount": request_count,
        "allowedAccounts": None if accounts is None else list(accounts),
        "allowedProviders": None if providers is None else list(providers),
    }


_SELECT = (
    "SELECT k.id, k.key_prefix, k.name, k.created_at, k.revoked_at, k.last_used_at,"
    " k.allowed_accounts, k.allowed_providers,"
    " (SELECT COUNT(*) FROM request_logs r WHERE r.proxy_api_key_id = k.id) AS request_count"
    " FROM api_keys k"
)


def _read_one(conn: sqlite3.Connection, key_id: int) -> dict[str, Any] | None:
    if not 0 < key_id <= MAX_ID:
        return None
    row = conn.execute(_SELECT + " WHERE k.id = ?", (key_id,)).fetchone()
    return None if row is None else _public(row, row["request_count"])


# -- "are there any keys?", known without a query --------------------------------------------
#
# Most proxies have no managed keys, yet clients present their own provider keys on every
# call, and each would cost an indexed lookup on a reader whose page cache the last write
# emptied (about 50 us). While no valid key exists the lookups are skipped. This process's
# own writes to api_keys bump a generation (every one goes through the functions below),
# so they count at once. Another process's (the `api-keys` CLI, another proxy) show in the
# writer connection's data_version, read again once FOREIGN_RECHECK_S has passed (by each
# thread that finds it so at that moment): read per call under load it cost ~17 us of
# CPU (it lets the row writer in), and a first key created by the CLI is known within a
# tenth of a second. Only that transition waits; with keys present every presented key is
# looked up, so a revocation counts at once.

FOREIGN_RECHECK_S: Final = 0.1
_monotonic = time.monotonic  # tests move it by hand


class _Presence:
    __slots__ = ("checked_at", "generation", "has_keys", "lock", "version")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0  # this process's changes to api_keys
        self.version: int | None = None  # foreign data_version when has_keys was read
        self.checked_at = 0.0  # _monotonic() when version was last found unchanged
        self.has_keys = True


_presences: weakref.WeakKeyDictionary[Database, _Presence] = weakref.WeakKeyDictionary()
_presences_lock = threading.Lock()


def _presence(db: Database) -> _Presence:
    state = _presences.get(db)
    if state is None:
        with _presences_lock:
            state = _presences.setdefault(db, _Presence())
    return state


def _keys_changed(db: Database) -> None:
    """After a write to api_keys has committed: the next check reads the table again."""
    state = _presence(db)
    with state.lock:
        state.generation += 1
        state.version = None


def any_active_keys(db: Database) -> bool:
    """Whether a non-revoked key may exist (False only when known that none does)."""
    state = _presence(db)
    now = _monotonic()
    with state.lock:
        if state.version is not None and now - state.checked_at < FOREIGN_RECHECK_S:
            return state.has_keys
    version = db.foreign_data_version()
    with state.lock:
        generation = state.generation
        if version is not None and state.version == version:
            state.checked_at = now
            return state.has_keys
    with db.read() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)").fetchone()
    has_keys = bool(row[0])
    with state.lock:
        # Kept only if nothing changed meanwhile in this process; a foreign change after
        # `version` was read shows as another version at the next check.
        if version is not None and state.generation == generation:
            state.version, state.has_keys, state.checked_at = version, has_keys, now
    return has_keys


def create_key(db: Database, name: str, *, allowed_providers: list[str] | None,
               allowed_accounts: list[str] | None, now_iso: str) -> tuple[dict[str, Any], str]:
    """Store a new key; return its public record and the plaintext key (shown once)."""
    name = clean_name(name)
    providers, accounts = _encode_list(allowed_providers), _encode_list(allowed_accounts)
    key, prefix = new_key()
    with db.write() as conn:
        cur = conn.execute(
            "INSERT INTO api_keys (key_hash, key_prefix, name, created_at, allowed_accounts,"
            " allowed_providers) VALUES (?, ?, ?, ?, ?, ?)",
            (hash_key(key), prefix, name, now_iso, accounts, providers))
        assert cur.lastrowid is not None
        record = _read_one(conn, cur.lastrowid)
    _keys_changed(db)
    assert record is not None
    return record, key


def list_keys(db: Database) -> list[dict[str, Any]]:
    """Every key, revoked ones included, oldest first, with its request count."""
    rows = db.reader().execute(_SELECT + " ORDER BY k.id").fetchall()
    return [_public(r, r["request_count"]) for r in rows]


def get_key(db: Database, key_id: int) -> dict[str, Any] | None:
    return _read_one(db.reader(), key_id)


def revoke_key(db: Database, key_id: int, now_iso: str) -> bool:
    """Revoke the key at once; False if there is no such key. Revoking a revoked key
    keeps its first ``revoked_at`` (and returns True)."""
    if not 0 < key_id <= MAX_ID:
        return False
    with db.write() as conn:
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                     (now_iso, key_id))
        exists = conn.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    _keys_changed(db)
    return exists is not None


def update_key(db: Database, key_id: int, *, name: str | None = None,
               allowed_providers: list[str] | Literal[_Unset.UNSET] | None = UNSET,
               allowed_accounts: list[str] | Literal[_Unset.UNSET] | None = UNSET,
               ) -> dict[str, Any] | None:
    """Change the name and/or allow-lists (None lifts a restriction); None if no key.

    A revoked key may be renamed or re-limited (it stays revoked)."""
    sets: list[str] = []
    values: list[object] = []
    if name is not None:
        sets.append("name = ?")
        values.append(clean_name(name))
    if allowed_providers is not UNSET:
        sets.append("allowed_providers = ?")
        values.append(_encode_list(allowed_providers))
    if allowed_accounts is not UNSET:
        sets.append("allowed_accounts = ?")
        values.append(_encode_list(allowed_accounts))
    if not 0 < key_id <= MAX_ID:
        return None
    with db.write() as conn:
        if sets:
            conn.execute(f"UPDATE api_keys SET {', '.join(sets)} WHERE id = ?",
                         (*values, key_id))
        record = _read_one(conn, key_id)
    _keys_changed(db)
    return record


def rotate_key(db: Database, key_id: int, now_iso: str) -> tuple[dict[str, Any], str] | None:
    """Give the key a new secret (same id, name, limits, history); the old secret stops
    working with this transaction. None if there is no such key; KeyRevokedError if it is
    revoked. *now_iso* is recorded nowhere yet: the schema has no rotated_at column."""
    del now_iso
    if not 0 < key_id <= MAX_ID:
        return None
    key, prefix = new_key()
    with db.write() as conn:
        cur = conn.execute(
            "UPDATE api_keys SET key_hash = ?, key_prefix = ? WHERE id = ? AND revoked_at IS NULL",
            (hash_key(key), prefix, key_id))
        record = _read_one(conn, key_id)
    _keys_changed(db)
    if record is None:
        return None
    if cur.rowcount == 0:
        raise KeyRevokedError(f"API key {key_id} is revoked")
    return record, key


def key_usage(db: Database, key_id: int) -> dict[str, Any] | None:
    """``{id, requestCount, totalTokens, totalCostUsd}`` over every call made with the key."""
    if get_key(db, key_id) is None:
        return None
    row = db.reader().execute(
        "SELECT COUNT(*), COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cost_usd), 0.0)"
        " FROM request_logs WHERE proxy_api_key_id = ?", (key_id,)).fetchone()
    return {"id": key_id, "requestCount": row[0], "totalTokens": row[1],
            "totalCostUsd": float(row[2])}


def verify_key(db: Database, plaintext: str, *, now_s: float | None = None) -> KeyRecord | None:
    """The non-revoked key whose secret is *plaintext*, or None.

    With *now_s* (Unix seconds) the key's ``last_used_at`` is brought up to date, but
    only when it is older than :data:`LAST_USED_GRANULARITY_S`, so most calls write
    nothing. Revocation and rotation take effect on the next call: no key is cached
    (callers skip the lookup only while :func:`any_active_keys` knows there are none).
    """
    plaintext = plaintext.strip()
    if not plaintext or len(plaintext) > MAX_PRESENTED_CHARS:
        return None
    with db.read() as conn:
        row = conn.execute(
            "SELECT id, name, key_prefix, allowed_providers, allowed_accounts, last_used_at"
            " FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
            (hash_key(plaintext),)).fetchone()
    if row is None:
        return None
    key_id: int = row["id"]
    if now_s is not None:
        _touch(db, key_id, row["last_used_at"], now_s)
    return KeyRecord(
        id=key_id, name=row["name"], key_prefix=row["key_prefix"],
        allowed_providers=_decode_list(row["allowed_providers"], "allowed_providers", key_id),
        allowed_accounts=_decode_list(row["allowed_accounts"], "allowed_accounts", key_id))


def _touch(db: Database, key_id: int, last_used_at: str | None, now_s: float) -> None:
    # ISO strings of one format order like the times they name. A value the original
    # wrote ("YYYY-MM-DD HH:MM:SS") sorts before any ISO value of the same day, so it
    # is simply replaced once.
    stale_before = iso_utc(now_s - LAST_USED_GRANULARITY_S)
    if last_used_at is not None and last_used_at >= stale_before:
        return
    try:
        with db.write() as conn:
            # Re-checked in the transaction: threads racing past the read write once.
            conn.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?"
                " AND (last_used_at IS NULL OR last_used_at < ?)",
                (iso_utc(now_s), key_id, stale_before))
    except sqlite3.Error as exc:
        # Bookkeeping only: a busy or read-only database must not refuse a valid key.
        log.warning("api_keys.touch_failed", key_id=key_id, error=str(exc))

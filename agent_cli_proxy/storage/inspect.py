"""Looking at a database file without changing it: for ``db check`` and ``doctor``.

:func:`inspect_database` never creates, migrates or writes anything, not even SQLite's
``-wal``/``-shm`` side files. A read-only connection (URI ``mode=ro``) to a WAL database
would create those when they are missing and leave them behind, so when neither exists
(no process has the database open) the file is opened ``immutable=1`` instead, which
reads it as a plain file. A server that starts in that instant could make this one
report inaccurate; it cannot be harmed by it.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from dataclasses import dataclass, field

from agent_cli_proxy.storage.migrations import MIGRATIONS, applied_migrations

# integrity_check stops after this many problems; enough to show what is wrong.
MAX_INTEGRITY_ERRORS = 20


@dataclass(frozen=True, slots=True)
class DatabaseReport:
    path: str
    exists: bool
    error: str | None = None  # could not be opened or read at all
    applied: tuple[str, ...] = ()  # our migrations recorded in the file, in order
    pending: tuple[str, ...] = ()  # ours not yet applied (``serve`` and ``db migrate`` do)
    unknown: tuple[str, ...] = ()  # ours-shaped names this version does not know (newer)
    original: tuple[str, ...] = ()  # the TypeScript original's migration files recorded
    integrity: tuple[str, ...] = field(default=())  # ("ok",) when sound

    @property
    def schema_version(self) -> int:
        """How many of our numbered migrations the file has (``len(MIGRATIONS)`` when
        current)."""
        return len(self.applied)

    @property
    def ok(self) -> bool:
        """Readable and sound (pending migrations are not a fault: ``serve`` applies them)."""
        return self.exists and self.error is None and self.integrity == ("ok",)

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "exists": self.exists, "error": self.error,
                "schemaVersion": self.schema_version, "latestSchemaVersion": len(MIGRATIONS),
                "applied": list(self.applied), "pending": list(self.pending),
                "unknown": list(self.unknown), "originalMigrations": list(self.original),
                "integrity": list(self.integrity), "ok": self.ok}


def _read_only_uri(path: str) -> str:
    quiet = not any(os.path.exists(path + suffix) for suffix in ("-wal", "-shm"))
    mode = "mode=ro&immutable=1" if quiet else "mode=ro"
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?{mode}"


def inspect_database(path: str) -> DatabaseReport:
    """Schema version, pending migrations and ``PRAGMA integrity_check`` of *path*."""
    if path == ":memory:" or not os.path.exists(path):
        return DatabaseReport(path, exists=False)
    if not os.path.isfile(path):
        return DatabaseReport(path, exists=True, error="not a regular file")
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        return DatabaseReport(path, exists=True, error=str(exc))
    try:
        conn.execute("PRAGMA query_only=ON")
        names = applied_migrations(conn)
    except sqlite3.Error as exc:
        conn.close()
        return DatabaseReport(path, exists=True, error=str(exc))
    try:
        integrity = tuple(str(r[0]) for r in conn.execute(
            f"PRAGMA integrity_check({MAX_INTEGRITY_ERRORS})").fetchall())
    except sqlite3.Error as exc:
        # Damage bad enough to stop the check itself is its answer too.
        integrity = (str(exc),)
    finally:
        conn.close()
    ours = {m.name for m in MIGRATIONS}
    return DatabaseReport(
        path, exists=True,
        applied=tuple(n for n in names if n in ours),
        pending=tuple(m.name for m in MIGRATIONS if m.name not in names),
        unknown=tuple(n for n in names if n.startswith("py-") and n not in ours),
        original=tuple(n for n in names if not n.startswith("py-")),
        integrity=integrity)

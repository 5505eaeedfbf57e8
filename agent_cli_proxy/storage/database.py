"""The SQLite database handle: connections, pragmas, write transactions, shutdown.

A :class:`Database` owns exactly one *writer* connection, guarded by a lock, and read-only
*reader* connections from a small pool. SQLite in WAL mode lets readers run alongside the
single writer, so the request threads never wait on each other to read; writes are
serialised here (cheaply, in-process) rather than by SQLite's file lock, which would make
threads spin in the busy handler.

Readers are pooled because a connection per thread does not scale with the server's
threads: waitress wakes its idle workers oldest first, so with a connection per thread
each of its hundreds of threads ends up holding one (2 descriptors and about 160 KB each).
``with db.read() as conn`` borrows one for a few statements; :meth:`Database.reader`
binds one to the calling thread until :meth:`Database.release_reader` (the WSGI app
releases it when a request ends; background threads keep theirs).

Every write goes through ``with db.write() as conn:``: it takes the lock, opens a
``BEGIN IMMEDIATE`` transaction (retrying on "database is locked" when another process
holds the file's write lock), and commits or rolls back. Callers keep the body to SQL
only; never network I/O.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent_cli_proxy.log import get_logger

log = get_logger("storage")

DEFAULT_BUSY_TIMEOUT_MS = 5000
# Extra attempts after SQLite's own busy_timeout has expired. The original used the same
# schedule; by then another process has held the write lock for seconds, so back off.
WRITE_RETRY_DELAYS_S: tuple[float, ...] = (0.05, 0.2, 0.8)

# With background checkpoints (Database.start_checkpointer): the writer still checkpoints
# by itself once the WAL holds this many pages (about 16 MB), a bound for when the
# background thread cannot keep up (the WAL file keeps its largest size, as SQLite's own
# 1,000-page default does: cutting it back after each restart made the p99 worse).
BACKGROUND_AUTOCHECKPOINT_PAGES = 4_000

# Idle reader connections kept for reuse; more are opened when more are in use at once, and
# closed when given back to a full pool. Readers are busy for microseconds per statement.
MAX_IDLE_READERS = 4

# Primary result codes; sqlite_errorcode may carry an extended code in the high bits.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def is_busy_error(exc: BaseException) -> bool:
    """True if *exc* means another connection holds a lock we need (worth retrying)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED)
    # Interpreters built without error codes on exceptions: fall back to the message.
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text


class Database:
    """One SQLite file: a locked writer connection and pooled readers.

    Construct with :meth:`open` (which also migrates) or directly (no migration).
    ``path`` must name a file: readers and the writer are separate connections, so
    ``:memory:`` would give each its own empty database.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        # Injectable so tests can act between retries without sleeping.
        self.retry_sleep: Callable[[float], None] = time.sleep
        self._write_lock = threading.Lock()
        # data_version read as the current write transaction began (None outside one):
        # no other connection can commit until it ends, so it stays exact meanwhile.
        self._version_in_write: int | None = None
        self._readers_lock = threading.Lock()
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._idle: list[sqlite3.Connection] = []  # pooled readers nobody holds
        self._local = threading.local()
        self._closed = False
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect()
        mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            # e.g. a network filesystem that cannot share memory; still correct, slower.
            log.warning("storage.wal_unavailable", path=str(self.path), journal_mode=mode)
        self._writer.execute("PRAGMA synchronous=NORMAL")

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, migrate: bool = True,
             busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Database:
        """Open *path* (creating it and its directory) and, by default, migrate it."""
        db = cls(path, busy_timeout_ms=busy_timeout_ms)
        if migrate:
            # Imported here: migrations itself imports this module.
            from agent_cli_proxy.storage.migrations import migrate as run_migrations

            try:
                run_migrations(db)
            except BaseException:
                db.close()
                raise
        return db

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves. Python's implicit deferred
        # BEGIN would upgrade to a write lock mid-transaction and fail with "database
        # is locked" without ever honouring busy_timeout.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    # -- writes ---------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """Run the ``with`` body in one ``BEGIN IMMEDIATE`` transaction on the writer.

        Commits on normal exit, rolls back on any exception. Only acquiring the
        transaction is retried: once BEGIN IMMEDIATE succeeds this connection holds the
        write lock, so the statements in the body cannot be refused for being busy.
        """
        with self._write_lock:
            conn = self._require_open(self._writer)
            self._begin_immediate(conn)
            try:
                try:
                    self._version_in_write = conn.execute("PRAGMA data_version").fetchone()[0]
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                self._version_in_write = None

    def foreign_data_version(self) -> int | None:
        """``PRAGMA data_version`` of the writer connection: it changes exactly when
        another connection (another process: the CLI, another proxy) has committed since,
        never for this process's own writes. Never waits for the writer: while it is in a
        write transaction, the value read as that began (nobody else can commit before it
        ends); None when it is busy otherwise (the caller must then assume anything may
        have changed).

        The row writer is in a transaction much of the time under load, and a thread
        waiting on it would hold the interpreter lock's queue up: hence no waiting.
        """
        if not self._write_lock.acquire(blocking=False):
            return self._version_in_write
        try:
            conn = self._require_open(self._writer)
            version: int = conn.execute("PRAGMA data_version").fetchone()[0]
            return version
        finally:
            self._write_lock.release()

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        for attempt, delay in enumerate((*WRITE_RETRY_DELAYS_S, None)):
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if delay is None or not is_busy_error(exc):
                    raise
                log.warning("storage.write_busy_retry", attempt=attempt + 1,
                            delay_ms=int(delay * 1000), error=str(exc))
                self.retry_sleep(delay)

    # -- reads ----------------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection, until :meth:`release_reader` (taken from
        the pool on first use).

        Connections run in autocommit, so a read transaction lasts one statement; fetch
        results fully (``fetchall``) so no cursor pins an old WAL snapshot.
        """
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        conn = self._checkout()
        dead: list[sqlite3.Connection] = []
        with self._readers_lock:
            closed = self._closed
            if not closed:
                dead = self._prune_dead_readers()
                self._readers.append((threading.current_thread(), conn))
        if closed:
            conn.close()
            self._require_open(None)  # raises
        for stale in dead:
            stale.close()
        self._local.conn = conn
        return conn

    def release_reader(self) -> None:
        """Give the calling thread's reader (if it has one) back to the pool. For threads
        that serve requests: the next request, on whichever thread, reuses it."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._readers_lock:
            self._readers = [(t, c) for t, c in self._readers if c is not conn]
        self._checkin(conn)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A pooled read-only connection for the ``with`` body (fetch results fully)."""
        conn = self._checkout()
        try:
            yield conn
        finally:
            self._checkin(conn)

    def _checkout(self) -> sqlite3.Connection:
        with self._readers_lock:
            self._require_open(None)
            if self._idle:
                return self._idle.pop()
        # Opening (and closing, below) a connection is file I/O: not under the lock.
        conn = self._connect()
        conn.execute("PRAGMA query_only=ON")
        return conn

    def _checkin(self, conn: sqlite3.Connection) -> None:
        # A connection given back after close(), or to a full pool, is closed.
        with self._readers_lock:
            keep = not self._closed and len(self._idle) < MAX_IDLE_READERS
            if keep:
                self._idle.append(conn)
        if not keep:
            conn.close()

    def _prune_dead_readers(self) -> list[sqlite3.Connection]:
        """Drop the readers of threads that have ended (tests, CLI tools: their
        connections must not pile up); under _readers_lock. The caller closes them."""
        alive: list[tuple[threading.Thread, sqlite3.Connection]] = []
        dead: list[sqlite3.Connection] = []
        for thread, conn in self._readers:
            if thread.is_alive():
                alive.append((thread, conn))
            else:
                dead.append(conn)
        self._readers = alive
        return dead

    def reader_count(self) -> int:
        """How many reader connections threads hold (for diagnostics and tests)."""
        with self._readers_lock:
            return len(self._readers)

    def idle_reader_count(self) -> int:
        """How many reader connections wait in the pool (for diagnostics and tests)."""
        with self._readers_lock:
            return len(self._idle)

    def ping(self) -> bool:
        """A cheap liveness check for readiness probes: can a reader run a query?"""
        try:
            with self.read() as conn:
                row = conn.execute("SELECT 1").fetchone()
        except (sqlite3.Error, DatabaseClosedError):
            return False
        return row is not None and row[0] == 1

    # -- checkpoints ----------------------------------------------------------------

    def start_checkpointer(self, interval_s: float = 0.1) -> None:
        """Copy the WAL into the database file from a thread of its own, every
        *interval_s*, instead of in the writer.

        SQLite's automatic checkpoint runs in the committing write, under the write lock,
        each time the WAL passes 1,000 pages (every ~50 proxied calls): it copies pages and
        waits for two fsyncs (several ms here), and every call behind it waits too (the
        p99 latency of sequential calls was 6 ms, with 3 ms this way). A passive
        checkpoint from another connection runs alongside the writer. The writer keeps
        checkpointing by itself past :data:`BACKGROUND_AUTOCHECKPOINT_PAGES`. The server
        starts it; short-lived users (CLI commands, tests) keep SQLite's default.
        """
        with self._write_lock:
            conn = self._require_open(self._writer)
            if self._checkpointer is not None:
                return
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKGROUND_AUTOCHECKPOINT_PAGES}")
            checkpoints = self._connect()
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(checkpoints, interval_s),
                name="sqlite-checkpoints", daemon=True)
            self._checkpointer.start()

    def defer_checkpoints(self) -> None:
        """Leave WAL checkpoints to another process's :meth:`start_checkpointer` (the first
        of several server workers), past :data:`BACKGROUND_AUTOCHECKPOINT_PAGES` too."""
        with self._write_lock:
            conn = self._require_open(self._writer)
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKGROUND_AUTOCHECKPOINT_PAGES}")

    def _checkpoint_loop(self, conn: sqlite3.Connection, interval_s: float) -> None:
        failing = False
        try:
            while not self._stop_checkpoints.wait(interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failing = False
                except sqlite3.Error as exc:
                    if not failing:  # once per run of failures, not every interval
                        log.warning("storage.background_checkpoint_failed",
                                    path=str(self.path), error=str(exc))
                    failing = True
        finally:
            conn.close()

    # -- shutdown -------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close every connection. Idempotent.

        Waits for a write in progress. Call after request threads have drained: a
        reader closed under a thread still using it makes that thread's query fail.
        """
        self._stop_checkpoints.set()
        checkpointer = self._checkpointer
        if checkpointer is not None and checkpointer is not threading.current_thread():
            checkpointer.join()
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                for _thread, conn in self._readers:
                    conn.close()
                self._readers.clear()
                for conn in self._idle:
                    conn.close()
                self._idle.clear()
            try:
                # TRUNCATE leaves a zero-length -wal, so a backup of the .db file alone
                # is complete and the next start does not replay anything.
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("storage.checkpoint_failed", path=str(self.path), error=str(exc))
            finally:
                self._writer.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _require_open(self, conn: sqlite3.Connection | None) -> sqlite3.Connection:
        if self._closed:
            raise DatabaseClosedError(f"database {self.path} is closed")
        return conn if conn is not None else self._writer

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class DatabaseClosedError(RuntimeError):
    """The :class:`Database` was used after :meth:`Database.close`."""


def open_database(path: str | os.PathLike[str], *,
                  busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Database:
    """Open and migrate the database at *path*: what the server and CLI call."""
    return Database.open(path, migrate=True, busy_timeout_ms=busy_timeout_ms)

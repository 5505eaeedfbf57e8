"""Calls' rows written by a thread of their own, several calls per transaction, so a call
never waits for a commit.

Each recorded call writes its row twice: ``pending`` when it starts and its outcome when
it ends. Done by the request thread, each write is a transaction of its own (BEGIN, a
dozen index pages, COMMIT) on the call's path, and with several server processes
(PROXY_WORKERS) they queue for SQLite's one write lock, sleeping in its busy handler.
Here the request thread hands the write over (:meth:`RowWriter.submit`,
:meth:`RowWriter.finish`) and goes on; the writer thread commits whatever has queued up
in one transaction: one lock, one commit and one copy of each shared index page for many
calls. A call that ends before its pending row was written has its final row written in
one INSERT (the pending state is never committed then).

Order is kept: a call's outcome is queued after its pending row, and one thread writes
both. What follows a write (the finalization log line, account attribution) runs in the
writer thread after the commit, through the callback given to :meth:`RowWriter.finish`.

What this changes for a crash: a call's rows reach the database a moment after the
events they record, so a ``kill -9`` in that moment loses them (a pending row not yet
written) or leaves the row pending (recovered as aborted at the next start). A stop by
signal loses nothing: :meth:`RowWriter.close` writes what is queued. A write that fails
is retried alone, so one bad row never costs the others theirs.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.storage.database import Database, is_busy_error
from agent_cli_proxy.storage.requests import (
    Finalization,
    PendingRow,
    finalize_in,
    insert_final_in,
    insert_pending_in,
)

_log = get_logger("lifecycle")
MAX_BATCH = 256  # writes per transaction: bounds how long one holds the write lock
# From the first write queued to its batch's transaction. Each commit writes the shared
# pages (table, indexes, daily totals) to the WAL again: at one call at a time, 2 ms gave
# a commit per ~2 calls and 0.19 ms of writer CPU per call, 10 ms 0.10 ms.
LINGER_S = 0.010
MAX_QUEUED = 20_000  # writes waiting; past this, callers wait for room (back-pressure)
BUSY_RETRY_CAP_S = 2.0  # longest pause before trying a batch again on a locked database
Finished = Callable[[int, bool], None]
"""Called after the outcome is committed: (row id, whether the row was still pending)."""


class PendingTicket:
    """A call's row: its id once the pending row is written (None before, or if that
    failed)."""

    __slots__ = ("_written", "row", "row_id")

    def __init__(self, row: PendingRow) -> None:
        self.row = row
        self.row_id: int | None = None
        self._written = threading.Event()

    @property
    def written(self) -> bool:
        """The pending row's write is over (committed, or failed)."""
        return self._written.is_set()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """The row's id once its pending row is written (None if that failed)."""
        self._written.wait(timeout_s)
        return self.row_id


@dataclass(frozen=True, slots=True)
class _Outcome:
    ticket: PendingTicket
    fin: Finalization
    then: Finished | None


_Write = PendingTicket | _Outcome


class RowWriter:
    """The thread that writes calls' rows (started with the first write)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: deque[_Write] = deque()
        lock = threading.Lock()
        self._wake = threading.Condition(lock)  # something was queued, or close()
        self._idle = threading.Condition(lock)  # the queue is empty and nothing is writing
        self._room = threading.Condition(lock)  # the queue is below MAX_QUEUED again
        self._busy = False
        self._thread: threading.Thread | None = None
        self._running = False  # the thread takes writes (until closed and drained)
        self._closed = False

    def submit(self, row: PendingRow) -> PendingTicket:
        """Queue a call's pending row."""
        ticket = PendingTicket(row)
        self._enqueue(ticket)
        return ticket

    def finish(self, ticket: PendingTicket, fin: Finalization,
               then: Finished | None = None) -> None:
        """Queue a call's outcome (after its pending row); *then* runs once it is
        committed."""
        self._enqueue(_Outcome(ticket, fin, then))

    @property
    def queued(self) -> int:
        """Writes waiting for the writer (not counting the batch it is writing)."""
        with self._wake:
            return len(self._queue)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        with self._wake:
            return self._idle.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    def close(self) -> None:
        """Write everything still queued (and what is queued while that lasts), then end
        the thread. Later writes are done by the thread that asks for them."""
        with self._wake:
            self._closed = True
            thread = self._thread
            self._wake.notify()
        if thread is not None:
            thread.join()

    def _enqueue(self, item: _Write) -> None:
        with self._wake:
            # Back-pressure, for a database locked for long (another process): the queue
            # absorbs the writer's usual stalls (thousands of writes under load, waits for
            # SQLite's lock between workers); bounded lower, callers waited on them and
            # two workers lost a quarter of their throughput.
            while len(self._queue) >= MAX_QUEUED and not self._closed:
                self._room.wait()
            if not self._closed or self._running:
                # Closed but still draining: queued too, so a call's outcome never goes
                # ahead of its pending row (written inline, it would find no row yet).
                self._queue.append(item)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="row-writer",
                                                    daemon=True)
                    self._running = True
                    self._thread.start()
                self._wake.notify()
                return
        # Closed and drained (the server is stopping): written here and now.
        self._write([item])

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._busy = False
                    self._idle.notify_all()
                    self._wake.wait()
                if not self._queue:
                    self._busy = False
                    self._running = False  # from here on, writes are made inline
                    self._idle.notify_all()
                    self._room.notify_all()
                    return  # closed and drained
                self._busy = True
                closing, queued = self._closed, len(self._queue)
            if not closing and queued < MAX_BATCH:
                # A moment for more to join the batch: a quick call's outcome joins its
                # pending row, and the writer keeps off the interpreter lock while the
                # call that woke it reaches its first byte. A full batch goes at once.
                time.sleep(LINGER_S)
            with self._wake:
                batch = [self._queue.popleft()
                         for _ in range(min(MAX_BATCH, len(self._queue)))]
                self._room.notify_all()
            self._write(batch)
            del batch  # not kept alive while the thread waits for more

    def _write(self, batch: list[_Write]) -> None:
        # A call whose outcome is queued in the same batch as its pending row: one INSERT
        # of the final row instead of an INSERT and an UPDATE (40 % less of the writer's
        # time per call; most calls at any load).
        pending = {id(item) for item in batch if isinstance(item, PendingTicket)}
        joined = {id(item.ticket): item for item in batch
                  if isinstance(item, _Outcome) and id(item.ticket) in pending}
        for attempt in itertools.count():
            try:
                with self._db.write() as conn:
                    results = [self._apply(conn, item, joined) for item in batch]
            except Exception as exc:
                for item in batch:
                    if isinstance(item, PendingTicket) and not item.written:
                        item.row_id = None  # rolled back
                if not is_busy_error(exc):
                    self._write_apart(batch, exc)
                    return
                # Another process holds the write lock past the busy timeout: the whole
                # batch again (apart, each write would wait as long), unless stopping.
                if self._closed:
                    _log.error("lifecycle.writes_abandoned", writes=len(batch),
                               error=str(exc))
                    for item in batch:
                        self._given_up(item)
                    return
                _log.warning("lifecycle.writes_waiting", writes=len(batch),
                             attempt=attempt + 1, error=str(exc))
                time.sleep(min(BUSY_RETRY_CAP_S, 0.1 * 2 ** attempt))
                continue
            for item, result in zip(batch, results, strict=True):
                self._done(item, result)
            return

    def _write_apart(self, batch: list[_Write], exc: Exception) -> None:
        """A batch that failed for one of its writes: each write on its own."""
        if len(batch) == 1:
            self._failed(batch[0], exc)
            return
        # One bad write must not cost the others theirs.
        for item in batch:
            self._write([item])

    @staticmethod
    def _apply(conn: sqlite3.Connection, item: _Write,
               joined: dict[int, _Outcome]) -> int | bool | None:
        if isinstance(item, PendingTicket):
            outcome = joined.get(id(item))
            # Set now: the call's outcome follows in this very transaction.
            item.row_id = (insert_pending_in(conn, item.row) if outcome is None
                           else insert_final_in(conn, item.row, outcome.fin))
            return item.row_id
        row_id = item.ticket.row_id
        if row_id is None:
            return None
        if id(item.ticket) in joined:
            return True  # written final with its pending row, earlier in this batch
        # The pending row was written by an earlier batch.
        return finalize_in(conn, row_id, item.fin)

    def _done(self, item: _Write, result: int | bool | None) -> None:
        if isinstance(item, PendingTicket):
            item._written.set()
            _log.debug("lifecycle.pre_logged", request_id=item.row.request_id, row_id=result,
                       provider=item.row.provider, model=item.row.model, tool=item.row.tool,
                       client_id=item.row.client_id, path=item.row.path)
            return
        if result is None:
            return  # its pending row could not be written (logged then)
        row_id = item.ticket.row_id
        assert row_id is not None
        if item.then is not None:
            try:
                item.then(row_id, bool(result))
            except Exception:
                _log.exception("lifecycle.after_finalize_failed",
                               request_id=item.ticket.row.request_id, row_id=row_id)

    def _given_up(self, item: _Write) -> None:
        if isinstance(item, PendingTicket):
            item._written.set()

    def _failed(self, item: _Write, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(item, PendingTicket):
            _log.error("lifecycle.prelog_failed", request_id=item.row.request_id,
                       path=item.row.path, error=error)
            item._written.set()
            return
        _log.error("lifecycle.finalize_failed", request_id=item.ticket.row.request_id,
                   row_id=item.ticket.row_id, error=error)

"""Pending rows written by a thread of their own, so a call never waits for that commit.

A recorded call used to commit its ``pending`` row before it asked the upstream: one
write transaction (BEGIN, 14 index pages, COMMIT) on every call's path to its first byte.
Here the request thread hands the row over (:meth:`PendingWriter.submit`) and goes on;
the writer thread commits whatever has queued up in one transaction, usually within a
fraction of a millisecond and always while the upstream is still thinking.

When the call is over before the writer got to its row (a fast upstream, a refusal), the
recorder takes the row back (:meth:`PendingTicket.take`) and stores it final in one
transaction (``insert_final``): one commit instead of two. Otherwise it waits for the
row's id (:meth:`PendingTicket.wait`, normally already there) and finalizes as before.

What this changes for a crash: a call is in the database a moment after it starts rather
than before the upstream is asked, so a ``kill -9`` in that moment loses its row. A stop
by signal loses nothing: :meth:`PendingWriter.close` writes what is queued.
"""

from __future__ import annotations

import threading
from collections import deque

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.requests import PendingRow, insert_pending, insert_pending_batch

_log = get_logger("lifecycle")

_QUEUED, _WRITING, _TAKEN, _DONE = range(4)
# Longest a finishing call waits for its row's id. The writer gives up on a busy database
# after its busy timeout; this only guards against a writer that is gone.
WAIT_LIMIT_S = 60.0


class PendingTicket:
    """One submitted row: queued, then written (with an id) or taken back by its call."""

    __slots__ = ("_lock", "_state", "_written", "row", "row_id")

    def __init__(self, row: PendingRow) -> None:
        self.row = row
        self.row_id: int | None = None
        self._state = _QUEUED
        self._lock = threading.Lock()
        self._written = threading.Event()

    @property
    def queued(self) -> bool:
        """Neither written, nor being written, nor taken back yet."""
        return self._state == _QUEUED

    def take(self) -> bool:
        """True when the writer has not started on the row: the caller now owns it (and
        must store it itself). False when it is written or being written."""
        with self._lock:
            if self._state != _QUEUED:
                return False
            self._state = _TAKEN
        self._written.set()  # nothing to wait for any more
        return True

    def wait(self) -> int | None:
        """The row's id once written; None if writing it failed (logged), took longer than
        WAIT_LIMIT_S, or the row was taken back."""
        self._written.wait(WAIT_LIMIT_S)
        return self.row_id

    def _claim(self) -> bool:
        with self._lock:
            if self._state != _QUEUED:
                return False
            self._state = _WRITING
            return True

    def _finish(self, row_id: int | None) -> None:
        self.row_id = row_id
        self._state = _DONE
        self._written.set()


class PendingWriter:
    """The thread that writes pending rows (started with the first row)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: deque[PendingTicket] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, row: PendingRow) -> PendingTicket:
        ticket = PendingTicket(row)
        with self._wake:
            if not self._closed:
                self._queue.append(ticket)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="pending-rows",
                                                    daemon=True)
                    self._thread.start()
                self._wake.notify()
                return ticket
        # Closed (the server is stopping): written here, as before the writer existed.
        ticket._claim()
        self._write([ticket])
        return ticket

    def close(self) -> None:
        """Write everything still queued, then end the thread. Later rows are written by
        the thread that submits them."""
        with self._wake:
            self._closed = True
            thread = self._thread
            self._wake.notify()
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:
                    return  # closed and drained
                batch = list(self._queue)
                self._queue.clear()
            self._write([t for t in batch if t._claim()])

    def _write(self, tickets: list[PendingTicket]) -> None:
        if not tickets:
            return
        ids: list[int | None]
        try:
            ids = list(insert_pending_batch(self._db, [t.row for t in tickets]))
        except Exception:
            if len(tickets) == 1:
                self._failed(tickets[0])
                return
            # One bad row must not cost the others theirs: each on its own.
            ids = []
            for ticket in tickets:
                try:
                    ids.append(insert_pending(self._db, ticket.row))
                except Exception:
                    self._failed(ticket)
                    ids.append(None)
        for ticket, row_id in zip(tickets, ids, strict=True):
            if row_id is None:
                continue
            ticket._finish(row_id)
            _log.debug("lifecycle.pre_logged", request_id=ticket.row.request_id,
                       row_id=row_id, provider=ticket.row.provider, model=ticket.row.model,
                       tool=ticket.row.tool, client_id=ticket.row.client_id,
                       path=ticket.row.path)

    def _failed(self, ticket: PendingTicket) -> None:
        _log.exception("lifecycle.prelog_failed", request_id=ticket.row.request_id,
                       path=ticket.row.path)
        ticket._finish(None)

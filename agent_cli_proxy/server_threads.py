"""The server's worker threads: started as work needs them, up to ``PROXY_THREADS``.

waitress starts its whole pool at once. The proxy's is large (every open stream holds a
thread for its whole life, so ``PROXY_THREADS`` defaults to 256), and each idle thread
costs ~15 KB of memory: 3.7 MB of an idle proxy's ~40. :class:`GrowingDispatcher` starts
:data:`INITIAL_THREADS` and adds one whenever a request arrives to find every thread
busy, until the limit. Threads are never stopped before the server stops: a pool grown
by a burst of streams stays ready for the next one.

Relies on waitress's ``ThreadedTaskDispatcher`` internals (``lock``, ``queue``,
``queue_cv``, ``threads``, ``active_count``, ``stop_count``, ``set_thread_count``), the
same from 2.1 to 3.0; the tests run at both.
"""

from __future__ import annotations

from typing import Any

from waitress.task import ThreadedTaskDispatcher

INITIAL_THREADS = 8


class GrowingDispatcher(ThreadedTaskDispatcher):
    """waitress's thread pool, started small and grown one thread at a time."""

    def __init__(self, limit: int, initial: int = INITIAL_THREADS) -> None:
        super().__init__()
        self.limit = limit
        self._closing = False
        self.set_thread_count(min(initial, limit))

    def add_task(self, task: Any) -> None:
        """Queue *task* (waitress's), starting a thread first when none is free."""
        with self.lock:
            running = len(self.threads) - self.stop_count
            busy = running - self.active_count <= len(self.queue)
            grow = busy and not self._closing and not self.stop_count and running < self.limit
        if grow:
            # A new thread counts as busy until it first waits: two requests arriving
            # together may start two, never more than the limit (set_thread_count only
            # adds up to the count it is given).
            self.set_thread_count(min(self.limit, running + 1))
        with self.lock:
            self.queue.append(task)
            self.queue_cv.notify()
            waiting = len(self.queue) - (len(self.threads) - self.stop_count - self.active_count)
            if waiting > 0 and running >= self.limit:
                # waitress's warning, but only when the pool could not grow for this task:
                # a task may wait the moment a new thread takes to start.
                self.queue_logger.warning("Task queue depth is %d", waiting)

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        with self.lock:
            self._closing = True
        base: Any = super()  # waitress's stubs take whole seconds; a fraction works as well
        stopped: bool = base.shutdown(cancel_pending=cancel_pending, timeout=timeout)
        return stopped

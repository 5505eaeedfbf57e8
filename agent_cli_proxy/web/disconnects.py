"""Notices clients that hang up while their response waits on a silent upstream.

A worker thread blocked reading the upstream cannot see its client leave. waitress (with
``channel_request_lookahead`` > 0) marks the connection as gone; this one thread polls
that flag for every open relay and aborts the relay, which shuts the upstream socket so
the blocked read returns at once. Without it, the proxy would read the rest of a stream
nobody receives, and the upstream would go on generating (and billing) tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.upstream.relay import CLIENT_GONE

_log = get_logger("disconnects")


class Abortable(Protocol):
    def abort(self, reason: str) -> None: ...


class DisconnectWatcher:
    def __init__(self, interval: float = 0.25) -> None:
        self._interval = interval
        self._watched: dict[int, tuple[Callable[[], bool], Abortable]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, client_gone: Callable[[], bool], target: Abortable) -> None:
        with self._lock:
            self._watched[id(target)] = (client_gone, target)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="disconnect-watcher", daemon=True)
                self._thread.start()

    def unwatch(self, target: Abortable) -> None:
        with self._lock:
            self._watched.pop(id(target), None)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                watched = list(self._watched.values())
            for client_gone, target in watched:
                try:
                    if client_gone():
                        self.unwatch(target)
                        target.abort(CLIENT_GONE)
                except Exception:
                    _log.exception("disconnects.check_failed")

    def abort_all(self, reason: str) -> int:
        """Abort every watched relay (shutdown); returns how many there were."""
        with self._lock:
            targets = [t for _, t in self._watched.values()]
            self._watched.clear()
        for target in targets:
            target.abort(reason)
        return len(targets)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

"""The server's thread pool starts small and grows to PROXY_THREADS as work needs it."""

from __future__ import annotations

import logging
import threading

import pytest

from agent_cli_proxy.server_threads import INITIAL_THREADS, GrowingDispatcher


class _Blocking:
    """A waitress task that holds its thread until released."""

    def __init__(self, release: threading.Event, started: threading.Semaphore) -> None:
        self.release = release
        self.started = started
        self.cancelled = False

    def service(self) -> None:
        self.started.release()
        self.release.wait(10)

    def cancel(self) -> None:
        self.cancelled = True


def test_starts_small_and_grows_to_the_limit_never_past_it(
        caplog: pytest.LogCaptureFixture) -> None:
    limit = INITIAL_THREADS + 4
    pool = GrowingDispatcher(limit)
    release, started = threading.Event(), threading.Semaphore(0)
    try:
        assert len(pool.threads) == INITIAL_THREADS
        tasks = [_Blocking(release, started) for _ in range(limit)]
        with caplog.at_level(logging.WARNING, logger="waitress.queue"):
            for task in tasks:  # each finds every thread busy: the pool grows
                pool.add_task(task)
                assert started.acquire(timeout=10)  # it runs at once
        assert len(pool.threads) == limit
        assert not [r for r in caplog.records if "queue depth" in r.getMessage()]
        # At the limit a further task waits (and waitress says so).
        extra = _Blocking(release, started)
        with caplog.at_level(logging.WARNING, logger="waitress.queue"):
            pool.add_task(extra)
        assert len(pool.threads) == limit and list(pool.queue) == [extra]
        assert any("queue depth is 1" in r.getMessage().lower() for r in caplog.records)
        release.set()
        assert started.acquire(timeout=10)  # served once a thread is free
    finally:
        release.set()
        assert pool.shutdown(timeout=10)
    assert not pool.threads


def test_idle_threads_are_reused_before_any_is_added() -> None:
    pool = GrowingDispatcher(64, initial=2)
    release, started = threading.Event(), threading.Semaphore(0)
    release.set()  # tasks end at once
    try:
        for _ in range(50):
            pool.add_task(_Blocking(release, started))
            assert started.acquire(timeout=10)
        assert len(pool.threads) <= 4  # sequential work: no growth beyond a race's one
    finally:
        pool.shutdown(timeout=10)


def test_no_growth_once_stopping() -> None:
    pool = GrowingDispatcher(16, initial=1)
    assert pool.shutdown(timeout=10)
    task = _Blocking(threading.Event(), threading.Semaphore(0))
    pool.add_task(task)
    assert not pool.threads

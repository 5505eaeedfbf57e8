"""The loop supervisor: schedule, backoff, jitter, prompt stop, loops that never die.

Time is scripted: loops pause through a fake ``wait`` that records each delay and returns at
once, so no test sleeps; only the prompt-stop tests use the real ``Event.wait``.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent_cli_proxy.workers.supervisor import Supervisor, TickFailed, next_delay
from tests.conftest import event_fields, event_name, logged_events


class FakeTime:
    """Clock and wait hook: each wait advances the clock and is recorded; after *waits*
    pauses the loop is told to stop, so the loop thread ends on its own."""

    def __init__(self, waits: int) -> None:
        self.now = 1_000.0
        self.delays: list[float] = []
        self.waits = waits
        self.done = threading.Event()  # the loop has paused *waits* times

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        self.delays.append(timeout)
        self.now += timeout
        if len(self.delays) >= self.waits:
            event.set()
            self.done.set()
        return event.is_set()


@pytest.fixture
def events() -> Iterator[list[tuple[str, int, dict[str, Any], bool]]]:
    """Every event the supervisor logs: (event, level, fields, has traceback)."""
    with logged_events("supervisor", lambda r: (event_name(r), r.levelno, event_fields(r),
                                                     bool(r.exc_info))) as seen:
        yield seen


def run(fn: Callable[[], object], waits: int, **options: Any) -> FakeTime:
    """Run one loop named "job" until it has paused *waits* times; return its time."""
    fake = FakeTime(waits)
    sup = Supervisor(clock=fake, wait=fake.wait, rng=random.Random(7))
    sup.add("job", fn, **options)
    sup.start()
    assert fake.done.wait(10)
    assert sup.stop(timeout_s=10)
    return fake


def failing(exc: Exception | None = None) -> Callable[[], None]:
    def fn() -> None:
        raise exc or RuntimeError("upstream unreachable")
    return fn


def scripted(outcomes: str) -> Callable[[], None]:
    """A job that fails ("f") or succeeds ("s") in turn, then keeps succeeding."""
    queue = list(outcomes)

    def fn() -> None:
        if queue and queue.pop(0) == "f":
            raise RuntimeError("scripted failure")
    return fn


def test_backoff_doubles_from_the_interval() -> None:
    fake = run(failing(), 4, interval_s=10, jitter=0, max_backoff_s=1_000)
    assert fake.delays == [20, 40, 80, 160]


def test_backoff_is_capped() -> None:
    fake = run(failing(), 4, interval_s=10, jitter=0, max_backoff_s=50)
    assert fake.delays == [20, 40, 50, 50]


def test_success_resets_the_backoff() -> None:
    fake = run(scripted("ffsf"), 4, interval_s=10, jitter=0, max_backoff_s=1_000)
    assert fake.delays == [20, 40, 10, 20]


def test_jitter_stays_within_its_ratio() -> None:
    fake = run(scripted("ss" * 50), 100, interval_s=100, jitter=0.1)
    assert all(90 <= d <= 110 for d in fake.delays)
    assert len(set(fake.delays)) > 1  # it does vary


@pytest.mark.parametrize(("options", "first"), [
    ({"run_on_start": True}, None),  # runs at once: the first pause is after the first run
    ({"run_on_start": True, "initial_delay_s": 3}, 3),
    ({"run_on_start": False}, 60),
    ({"run_on_start": False, "initial_delay_s": 5}, 5),
])
def test_first_delay(options: dict[str, Any], first: float | None) -> None:
    calls: list[float] = []
    fake = FakeTime(2)
    sup = Supervisor(clock=fake, wait=fake.wait)
    sup.add("job", lambda: calls.append(fake.now), interval_s=60, jitter=0, **options)
    sup.start()
    assert fake.done.wait(10)
    assert sup.stop(timeout_s=10)
    if first is None:
        assert calls[0] == 1_000.0 and fake.delays[0] == 60
    else:
        assert fake.delays[0] == first and calls[0] == 1_000.0 + first


def test_next_delay_is_pure() -> None:
    rng = random.Random(1)
    assert next_delay(10, 0, jitter=0, max_backoff_s=60, rng=rng) == 10
    assert [next_delay(10, k, jitter=0, max_backoff_s=60, rng=rng) for k in (1, 2, 3, 4)] == [
        20, 40, 60, 60]
    assert 54 <= next_delay(10, 9, jitter=0.1, max_backoff_s=60, rng=rng) <= 66


def test_failures_and_ticks_are_logged(events: list[tuple[str, int, dict[str, Any], bool]]
                                       ) -> None:
    run(scripted("fs"), 2, interval_s=10, jitter=0)
    named = [(e, lvl) for e, lvl, _, _ in events]
    assert ("loop.started", logging.INFO) in named
    error = next(f for e, _, f, _ in events if e == "loop.error")
    assert error == {"name": "job", "err": "scripted failure", "error_type": "RuntimeError",
                     "attempt": 1, "next_delay_ms": 20_000}
    tick = next(f for e, _, f, _ in events if e == "loop.tick")
    assert tick["name"] == "job" and tick["duration_ms"] >= 0
    assert next(lvl for e, lvl in named if e == "loop.tick") == logging.DEBUG
    assert ("loop.stopped", logging.INFO) in named


def test_expected_failures_are_logged_without_a_traceback(
        events: list[tuple[str, int, dict[str, Any], bool]]) -> None:
    run(failing(TickFailed("prices unreachable")), 1, interval_s=10)
    run(failing(KeyError("bug")), 1, interval_s=10)
    tracebacks = [tb for e, _, _, tb in events if e == "loop.error"]
    assert tracebacks == [False, True]


def test_a_throwing_loop_keeps_running() -> None:
    """Five failures in a row, then the loop is still alive and listed."""
    reached, calls = threading.Event(), list[int]()

    def wait(event: threading.Event, timeout: float) -> bool:
        if len(calls) >= 5:
            reached.set()
            return event.wait(30)  # park until stop(): really waiting, on the stop event
        return False

    def fn() -> None:
        calls.append(1)
        raise ValueError("always")

    sup = Supervisor(wait=wait)
    sup.add("flaky", fn, interval_s=1)
    sup.add("quiet", lambda: None, interval_s=3600, run_on_start=False)
    sup.start()
    assert reached.wait(10)
    assert sup.names() == ["flaky", "quiet"]
    status = sup.status()["flaky"]
    assert status["running"] and status["failures"] == 5 and status["last_error"] == "always"
    assert sup.stop(timeout_s=10)
    assert sup.names() == []


def test_stop_is_prompt_even_mid_interval() -> None:
    ran = threading.Event()
    sup = Supervisor()
    sup.add("hourly", ran.set, interval_s=3600)
    sup.add("daily", lambda: None, interval_s=86_400, run_on_start=False)
    sup.start()
    assert ran.wait(10)
    started = time.monotonic()
    assert sup.stop(timeout_s=10)
    assert time.monotonic() - started < 1.0
    assert sup.names() == []


def test_stop_reports_a_job_that_does_not_return(
        events: list[tuple[str, int, dict[str, Any], bool]]) -> None:
    inside, release = threading.Event(), threading.Event()

    def stuck() -> None:
        inside.set()
        release.wait(30)

    sup = Supervisor()
    sup.add("stuck", stuck, interval_s=60)
    sup.start()
    try:
        assert inside.wait(10)
        assert sup.stop(timeout_s=0.05) is False
        assert ("loop.stop_timeout", logging.WARNING) in [(e, lvl) for e, lvl, _, _ in events]
        assert sup.stop_event.is_set()
    finally:
        release.set()
    assert sup.stop(timeout_s=10)


def test_a_loop_added_after_start_starts_at_once() -> None:
    ran = threading.Event()
    sup = Supervisor()
    sup.start()
    sup.add("late", ran.set, interval_s=3600)
    assert ran.wait(10)
    assert sup.names() == ["late"]
    assert sup.stop(timeout_s=10)
    with pytest.raises(RuntimeError):
        sup.start()
    with pytest.raises(RuntimeError):
        sup.add("later", ran.set, interval_s=1)


@pytest.mark.parametrize(("options", "message"), [
    ({"interval_s": 0}, "interval_s must be a positive finite number"),
    ({"interval_s": math.nan}, "interval_s must be a positive finite number"),
    ({"interval_s": math.inf}, "interval_s must be a positive finite number"),
    ({"interval_s": 1, "initial_delay_s": -1}, "initial_delay_s must be a non-negative"),
    ({"interval_s": 1, "max_backoff_s": 0}, "max_backoff_s must be a positive"),
    ({"interval_s": 1, "jitter": 1.0}, "jitter must be in [0, 1)"),
])
def test_invalid_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        Supervisor().add("job", lambda: None, **options)


def test_duplicate_names_are_refused() -> None:
    sup = Supervisor()
    sup.add("job", lambda: None, interval_s=1)
    with pytest.raises(ValueError, match="already registered"):
        sup.add("job", lambda: None, interval_s=1)
    assert sup.names() == []  # registered, not started

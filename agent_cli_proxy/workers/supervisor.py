"""The loop supervisor: named periodic jobs, each in its own plain daemon thread.

It owns the *when* of background work (first delay, interval, jitter, exponential backoff
after failures) and the one stop :class:`threading.Event` every loop waits on, so a stop
wakes every loop at once instead of after its current sleep. What a loop *does* belongs to
its job (``workers.pricing`` and friends); a job signals failure by raising.

Schedule (spec §9.2): the first run comes after ``initial_delay_s`` when ``run_on_start``,
otherwise after ``initial_delay_s`` if positive, else one interval. After a success the
next run is one interval away ± jitter and the failure count resets (``loop.tick`` at
debug). After the k-th consecutive failure it is ``min(interval·2^k, max_backoff)`` ±
jitter (``loop.error`` with ``attempt`` and ``next_delay_ms``). An exception never ends a
loop; only :meth:`Supervisor.stop` does.

Time is injectable: *clock* measures durations and *wait* is how a loop pauses (by default
``Event.wait``), so tests drive the schedule without sleeping.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_cli_proxy.clock import SYSTEM_CLOCK, Clock
from agent_cli_proxy.log import get_logger

log = get_logger("supervisor")

Wait = Callable[[threading.Event, float], bool]
"""Pause up to *timeout* seconds; return True when *event* is set (time to stop)."""


class TickFailed(Exception):
    """Raise from a job to report an expected failure: logged without a traceback.

    The job has usually logged the cause itself (``pricing.refresh_failed``); raising
    still makes the supervisor back off and retry sooner than a whole interval.
    """


def _event_wait(event: threading.Event, timeout: float) -> bool:
    return event.wait(timeout)


def next_delay(interval_s: float, failures: int, *, jitter: float, max_backoff_s: float,
               rng: random.Random) -> float:
    """Seconds until the next run after *failures* consecutive failures (0 = success)."""
    base = interval_s if failures == 0 else min(interval_s * 2.0 ** failures, max_backoff_s)
    if jitter > 0:
        # Spread the loops of many instances (and of one instance's restarts) apart.
        base *= 1.0 + rng.uniform(-jitter, jitter)
    return max(base, 0.0)


@dataclass(slots=True)
class _Loop:
    name: str
    fn: Callable[[], object]
    interval_s: float
    initial_delay_s: float
    jitter: float
    max_backoff_s: float
    run_on_start: bool
    thread: threading.Thread | None = None
    failures: int = 0
    runs: int = 0
    last_error: str | None = None
    last_success_at: float | None = None

    def first_delay(self) -> float:
        if self.run_on_start or self.initial_delay_s > 0:
            return self.initial_delay_s
        return self.interval_s


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (
        value >= 0 if zero_ok else value > 0)
    if not ok:
        kind = "a non-negative" if zero_ok else "a positive"
        raise ValueError(f"Supervisor {name} must be {kind} finite number, got {value!r}")


class Supervisor:
    """Runs named loops until :meth:`stop`; ``names()`` lists the ones alive (``/ready``)."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, wait: Wait = _event_wait,
                 rng: random.Random | None = None) -> None:
        self._clock = clock
        self._wait = wait
        self._rng = rng or random.Random()  # jitter only: no secrets involved
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._loops: dict[str, _Loop] = {}
        self._started = False

    @property
    def stop_event(self) -> threading.Event:
        """Set when stopping: long jobs may check it between steps to finish early."""
        return self._stop

    def add(self, name: str, fn: Callable[[], object], *, interval_s: float,
            initial_delay_s: float = 0.0, jitter: float = 0.1, max_backoff_s: float = 60.0,
            run_on_start: bool = True) -> None:
        """Register loop *name*; it starts with :meth:`start`, or at once if already started.

        Raises ValueError for a duplicate name or an invalid option.
        """
        if not name:
            raise ValueError("Supervisor loop name must not be empty")
        _positive("interval_s", interval_s)
        _positive("initial_delay_s", initial_delay_s, zero_ok=True)
        _positive("max_backoff_s", max_backoff_s)
        if not (isinstance(jitter, (int, float)) and 0 <= jitter < 1):
            raise ValueError(f"Supervisor jitter must be in [0, 1), got {jitter!r}")
        loop = _Loop(name, fn, float(interval_s), float(initial_delay_s), float(jitter),
                     float(max_backoff_s), run_on_start)
        with self._lock:
            if name in self._loops:
                raise ValueError(f"Supervisor loop {name!r} is already registered")
            if self._stop.is_set():
                raise RuntimeError("Supervisor is stopped")
            self._loops[name] = loop
            if self._started:
                self._launch(loop)

    def start(self) -> None:
        """Start every registered loop (idempotent)."""
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError("Supervisor is stopped; build a new one")
            if self._started:
                return
            self._started = True
            for loop in self._loops.values():
                self._launch(loop)

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Wake and end every loop; wait up to *timeout_s* in total. True if all ended.

        A loop in the middle of a job ends when the job returns: jobs are never killed.
        """
        self._stop.set()
        with self._lock:
            loops = list(self._loops.values())
        # Real time, not the injected clock: Thread.join waits in real time.
        deadline = time.monotonic() + max(timeout_s, 0.0)
        all_done = True
        for loop in loops:
            if loop.thread is None:
                continue
            loop.thread.join(max(deadline - time.monotonic(), 0.001))
            if loop.thread.is_alive():
                all_done = False
                log.warning("loop.stop_timeout", name=loop.name, timeout_ms=round(timeout_s * 1000))
            else:
                log.info("loop.stopped", name=loop.name)
        return all_done

    def names(self) -> list[str]:
        """Sorted names of the loops whose thread is running."""
        with self._lock:
            return sorted(n for n, lp in self._loops.items()
                          if lp.thread is not None and lp.thread.is_alive())

    def status(self) -> dict[str, dict[str, Any]]:
        """Per loop: alive, runs, consecutive failures, last error, last success (epoch s)."""
        with self._lock:
            loops = list(self._loops.values())
        return {lp.name: {"running": lp.thread is not None and lp.thread.is_alive(),
                          "interval_s": lp.interval_s, "runs": lp.runs,
                          "failures": lp.failures, "last_error": lp.last_error,
                          "last_success_at": lp.last_success_at}
                for lp in sorted(loops, key=lambda lp: lp.name)}

    def _launch(self, loop: _Loop) -> None:
        loop.thread = threading.Thread(target=self._run, args=(loop,), name=f"loop-{loop.name}",
                                       daemon=True)
        loop.thread.start()
        log.info("loop.started", name=loop.name, interval_ms=round(loop.interval_s * 1000))

    def _run(self, loop: _Loop) -> None:
        delay = loop.first_delay()
        while not self._stop.is_set():
            if delay > 0 and self._wait(self._stop, delay):
                break
            if self._stop.is_set():
                break
            delay = self._tick(loop)

    def _tick(self, loop: _Loop) -> float:
        """Run the job once; return the delay before the next run."""
        started = self._clock.monotonic()
        loop.runs += 1
        try:
            loop.fn()
        except Exception as exc:
            loop.failures += 1
            loop.last_error = str(exc) or type(exc).__name__
            delay = next_delay(loop.interval_s, loop.failures, jitter=loop.jitter,
                               max_backoff_s=loop.max_backoff_s, rng=self._rng)
            fields: dict[str, Any] = {"name": loop.name, "err": loop.last_error,
                                      "error_type": type(exc).__name__,
                                      "attempt": loop.failures,
                                      "next_delay_ms": round(delay * 1000)}
            if isinstance(exc, TickFailed):
                log.error("loop.error", **fields)
            else:  # an unexpected exception is a bug somewhere: keep its traceback
                log.exception("loop.error", **fields)
            return delay
        loop.failures = 0
        loop.last_error = None
        loop.last_success_at = self._clock.time()
        log.debug("loop.tick", name=loop.name,
                  duration_ms=round((self._clock.monotonic() - started) * 1000, 1))
        return next_delay(loop.interval_s, 0, jitter=loop.jitter,
                          max_backoff_s=loop.max_backoff_s, rng=self._rng)

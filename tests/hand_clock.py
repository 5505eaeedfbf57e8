"""Time for tests: a clock that only moves when the test moves it (the one thing tests mock)."""

from __future__ import annotations

import threading


class HandClock:
    """Wall and monotonic time, both *now* seconds, until :meth:`advance`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class LoopClock(HandClock):
    """A HandClock that also stands in for the supervisor's wait between runs of a loop:
    it records the delay the loop asked for and holds the loop there until it is stopped."""

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.delays: list[float] = []
        self.paused = threading.Event()  # set once the loop has finished a run

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        self.delays.append(timeout)
        self.paused.set()
        stop.wait()
        return True

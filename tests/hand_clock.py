"""Time for tests: a clock that only moves when the test moves it (the one thing tests mock)."""

from __future__ import annotations


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

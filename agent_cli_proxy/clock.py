"""Wall and monotonic time behind one small interface, so tests can move time by hand."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (timestamps that are stored)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (durations)."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()

"""Circuit breakers: stop sending to an upstream that keeps failing, and test it gently.

One breaker per upstream. ``closed``: requests flow; N consecutive upstream failures
(UPSTREAM_CIRCUIT_BREAKER_OPEN_AFTER_FAILURES) open it. ``open``: requests are refused at
once (503 with Retry-After) until HALF_OPEN_AFTER has passed. ``half-open``: exactly one
request at a time is let through as a probe; its success closes the breaker, its failure
opens it again for another full wait. Only upstream failures count: connection errors,
timeouts, 5xx answers, and answers the upstream cut off after they had started. A client
that leaves, or a 4xx (the upstream answered, and refused), is not a failure of the
upstream.

Idle closed breakers are forgotten after EVICT_AFTER, so per-provider breakers of
providers no longer used do not pile up.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Literal

from agent_cli_proxy.clock import Clock
from agent_cli_proxy.log import get_logger

_log = get_logger("upstream")
State = Literal["closed", "open", "half-open"]
STATE_VALUES: dict[State, int] = {"closed": 0, "half-open": 1, "open": 2}


@dataclass(slots=True)
class Admission:
    allowed: bool
    probe: bool = False  # this request is the half-open probe: report how it went
    retry_after_s: int = 0
    decided: bool = False  # the first verdict counts; later ones (a catch-all) are ignored

    def _decide(self) -> bool:
        if self.decided:
            return False
        self.decided = True
        return True


class Breaker:
    def __init__(self, breaker_id: str, *, open_after: int, half_open_after_s: float,
                 clock: Clock) -> None:
        self.id = breaker_id
        self._open_after = open_after
        self._half_open_after_s = half_open_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._last_activity = clock.time()

    def admit(self) -> Admission:
        with self._lock:
            now = self._clock.time()
            self._last_activity = now
            if self._state == "open":
                wait = self._opened_at + self._half_open_after_s - now
                if wait > 0:
                    return Admission(False, retry_after_s=max(1, math.ceil(wait)))
                self._state = "half-open"
                _log.info("upstream.breaker_half_open", breaker=self.id)
            if self._state == "half-open":
                if self._probing:
                    # One probe at a time: the others would hit an upstream still unproven.
                    return Admission(False, retry_after_s=1)
                self._probing = True
                return Admission(True, probe=True)
            return Admission(True)

    def succeeded(self, admission: Admission, *, answer_pending: bool = False) -> None:
        """The upstream answered. With *answer_pending* (its first byte came, the rest is
        still to be relayed) a probe's success closes the breaker at once, so other
        requests need not wait for a long stream; but the count of consecutive failures
        is only cleared by :meth:`completed`, since the answer may still be cut off."""
        if not admission._decide():
            return
        with self._lock:
            self._last_activity = self._clock.time()
            if admission.probe:
                self._probing = False
                if self._state == "half-open":
                    _log.info("upstream.breaker_closed", breaker=self.id)
            if admission.probe or (self._state == "closed" and not answer_pending):
                self._state, self._failures = "closed", 0

    def completed(self) -> None:
        """An answer judged by its first byte arrived whole."""
        with self._lock:
            if self._state == "closed":
                self._failures = 0

    def failed(self, admission: Admission, reason: str) -> None:
        if not admission._decide():
            return
        with self._lock:
            if admission.probe:
                self._probing = False
            self._count_failure(reason, open_now=admission.probe)

    def broke_off(self, reason: str) -> None:
        """An answer that had started (and was judged by its first byte) was cut by the
        upstream: the connection broke, or it went silent. Counted as one more consecutive
        failure while closed; a half-open or open breaker has already judged this upstream
        by a later request."""
        with self._lock:
            if self._state == "closed":
                self._count_failure(reason, open_now=False)

    def _count_failure(self, reason: str, *, open_now: bool) -> None:
        now = self._clock.time()
        self._last_activity = now
        self._failures += 1
        if open_now or (self._state == "closed" and self._failures >= self._open_after):
            self._state, self._opened_at = "open", now
            _log.warning("upstream.breaker_open", breaker=self.id, failures=self._failures,
                         reason=reason, retry_after_s=round(self._half_open_after_s))

    def released(self, admission: Admission) -> None:
        """The request ended without a verdict on the upstream (the client left, a long
        non-streaming call timed out, or the proxy failed)."""
        if admission._decide() and admission.probe:
            with self._lock:
                self._probing = False

    def reset(self) -> None:
        with self._lock:
            self._state, self._failures, self._opened_at, self._probing = "closed", 0, 0.0, False
        _log.info("upstream.breaker_reset", breaker=self.id)

    def idle_closed_since(self, now: float) -> float | None:
        with self._lock:
            return now - self._last_activity if self._state == "closed" else None

    def snapshot(self) -> dict[str, Any]:
        """The original's field names (times in epoch milliseconds)."""
        with self._lock:
            state = self._state
            if state == "open" and self._clock.time() >= self._opened_at + self._half_open_after_s:
                state = "half-open"  # what the next request will find
            return {"providerId": self.id, "state": state, "failures": self._failures,
                    "openedAt": round(self._opened_at * 1000),
                    "lastActivity": round(self._last_activity * 1000)}


class Breakers:
    """The registry: one breaker per upstream id, created on first use."""

    def __init__(self, *, open_after: int, half_open_after_s: float, evict_after_s: float,
                 clock: Clock) -> None:
        self._open_after = open_after
        self._half_open_after_s = half_open_after_s
        self._evict_after_s = evict_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, Breaker] = {}

    def get(self, breaker_id: str) -> Breaker:
        with self._lock:
            breaker = self._breakers.get(breaker_id)
            if breaker is None:
                self._evict_idle()
                breaker = self._breakers[breaker_id] = Breaker(
                    breaker_id, open_after=self._open_after,
                    half_open_after_s=self._half_open_after_s, clock=self._clock)
            return breaker

    def _evict_idle(self) -> None:
        now = self._clock.time()
        for key, breaker in list(self._breakers.items()):
            idle = breaker.idle_closed_since(now)
            if idle is not None and idle >= self._evict_after_s:
                del self._breakers[key]

    def find(self, breaker_id: str) -> Breaker | None:
        with self._lock:
            return self._breakers.get(breaker_id)

    def snapshots(self) -> list[dict[str, Any]]:
        with self._lock:
            breakers = sorted(self._breakers.values(), key=lambda b: b.id)
        return [b.snapshot() for b in breakers]

"""The last ``/ready`` answer, shared for a few seconds.

Load balancers and orchestrators probe often, and the upstream check is a network call:
callers within the TTL get the cached answer, and concurrent callers wait for the one
evaluation in progress instead of starting their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

TTL_S = 3.0


class ReadyCache:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._value: Any = None
        self._at: float | None = None

    def get(self, now: float, compute: Callable[[], Any]) -> Any:
        with self._lock:  # held while computing: concurrent callers share one evaluation
            if self._at is None or now - self._at >= self.ttl_s or now < self._at:
                self._value = compute()
                self._at = now
            return self._value

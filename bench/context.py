"""What every benchmark phase shares: the plan (how long, how much), the figures collected
so far, the tools and processes of the run, and progress output."""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import accounting
from processes import Procs, free_port

BENCH_DIR = Path(__file__).resolve().parent
CONCURRENCY = (1, 32)
OPEN_STREAMS_SPARE_THREADS = 140


@dataclass(frozen=True)
class Plan:
    """How long and how much each measurement runs."""

    repeat: int
    wrk_seconds: int
    warmup_seconds: int
    ttfb_streams: int
    delay_streams: int
    delay_events: int
    delay_interval_ms: float
    open_streams: int
    open_events: int
    open_interval_ms: float
    open_ramp_s: float
    startups: int
    sqlite_rows: int


FULL = Plan(repeat=3, wrk_seconds=10, warmup_seconds=2, ttfb_streams=100, delay_streams=20,
            delay_events=40, delay_interval_ms=10, open_streams=500, open_events=100,
            open_interval_ms=100, open_ramp_s=2, startups=5, sqlite_rows=5000)
QUICK = Plan(repeat=1, wrk_seconds=2, warmup_seconds=1, ttfb_streams=20, delay_streams=5,
             delay_events=20, delay_interval_ms=10, open_streams=100, open_events=30,
             open_interval_ms=100, open_ramp_s=1, startups=3, sqlite_rows=1000)


class Figures:
    """Samples per (measurement, side) across repeats, and the measurements that failed."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.failures: dict[str, str] = {}
        self.accounting: list[tuple[str, accounting.AccountingResult]] = []

    def add(self, key: str, side: str, value: float | None) -> None:
        if value is not None:
            self.samples[key, side].append(value)

    def median(self, key: str, side: str) -> float | None:
        values = self.samples.get((key, side))
        return statistics.median(values) if values else None

    def fail(self, key: str, message: str) -> None:
        first_line = message.strip().splitlines()[0] if message.strip() else "failed"
        self.failures.setdefault(key, first_line[:300])
        log(f"  FAILED {key}: {message}")

    @property
    def accounting_ok(self) -> bool:
        return bool(self.accounting) and all(r.ok for _, r in self.accounting)


@dataclass
class Bench:
    """Everything a phase needs: the plan, the tools, the process registry, the results."""

    plan: Plan
    nginx: str
    wrk: str
    threads: int | None
    """PROXY_THREADS for every proxy but the open-streams one (None: the proxy's default)."""
    workdir: Path
    workers: int | None = None
    """PROXY_WORKERS of every proxy (None: the proxy's default, one)."""
    procs: Procs = field(default_factory=Procs)
    figures: Figures = field(default_factory=Figures)
    dead_port: int = field(default_factory=free_port)


def open_threads(plan: Plan) -> int:
    """PROXY_THREADS for the open-streams run: every stream holds a thread, plus room."""
    return plan.open_streams + OPEN_STREAMS_SPARE_THREADS


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

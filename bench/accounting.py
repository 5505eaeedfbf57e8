"""The accounting check: every call a client counted is one completed row with its usage.

Read straight from the proxy's SQLite file (WAL lets us read while it writes). A run is
compared by difference: a snapshot before wrk starts and one after the proxy has finalized
everything (no row left ``pending``).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import repo_path  # noqa: F401  (the checkout's agent_cli_proxy)

from agent_cli_proxy.usage.model import Usage

BUCKETS = ("prompt_tokens", "cache_read_tokens", "cache_creation_tokens",
           "cache_creation_1h_tokens", "completion_tokens", "reasoning_tokens",
           "total_tokens")


@dataclass(frozen=True)
class Snapshot:
    by_lifecycle: dict[str, int]
    completed_tokens: dict[str, int]

    def count(self, lifecycle: str) -> int:
        return self.by_lifecycle.get(lifecycle, 0)


def snapshot(db_path: Path) -> Snapshot:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        by_lifecycle = dict(conn.execute(
            "SELECT lifecycle_status, COUNT(*) FROM request_logs GROUP BY 1").fetchall())
        sums = conn.execute(
            "SELECT " + ", ".join(f"COALESCE(SUM({b}), 0)" for b in BUCKETS)
            + " FROM request_logs WHERE lifecycle_status = 'completed'").fetchone()
    finally:
        conn.close()
    return Snapshot(by_lifecycle, dict(zip(BUCKETS, sums, strict=True)))


def settled_snapshot(db_path: Path, timeout_s: float = 10.0) -> Snapshot:
    """A snapshot once no row is pending (the proxy finalizes a row after its last byte)."""
    deadline = time.monotonic() + timeout_s
    while True:
        snap = snapshot(db_path)
        if snap.count("pending") == 0 or time.monotonic() > deadline:
            return snap
        time.sleep(0.05)


def expected_tokens(usage: Usage, calls: int) -> dict[str, int]:
    return {bucket: getattr(usage, bucket) * calls for bucket in BUCKETS}


@dataclass(frozen=True)
class AccountingResult:
    ok: bool
    message: str


def check(before: Snapshot, after: Snapshot, requests: int, usage: Usage) -> AccountingResult:
    """Compare the rows a run added with the requests its client counted, each of which
    must carry *usage*."""
    def added(lifecycle: str) -> int:
        return after.count(lifecycle) - before.count(lifecycle)

    completed = added("completed")
    others = {name: added(name) for name in ("pending", "error", "aborted") if added(name)}
    tokens = {b: after.completed_tokens[b] - before.completed_tokens[b] for b in BUCKETS}
    expected = expected_tokens(usage, requests)
    problems = []
    if completed != requests:
        problems.append(f"{completed} completed rows for {requests} requests")
    if others:
        problems.append("other rows: " + ", ".join(f"{n} {k}" for k, n in others.items()))
    wrong = [f"{b} {tokens[b]} != {expected[b]}" for b in BUCKETS if tokens[b] != expected[b]]
    if wrong:
        problems.append("tokens: " + "; ".join(wrong))
    if problems:
        return AccountingResult(False, "; ".join(problems))
    return AccountingResult(True, f"{completed} completed rows = {requests} requests, "
                                  f"{tokens['total_tokens']:,} tokens = "
                                  f"{usage.total_tokens} x {requests}")

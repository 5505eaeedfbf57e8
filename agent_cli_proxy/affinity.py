"""Which CPU the server runs on (PROXY_CPU_AFFINITY).

All of the proxy's Python code runs under one interpreter lock. When its threads may run
on any CPU, the lock is handed from a thread on one CPU to a thread on another many times
per call (each socket and SQLite call releases it), and every such hand-over wakes the
other CPU and moves the lock's and the interpreter's cache lines across. Measured on a
2-CPU machine with 32 concurrent calls: 2.2 ms of CPU per call on both CPUs, 1.4 ms when
pinned to one, and 500 -> 700 calls/s (docs/benchmarks.md). The other CPUs stay free for
the upstream, the clients and the kernel's network work.

``auto`` pins to the CPU the process is running on when it starts, so two proxies on
one machine usually land on different CPUs; a number pins to that CPU. With several
workers (PROXY_WORKERS) each gets its own CPU, the next ones after the first, round the
set it may use. Linux only (the call exists nowhere else); elsewhere ``auto`` does
nothing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from agent_cli_proxy.config import ConfigError, ConfigIssue

SETTING = "PROXY_CPU_AFFINITY"


def _current_cpu() -> int | None:
    """The CPU this process last ran on (field 39 of /proc/self/stat), if known."""
    try:
        stat = Path("/proc/self/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: fields are counted
    # from after its closing parenthesis, where field 3 starts.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[39 - 3])
    except (IndexError, ValueError):
        return None


def _threads() -> list[int]:
    """Thread ids of this process (the affinity call sets one thread's)."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]  # 0: the calling thread


def plan_cpus(setting: str | int, workers: int = 1) -> list[int | None]:
    """The CPU of each of *workers* processes (None: not pinned): the first on the CPU the
    setting names (``auto``: the one this process runs on), the next ones on the CPUs
    after it, round the set this process may use.

    Raises ConfigError for a CPU number this process may not run on.
    """
    if setting == "off" or not hasattr(os, "sched_setaffinity"):
        if isinstance(setting, int):
            raise ConfigError([ConfigIssue(SETTING, "CPU affinity is not supported here")])
        return [None] * workers
    allowed = sorted(os.sched_getaffinity(0))
    if isinstance(setting, int):
        if setting not in allowed:
            listed = ", ".join(str(cpu) for cpu in allowed)
            raise ConfigError([ConfigIssue(
                SETTING, f"CPU {setting} is not one this process may run on ({listed})")])
        first = setting
    else:
        if len(allowed) < 2:
            return [None] * workers  # already on one CPU (a container, CPUAffinity=)
        current = _current_cpu()
        first = current if current in allowed else allowed[0]
    start = allowed.index(first)
    return [allowed[(start + i) % len(allowed)] for i in range(workers)]


def pin_threads(cpu: int | None) -> None:
    """Put every thread of this process on *cpu* (threads started later inherit it)."""
    if cpu is None:
        return
    for tid in _threads():
        # OSError: the thread ended meanwhile.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, {cpu})


def pin_process(setting: str | int) -> int | None:
    """Apply *setting* to this single process; return the CPU pinned to, or None."""
    cpu = plan_cpus(setting)[0]
    pin_threads(cpu)
    return cpu

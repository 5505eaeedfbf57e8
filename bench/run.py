#!/usr/bin/env python3
"""Benchmark agent-cli-proxy against a direct upstream, in one command.

    python bench/run.py [--quick] [--repeat N] [--out FILE]

What it starts (all on 127.0.0.1, all stopped at the end, also on Ctrl-C or failure):

* nginx with a generated config serving canned OpenAI / Anthropic answers (no Python in the
  upstream's hot path), for the wrk runs (``upstream_nginx.py``);
* a paced SSE upstream that stamps each event with its send time (``paced_upstream.py``),
  for time to first byte, per-event delay and the open-streams run;
* ``agent-cli-proxy serve`` on a temporary database, pointed at one or the other
  (``proxy_process.py``).

What it measures (``phases.py``), each ``--repeat`` times (medians reported), direct (client →
upstream) and through the proxy (client → proxy → upstream): wrk latency p50/p99 and req/s,
non-streaming and streaming, at concurrency 1 and 32; streaming TTFB and per-event delay;
per-event delay and the proxy's peak RSS with 500 streams open at once; the proxy's idle RSS
and its start-up time to the first 200 from ``/ready``; and insert + finalize rows/s of the
proxy's own SQLite code. After every run through the proxy it checks the accounting:
completed rows = requests the client counted, token sums = canned usage x requests.

It prints a Markdown table (figure, target, met?) and writes it with the machine's
description to ``--out``. Exit status: 0 when everything ran and every call was accounted
for, 1 when a run failed or rows were lost (targets missed do not change it), 2 when nginx or
wrk is missing. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import report
from context import CONCURRENCY, FULL, QUICK, Bench, Figures, Plan, log, open_threads
from phases import PHASES, run
from processes import ChildFailed
from report import Row


def find_tool(name: str) -> str | None:
    """*name* on PATH, or in the sbin directories a non-root PATH leaves out."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/local/bin"):
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_tools() -> tuple[str, str]:
    nginx, wrk_path = find_tool("nginx"), find_tool("wrk")
    missing = [name for name, path in (("nginx", nginx), ("wrk", wrk_path)) if path is None]
    if missing:
        print(f"bench/run.py needs {' and '.join(missing)}, which "
              f"{'is' if len(missing) == 1 else 'are'} not installed.\n"
              "Install with your package manager, e.g. on Debian or Ubuntu:\n\n"
              "    sudo apt install nginx wrk\n\n"
              "(the nginx package's own service need not run: the benchmark starts its own "
              "nginx on a free loopback port.)", file=sys.stderr)
        sys.exit(2)
    assert nginx is not None and wrk_path is not None
    return nginx, wrk_path


# -- the table ------------------------------------------------------------------------------

def _at_most(limit: float) -> report.Check:
    return lambda _direct, proxy: None if proxy is None else proxy <= limit


def _at_least(limit: float, *, also: bool = True) -> report.Check:
    return lambda _direct, proxy: None if proxy is None else proxy >= limit and also


def _added_at_most(limit: float) -> report.Check:
    return lambda direct, proxy: (None if direct is None or proxy is None
                                  else proxy - direct <= limit)


def build_rows(bench: Bench) -> list[Row]:
    fig, n = bench.figures, bench.plan.open_streams
    c32_accounted = all(r.ok for key, r in fig.accounting if key == "nonstream-c32")

    def row(label: str, key: str, unit: str, compare: str = "", target: str = "",
            check: report.Check | None = None, failure_key: str | None = None) -> Row:
        direct, proxy = fig.median(key, "direct"), fig.median(key, "proxy")
        met = check(direct, proxy) if check else None
        return Row(label, unit, direct, proxy, compare, target, met,
                   fig.failures.get(failure_key or key.split(":")[0], ""))

    rows = []
    for kind, label in (("nonstream", "Non-streaming"), ("stream", "Streaming")):
        for conns in CONCURRENCY:
            key = f"{kind}-c{conns}"
            p50_check = (_added_at_most(0.5) if key == "nonstream-c1" else None)
            rows.append(row(f"{label} c={conns} latency p50", f"{key}:p50", "ms", "added",
                            "added ≤ 0.5 ms" if p50_check else "", p50_check))
            rows.append(row(f"{label} c={conns} latency p99", f"{key}:p99", "ms", "added"))
            rps_target = ""
            rps_check: report.Check | None = None
            if key == "nonstream-c32":
                rps_target = "proxy ≥ 1,500 req/s, full accounting"
                rps_check = _at_least(1500.0, also=c32_accounted)
            rows.append(row(f"{label} c={conns} throughput", f"{key}:rps", "req/s", "ratio",
                            rps_target, rps_check))
            if conns == max(CONCURRENCY):
                rows.append(row(f"{label} c={conns}: proxy CPU per call", f"{key}:cpu", "ms"))
    rows += [
        row("Streaming TTFB p50", "ttfb", "ms", "added", "added ≤ 1 ms", _added_at_most(1.0)),
        row("SSE per-event delay p50", "delay:p50", "ms", "added"),
        row("SSE per-event delay p99", "delay:p99", "ms", "added", "added ≤ 1 ms",
            _added_at_most(1.0)),
        row(f"{n} open streams: per-event delay p99", "open:p99", "ms", "added",
            "proxy ≤ 20 ms", _at_most(20.0), failure_key="open"),
        row(f"{n} open streams: proxy peak RSS (VmHWM)", "open:rss", "MB", "", "≤ 200 MB",
            _at_most(200.0), failure_key="open"),
        row("Idle RSS after start-up", "idle_rss", "MB", "", "≤ 40 MB", _at_most(40.0)),
        row("Start-up: spawn to first 200 from /ready", "startup", "s", "", "≤ 1 s",
            _at_most(1.0)),
        row("Proxy RSS after the wrk runs", "wrk_rss", "MB"),
        row("Proxy open file descriptors after the wrk runs", "fds", "fds"),
        row("SQLite insert + finalize, a transaction each (storage code)", "sqlite",
            "rows/s"),
        row("SQLite insert + finalize through the row writer (what serve does)",
            "sqlite_writer", "rows/s", "", "≥ 1,500 rows/s (implied by c=32)",
            _at_least(1500.0)),
    ]
    # Leave out what this run did not measure (--only).
    return [r for r in rows if r.direct is not None or r.proxy is not None or r.note]


def accounting_lines(fig: Figures) -> list[str]:
    if not fig.accounting:
        return ["Accounting: NOT CHECKED (no run through the proxy completed)."]
    bad = [(key, r) for key, r in fig.accounting if not r.ok]
    unchecked = ""
    if fig.failures:
        unchecked = (" Runs that failed (" + ", ".join(sorted(fig.failures)) + ") are not "
                     "part of this check.")
    if not bad:
        return [f"Accounting: OK. After each of {len(fig.accounting)} runs through the proxy, "
                "completed rows = requests the client counted and token sums = canned usage "
                "x requests; no row left pending, none errored or aborted." + unchecked]
    return ["Accounting: **MISMATCH**. Rows were lost or wrong:" + unchecked,
            *(f"* {key}: {r.message}" for key, r in bad)]


def render(bench: Bench, rows: list[Row], info: list[str], note: str) -> str:
    parts = ["# agent-cli-proxy benchmark", ""]
    if note:
        parts += [f"**Note:** {note}", ""]
    parts += [f"* {line}" for line in info]
    parts += ["", report.markdown_table(rows), "", *accounting_lines(bench.figures), ""]
    return "\n".join(parts)


# -- main -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark agent-cli-proxy against a direct upstream (nginx + wrk).")
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat, short runs, 100 open streams: checks the runner works")
    parser.add_argument("--repeat", type=int, help="repeats of each measurement (default 3)")
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    parser.add_argument("--threads", type=int,
                        help="PROXY_THREADS of the proxy, except in the open-streams run, "
                             "which uses streams + 140 (default: the proxy's own default)")
    parser.add_argument("--workers", type=int,
                        help="PROXY_WORKERS of every proxy (default: the proxy's own "
                             "default, 1); CPU, RSS and fd figures add up all workers")
    parser.add_argument("--note", default="",
                        help="a note printed above the table, e.g. how loaded the machine was")
    parser.add_argument("--only", metavar="PHASE,...",
                        help=f"run only these phases, of: {', '.join(PHASES)}")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (configs, logs, databases)")
    return parser.parse_args(argv)


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = set(PHASES) if not args.only else {p.strip() for p in args.only.split(",")}
    if not phases <= set(PHASES):
        print(f"--only: unknown phase(s) {sorted(phases - set(PHASES))}; "
              f"choose from {', '.join(PHASES)}", file=sys.stderr)
        return 2
    nginx, wrk_path = require_tools()
    plan = QUICK if args.quick else FULL
    if args.repeat is not None:
        plan = Plan(**{**plan.__dict__, "repeat": max(1, args.repeat)})
    # Also SIGINT: a shell starting us in the background may have set it to "ignore".
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="acp-bench-"))
    bench = Bench(plan, nginx, wrk_path, args.threads, workdir, workers=args.workers)
    load_before = report.load_average()
    started = time.monotonic()
    status = 0
    try:
        run(bench, phases)
    except KeyboardInterrupt:
        log("interrupted: stopping everything the benchmark started")
        return 130
    except (ChildFailed, RuntimeError, OSError, ValueError) as exc:
        log(f"benchmark failed: {exc}")
        status = 1
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.procs.stop_all()
        if args.keep or status:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = build_rows(bench)
    info = report.machine_info(nginx, wrk_path, {
        "plan": ("quick" if args.quick else "full") + f", {plan.repeat} repeat(s), medians; "
                f"phases {', '.join(p for p in PHASES if p in phases)}; "
                f"wrk {plan.wrk_seconds:g} s per run",
        "PROXY_THREADS": f"{bench.threads or 'default'}; {open_threads(plan)} for the "
                         f"{plan.open_streams} open streams",
        "PROXY_WORKERS": f"{bench.workers or 'default (1)'}",
        "load average (1/5/15 min) at start → end": f"{load_before} → {report.load_average()}",
        "duration": f"{time.monotonic() - started:.0f} s",
    })
    text = render(bench, rows, info, args.note)
    print(text)
    if args.out:
        args.out.write_text(text)
    needs_accounting = bool(phases & {"wrk", "streams", "open"})
    if bench.figures.failures or (needs_accounting and not bench.figures.accounting_ok):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

"""The measurements, one function per phase; each adds its samples to ``bench.figures``.

* ``sqlite``: insert + finalize rows/s of the proxy's storage code (per write, and
  batched by the row writer);
* ``startup``: spawn to first 200 from ``/ready``, and idle RSS;
* ``wrk``: latency and req/s direct vs through the proxy, with the accounting check;
* ``streams``: TTFB and per-event delay against the paced upstream;
* ``open``: hundreds of streams open at once: per-event delay and the proxy's peak RSS.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import accounting
import paced_upstream
import repo_path  # noqa: F401  (the checkout's agent_cli_proxy)
import storage_bench
import upstream_nginx
import wrk
from context import BENCH_DIR, CONCURRENCY, Bench, log, open_threads
from processes import ChildFailed, cpu_seconds, memory_kib, open_fds, python_env, tail
from proxy_process import Proxy, require_alive, start_paced, start_proxy

from agent_cli_proxy.usage.model import Usage

PACED_USAGE = Usage(prompt_tokens=paced_upstream.USAGE["input_tokens"],
                    cache_read_tokens=paced_upstream.USAGE["cache_read_input_tokens"],
                    cache_creation_tokens=paced_upstream.USAGE["cache_creation_input_tokens"],
                    completion_tokens=paced_upstream.USAGE["output_tokens"])
"""What the proxy must record for each paced stream (Anthropic's fields as our buckets)."""


def sqlite_phase(bench: Bench) -> None:
    log(f"[sqlite] insert + finalize, {bench.plan.sqlite_rows} rows x {bench.plan.repeat}")
    for _ in range(bench.plan.repeat):
        rate = storage_bench.finalize_throughput(bench.plan.sqlite_rows)
        bench.figures.add("sqlite", "proxy", rate)
        batched = storage_bench.writer_throughput(bench.plan.sqlite_rows)
        bench.figures.add("sqlite_writer", "proxy", batched)
        log(f"  {rate:,.0f} rows/s one transaction per write, {batched:,.0f} through the "
            "row writer")


def startup_phase(bench: Bench, upstream_url: str) -> None:
    log(f"[start-up] {bench.plan.startups} starts on one database (the first migrates it)")
    for _ in range(bench.plan.startups):
        proxy, seconds = start_proxy(bench, "proxy-startup", upstream_url)
        try:
            time.sleep(1.0)  # let start-up work (first price refresh attempt…) settle
            rss_mb = memory_kib(proxy.proc.pid)["VmRSS"] / 1024
        finally:
            bench.procs.stop(proxy.proc)
        bench.figures.add("startup", "proxy", seconds)
        bench.figures.add("idle_rss", "proxy", rss_mb)
        log(f"  ready after {seconds:.3f} s, idle RSS {rss_mb:.1f} MB")


def _record_wrk(bench: Bench, key: str, side: str, result: wrk.WrkResult) -> None:
    bench.figures.add(f"{key}:p50", side, result.p50_ms)
    bench.figures.add(f"{key}:p99", side, result.p99_ms)
    bench.figures.add(f"{key}:rps", side, result.rps)
    log(f"  {key} {side:6}: {result.rps:>9,.0f} req/s  p50 {result.p50_ms:.3f} ms  "
        f"p99 {result.p99_ms:.3f} ms  ({result.requests} requests)")
    if not result.clean:
        bench.figures.fail(key, f"{side}: {result.non_2xx} non-2xx responses, "
                                f"{result.socket_errors} socket errors")


def wrk_phase(bench: Bench, nginx_url: str, calls: dict[str, upstream_nginx.CannedCall]) -> None:
    plan = bench.plan
    log(f"[wrk] {plan.wrk_seconds:g} s per run, concurrency {CONCURRENCY}, x {plan.repeat}")
    scripts = {}
    for kind, call in calls.items():
        scripts[kind] = bench.workdir / f"wrk-{kind}.lua"
        scripts[kind].write_text(wrk.lua_script(call.request_body, call.request_headers))
    proxy, _ = start_proxy(bench, "proxy-wrk", nginx_url)
    try:
        for kind, call in calls.items():  # warm-up: pools, page cache, CPU frequency
            for base in (nginx_url, proxy.url):
                _wrk(bench, base + call.path, scripts[kind], max(CONCURRENCY),
                     plan.warmup_seconds)
        for _ in range(plan.repeat):
            for kind, call in calls.items():
                for conns in CONCURRENCY:
                    key = f"{kind}-c{conns}"
                    direct = _wrk(bench, nginx_url + call.path, scripts[kind], conns)
                    _record_wrk(bench, key, "direct", direct)
                    _wrk_through_proxy(bench, proxy, key, call, scripts[kind], conns)
        fds, rss_mb = open_fds(proxy.proc.pid), memory_kib(proxy.proc.pid)["VmRSS"] / 1024
        bench.figures.add("fds", "proxy", fds)
        bench.figures.add("wrk_rss", "proxy", rss_mb)
        log(f"  after the wrk runs the proxy has {fds} open file descriptors, RSS {rss_mb:.1f} MB")
    finally:
        bench.procs.stop(proxy.proc)


def _wrk(bench: Bench, url: str, script: Path, conns: int,
         seconds: int | None = None) -> wrk.WrkResult:
    return wrk.run_wrk(bench.procs, bench.wrk, url, script, connections=conns,
                       duration_s=bench.plan.wrk_seconds if seconds is None else seconds,
                       log=bench.workdir / "wrk.log")


def _wrk_through_proxy(bench: Bench, proxy: Proxy, key: str,
                       call: upstream_nginx.CannedCall, script: Path, conns: int) -> None:
    """One wrk run through the proxy: its figures, its CPU per call and its accounting."""
    before = accounting.settled_snapshot(proxy.db)
    cpu_before = cpu_seconds(proxy.proc.pid)
    result = _wrk(bench, proxy.url + call.path, script, conns)
    require_alive(proxy)
    after = accounting.settled_snapshot(proxy.db)  # every row finalized
    cpu_ms = (cpu_seconds(proxy.proc.pid) - cpu_before) * 1000
    _record_wrk(bench, key, "proxy", result)
    if result.requests:
        bench.figures.add(f"{key}:cpu", "proxy", cpu_ms / result.requests)
        log(f"  {key} proxy CPU {cpu_ms / result.requests:.3f} ms per call")
    _account(bench, key, accounting.check(before, after, result.requests, call.response.usage))


def _account(bench: Bench, key: str, result: accounting.AccountingResult) -> None:
    bench.figures.accounting.append((key, result))
    log(f"  accounting {key}: {'OK' if result.ok else 'MISMATCH'}: {result.message}")


@dataclass(frozen=True)
class StreamLoad:
    """What sse_client.py runs: *slots* connections, *streams* streams on each, every
    stream *events* deltas *interval_ms* apart; slots start spread over *ramp_s*."""

    slots: int
    streams: int
    events: int
    interval_ms: float
    ramp_s: float = 0.0


def run_client(bench: Bench, url: str, load: StreamLoad,
               watch_pid: int | None = None) -> tuple[dict[str, object], int | None]:
    """Run sse_client.py; return its JSON summary and, with *watch_pid*, that process's
    peak RSS (KiB) over the run."""
    timeout = load.ramp_s + load.streams * (load.events * load.interval_ms / 1000 + 5) + 60
    argv = [sys.executable, str(BENCH_DIR / "sse_client.py"), "--url", f"{url}/v1/messages",
            "--slots", str(load.slots), "--streams", str(load.streams),
            "--events", str(load.events), "--interval-ms", f"{load.interval_ms:g}",
            "--ramp-s", f"{load.ramp_s:g}", "--timeout-s", f"{timeout:g}"]
    proc = bench.procs.spawn("sse-client", argv, log=bench.workdir / "sse-client.log",
                             env=python_env(), stdout_pipe=True)
    peak_kib: int | None = None
    try:
        deadline = time.monotonic() + timeout + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if watch_pid is not None:
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    # A process that has exited (a zombie) reports no memory lines.
                    hwm = memory_kib(watch_pid).get("VmHWM")
                    if hwm is not None:
                        peak_kib = max(peak_kib or 0, hwm)
            time.sleep(0.25)
        assert proc.stdout is not None
        out = proc.stdout.read() if proc.poll() is not None else b""
    finally:
        bench.procs.stop(proc)
    try:
        summary: dict[str, object] = json.loads(out.decode() or "null") or {}
    except json.JSONDecodeError:
        summary = {}
    if not summary:
        raise ChildFailed(f"sse_client.py gave no result; log:\n"
                          f"{tail(bench.workdir / 'sse-client.log')}")
    return summary, peak_kib


def _stat(summary: dict[str, object], name: str, q: str) -> float | None:
    stats = summary.get(name)
    value = stats.get(q) if isinstance(stats, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _count(summary: dict[str, object], name: str) -> int:
    value = summary.get(name)
    return value if isinstance(value, int) else 0


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} ms"


def _client_problem(summary: dict[str, object]) -> str | None:
    if summary.get("streams_failed") or summary.get("errors"):
        return (f"{summary.get('streams_failed')} streams failed, "
                f"{summary.get('events')} of {summary.get('expected_events')} events; "
                f"first errors: {summary.get('errors')}")
    return None


def paced_phase(bench: Bench, paced_url: str) -> None:
    plan = bench.plan
    log(f"[streams] TTFB ({plan.ttfb_streams} streams) and per-event delay "
        f"({plan.delay_streams} streams x {plan.delay_events} events, "
        f"{plan.delay_interval_ms:g} ms apart), x {plan.repeat}")
    proxy, _ = start_proxy(bench, "proxy-paced", paced_url)
    try:
        for _ in range(plan.repeat):
            _paced_streams(bench, "direct", paced_url)
            before = accounting.settled_snapshot(proxy.db)
            streams = _paced_streams(bench, "proxy", proxy.url)
            require_alive(proxy)
            after = accounting.settled_snapshot(proxy.db)
            _account(bench, "paced streams",
                     accounting.check(before, after, streams, PACED_USAGE))
    finally:
        bench.procs.stop(proxy.proc)


def _paced_streams(bench: Bench, side: str, base_url: str) -> int:
    """TTFB and per-event delay runs, one stream at a time; how many streams succeeded."""
    plan = bench.plan
    ttfb, _ = run_client(bench, base_url, StreamLoad(1, plan.ttfb_streams, 0, 0))
    delay, _ = run_client(bench, base_url, StreamLoad(
        1, plan.delay_streams, plan.delay_events, plan.delay_interval_ms))
    for key, summary in (("ttfb", ttfb), ("delay", delay)):
        problem = _client_problem(summary)
        if problem:
            bench.figures.fail(key, f"{side}: {problem}")
    bench.figures.add("ttfb", side, _stat(ttfb, "ttfb_ms", "p50"))
    bench.figures.add("delay:p50", side, _stat(delay, "delay_ms", "p50"))
    bench.figures.add("delay:p99", side, _stat(delay, "delay_ms", "p99"))
    log(f"  {side:6}: TTFB p50 {_ms(_stat(ttfb, 'ttfb_ms', 'p50'))}, event delay "
        f"p50 {_ms(_stat(delay, 'delay_ms', 'p50'))}, p99 {_ms(_stat(delay, 'delay_ms', 'p99'))}")
    return _count(ttfb, "streams_ok") + _count(delay, "streams_ok")


def open_streams_phase(bench: Bench, paced_url: str) -> None:
    plan = bench.plan
    n = plan.open_streams
    log(f"[open streams] {n} at once, {plan.open_events} events {plan.open_interval_ms:g} ms "
        f"apart, x {plan.repeat}")
    load = StreamLoad(n, 1, plan.open_events, plan.open_interval_ms, plan.open_ramp_s)
    for _ in range(plan.repeat):
        direct, _ = run_client(bench, paced_url, load)
        bench.figures.add("open:p99", "direct", _stat(direct, "delay_ms", "p99"))
        # A fresh proxy each time, so its peak RSS (VmHWM) belongs to this run. Each open
        # stream holds a worker thread for its whole life.
        proxy, _ = start_proxy(bench, "proxy-open", paced_url, threads=open_threads(plan))
        try:
            before = accounting.settled_snapshot(proxy.db)
            through, peak_kib = run_client(bench, proxy.url, load, watch_pid=proxy.proc.pid)
            require_alive(proxy)
            after = accounting.settled_snapshot(proxy.db)
            _account(bench, f"{n} open streams",
                     accounting.check(before, after, _count(through, "streams_ok"),
                                      PACED_USAGE))
        except ChildFailed as exc:
            bench.figures.fail("open", str(exc))
            continue
        finally:
            bench.procs.stop(proxy.proc)
        problem = _client_problem(through)
        if problem:
            bench.figures.fail("open", f"proxy: {problem}")
        else:
            bench.figures.add("open:p99", "proxy", _stat(through, "delay_ms", "p99"))
            bench.figures.add("open:rss", "proxy", (peak_kib or 0) / 1024)
        log(f"  event delay p99 direct {_ms(_stat(direct, 'delay_ms', 'p99'))}, proxy "
            f"{_ms(_stat(through, 'delay_ms', 'p99'))}; proxy peak RSS "
            f"{(peak_kib or 0) / 1024:.1f} MB; {_count(through, 'streams_ok')} of {n} streams ok")


PHASES = ("sqlite", "startup", "wrk", "streams", "open")


def run(bench: Bench, phases: set[str]) -> None:
    calls = upstream_nginx.canned_calls()
    if "sqlite" in phases:
        sqlite_phase(bench)
    if phases & {"startup", "wrk"}:
        log("[nginx] starting the canned upstream")
        nginx = upstream_nginx.start_nginx(bench.procs, bench.nginx, bench.workdir, calls)
        if "startup" in phases:
            startup_phase(bench, nginx.url)
        if "wrk" in phases:
            wrk_phase(bench, nginx.url, calls)
        bench.procs.stop(nginx.proc)
    if phases & {"streams", "open"}:
        paced_url = start_paced(bench)
        if "streams" in phases:
            paced_phase(bench, paced_url)
        if "open" in phases:
            open_streams_phase(bench, paced_url)

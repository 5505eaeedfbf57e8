#!/usr/bin/env python3
"""What the proxy's stack adds by itself, before any of the proxy's own work.

    python bench/stack_floor.py [--repeat N] [--seconds S]

Runs wrk at concurrency 1 (the non-streaming canned call, as ``run.py`` does) against:

* ``direct``: nginx serving the canned answer;
* ``waitress``: a WSGI app answering the same bytes itself, served the way ``serve``
  serves the proxy (its waitress settings and connection class, one pinned CPU);
* ``pass-through``: the same server, the app forwarding the body to nginx through one
  urllib3 pool (``urlopen``, as the proxy did before ``upstream/exchange.py``) and
  answering with what came back: the least any proxy on this stack does;
* ``proxy``: ``agent-cli-proxy serve`` with its defaults, started as ``run.py`` starts it.

and prints each one's p50 and what it adds over ``direct``. The difference between
``pass-through`` and ``proxy`` is the proxy's own per-call work (routing, identification,
rows, cost, metrics); ``pass-through`` itself is what the libraries cost. A script, not a
test: it needs nginx and wrk. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import repo_path  # noqa: F401  (the checkout's agent_cli_proxy)
import upstream_nginx
import wrk as wrk_runs
from context import FULL, Bench
from processes import free_port, python_env
from proxy_process import start_proxy
from run import find_tool

KINDS = ("direct", "waitress", "pass-through", "proxy")


def serve_bare(kind: str, port: int, upstream_port: int) -> None:
    """Serve a bare app (*kind* ``waitress`` or ``pass-through``) the way ``serve`` does."""
    import urllib3
    from waitress.server import create_server

    from agent_cli_proxy.affinity import pin_process
    from agent_cli_proxy.server import _listeners, _sockets
    from agent_cli_proxy.server_channel import ProxyChannel, serve_in_a_row

    canned = upstream_nginx.canned_calls()["nonstream"].response.body
    pool = urllib3.HTTPConnectionPool("127.0.0.1", upstream_port, maxsize=8)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if kind == "waitress":
            data = canned
        else:
            answer = pool.urlopen("POST", environ["PATH_INFO"], body=body,
                                  headers={"Content-Type": "application/json"},
                                  preload_content=False, retries=False, redirect=False)
            data = answer.read()
            answer.release_conn()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(data)))])
        return [data]

    server = create_server(app, host="127.0.0.1", port=port, threads=256,
                           connection_limit=1024, channel_request_lookahead=5,
                           asyncore_use_poll=True)
    for listener in _listeners(_sockets(server)):
        listener.channel_class = ProxyChannel
        serve_in_a_row(listener)
    pin_process("auto")
    server.run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="wrk run length")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "UPSTREAM_PORT"),
                        help=argparse.SUPPRESS)  # the child process of one bare server
    args = parser.parse_args()
    if args.serve:
        serve_bare(args.serve[0], int(args.serve[1]), int(args.serve[2]))
        return 0
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    if nginx is None or wrk is None:
        print("needs nginx and wrk", file=sys.stderr)
        return 2
    bench = Bench(plan=FULL, nginx=nginx, wrk=wrk, threads=None,
                  workdir=Path(tempfile.mkdtemp(prefix="acp-floor-")))
    procs = bench.procs
    p50: dict[str, list[float]] = {kind: [] for kind in KINDS}
    try:
        calls = upstream_nginx.canned_calls()
        call = calls["nonstream"]
        upstream = upstream_nginx.start_nginx(procs, nginx, bench.workdir, calls)
        upstream_port = upstream.url.rsplit(":", 1)[1]
        script = bench.workdir / "call.lua"
        script.write_text(wrk_runs.lua_script(call.request_body, call.request_headers))
        for repeat in range(args.repeat):
            for kind in KINDS:
                proc, url = None, upstream.url
                if kind == "proxy":
                    proxy, _ = start_proxy(bench, f"proxy-{repeat}", upstream.url)
                    proc, url = proxy.proc, proxy.url
                elif kind != "direct":
                    port = free_port()
                    url = f"http://127.0.0.1:{port}"
                    proc = procs.spawn(kind, [sys.executable, __file__, "--serve", kind,
                                              str(port), upstream_port],
                                       log=bench.workdir / f"{kind}.log", env=python_env())
                    wait_for_post(url + call.path, call.request_body)
                target = url + call.path
                # A short warm-up run (pools, caches), then the measured one.
                wrk_runs.run_wrk(procs, wrk, target, script, connections=1, duration_s=1,
                                 log=bench.workdir / "warm-up.log")
                result = wrk_runs.run_wrk(procs, wrk, target, script, connections=1,
                                          duration_s=args.seconds,
                                          log=bench.workdir / f"{kind}.wrk")
                p50[kind].append(result.p50_ms)
                print(f"[{repeat + 1}/{args.repeat}] {kind}: p50 {result.p50_ms:.3f} ms, "
                      f"{result.rps:,.0f} req/s", flush=True)
                if proc is not None:
                    procs.stop(proc)
    finally:
        procs.stop_all()
    direct = statistics.median(p50["direct"])
    print("\n| at c=1, non-streaming | p50 | added over direct |\n|---|---|---|")
    for kind in KINDS:
        median = statistics.median(p50[kind])
        print(f"| {kind} | {median:.3f} ms | {median - direct:+.3f} ms |")
    return 0


def wait_for_post(url: str, body: bytes, timeout_s: float = 30.0) -> None:
    """Until a bare server answers a POST (it has no health route)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())

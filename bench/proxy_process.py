"""Starting what the benchmark measures: ``agent-cli-proxy serve`` on a temporary database
(only our settings, an empty env file, prices offline) and the paced SSE upstream."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import repo_path  # noqa: F401  (the checkout's agent_cli_proxy)
from context import BENCH_DIR, Bench
from processes import (
    ChildFailed,
    free_port,
    proxy_command,
    python_env,
    tail,
    wait_http_ok,
)

from agent_cli_proxy.config import FIELDS


@dataclass(frozen=True)
class Proxy:
    url: str
    proc: subprocess.Popen[bytes]
    db: Path
    log: Path


def proxy_environment(bench: Bench, upstream_url: str, port: int, db: Path,
                      threads: int | None) -> dict[str, str]:
    """The proxy's settings: only ours (the caller's own proxy settings are dropped)."""
    env = python_env()
    for f in FIELDS:
        env.pop(f.name, None)
        env.pop(f"{f.name}_FILE", None)
    for name in ("AGENT_CLI_PROXY_ENV", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET"):
        env.pop(name, None)
    env.update({
        "CLI_PROXY_API_URL": upstream_url,
        "PROXY_HOST": "127.0.0.1",
        "PROXY_PORT": str(port),
        "DB_PATH": str(db),
        "PRICING_CACHE_PATH": str(bench.workdir / "pricing-cache.json"),
        # Nothing listens there: the proxy prices from its built-in table, offline.
        "PRICING_URL": f"http://127.0.0.1:{bench.dead_port}/api.json",
        "LOG_LEVEL": "warn",
        "SHUTDOWN_DRAIN_MS": "2000",
    })
    if threads is not None:
        env["PROXY_THREADS"] = str(threads)
    if bench.workers is not None:
        env["PROXY_WORKERS"] = str(bench.workers)
    return env


def start_proxy(bench: Bench, name: str, upstream_url: str,
                threads: int | None = None) -> tuple[Proxy, float]:
    """Start ``agent-cli-proxy serve``; return it and the seconds from spawn to ready.

    *threads* sets PROXY_THREADS (default: ``bench.threads``).
    """
    port = free_port()
    db = bench.workdir / f"{name}.db"
    proxy_log = bench.workdir / f"{name}.log"
    env_file = bench.workdir / "empty.env"  # keeps ~/.config and /etc env files out
    env_file.touch()
    env = proxy_environment(bench, upstream_url, port, db,
                            bench.threads if threads is None else threads)
    argv = [*proxy_command(), "serve", "--env-file", str(env_file)]
    started = time.perf_counter()
    proc = bench.procs.spawn(name, argv, log=proxy_log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_http_ok(f"{url}/ready", proc, timeout_s=60, log=proxy_log)
    except BaseException:
        bench.procs.stop(proc)
        raise
    return Proxy(url, proc, db, proxy_log), ready - started


def start_paced(bench: Bench) -> str:
    paced_log = bench.workdir / "paced-upstream.log"
    port = free_port()
    proc = bench.procs.spawn(
        "paced-upstream",
        [sys.executable, str(BENCH_DIR / "paced_upstream.py"), "--port", str(port)],
        log=paced_log, env=python_env())
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/healthz", proc, timeout_s=10, log=paced_log)
    return url


def require_alive(proxy: Proxy) -> None:
    if proxy.proc.poll() is not None:
        log_tail = tail(proxy.log)
        last = log_tail.splitlines()[-1] if log_tail else "(empty log)"
        raise ChildFailed(f"the proxy exited with {proxy.proc.returncode} during the run: "
                          f"{last}\nits log ends:\n{log_tail}")

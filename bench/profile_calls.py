#!/usr/bin/env python3
"""CPU per call of the proxy's own code, in-process (no waitress), with an optional profile.

    python bench/profile_calls.py [--calls N] [--kind nonstream|stream] [--profile FILE]

Starts nginx with the canned answers (as ``run.py`` does), builds the WSGI app over a fresh
database, and drives it directly with WSGI environs (one thread): each call goes through
routing, identification, the pending row, the pooled upstream request, the relay and the
finalization, exactly as under waitress, minus waitress itself. Reports CPU ms per call
(``time.process_time``), which is what a change to the hot path moves; ``--profile``
writes a cProfile of the timed calls (read it with ``python -m pstats``).
A script, not a test: it needs nginx.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import repo_path  # noqa: F401  (the checkout's agent_cli_proxy)
import upstream_nginx
from processes import Procs
from run import find_tool

from agent_cli_proxy.config import load_settings
from agent_cli_proxy.storage.database import open_database
from agent_cli_proxy.wsgi import create_app


def _environ(call: upstream_nginx.CannedCall, port: int) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": call.path,
        "QUERY_STRING": "", "REQUEST_URI": call.path, "RAW_URI": call.path,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port), "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_HOST": "127.0.0.1", "REMOTE_PORT": "40000",
        "CONTENT_LENGTH": str(len(call.request_body)), "HTTP_HOST": f"127.0.0.1:{port}",
        "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.errors": sys.stderr,
    }
    for name, value in call.request_headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = value
        else:
            env["HTTP_" + key] = value
    return env


def _one(app: Any, base: dict[str, Any], body: bytes) -> int:
    env = dict(base)
    env["wsgi.input"] = io.BytesIO(body)
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        status.append(line)

    result = app(env, start_response)
    try:
        size = sum(len(piece) for piece in result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"unexpected answer {status}")
    return size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--kind", choices=("nonstream", "stream"), default="nonstream")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the timed calls")
    parser.add_argument("--key", help="also present this key (x-api-key) on every call")
    args = parser.parse_args()
    nginx = find_tool("nginx")
    if nginx is None:
        print("needs nginx", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="acp-profile-"))
    procs = Procs()
    try:
        calls = upstream_nginx.canned_calls()
        upstream = upstream_nginx.start_nginx(procs, nginx, workdir, calls)
        (workdir / "empty.env").touch()
        settings = load_settings({
            "CLI_PROXY_API_URL": upstream.url, "DB_PATH": str(workdir / "proxy.db"),
            "PRICING_CACHE_PATH": str(workdir / "pricing.json"),
            "PRICING_URL": "http://127.0.0.1:9/api.json", "LOG_LEVEL": "warn",
            "HOME": str(workdir)}, env_file=str(workdir / "empty.env"))
        db = open_database(settings.db_path)
        app = create_app(settings, db)
        call = calls[args.kind]
        base = _environ(call, 8080)
        if args.key:
            base["HTTP_X_API_KEY"] = args.key
        for _ in range(200):  # warm-up: pool, statement cache, page cache
            _one(app, base, call.request_body)
        profiler = cProfile.Profile() if args.profile else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for _ in range(args.calls):
            _one(app, base, call.request_body)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        print(f"{args.kind}: {args.calls} calls, CPU {cpu / args.calls * 1000:.3f} ms/call, "
              f"wall {wall / args.calls * 1000:.3f} ms/call"
              + (" (profiled)" if profiler is not None else ""))
        app.close()
        db.close()
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``agent-cli-proxy serve`` as a real process: configuration errors, serving, SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.fake_upstream import FakeUpstream


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    # A clean environment: no user env file, no inherited settings.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data")}
    env.update(values)
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_bad_configuration_lists_every_problem_and_exits_78(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent_cli_proxy", "serve"],
        env=_env(tmp_path, PROXY_PORT="not-a-port", MAX_REQUEST_BODY_BYTES="-5",
                 LOG_LEVEL="loud"),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    for name in ("CLI_PROXY_API_URL", "PROXY_PORT", "MAX_REQUEST_BODY_BYTES", "LOG_LEVEL"):
        assert name in result.stderr
    assert not (tmp_path / "data").exists()  # nothing created for a config that fails


def test_missing_env_file_is_a_config_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent_cli_proxy", "serve", "--env-file",
         str(tmp_path / "missing.env")],
        env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "missing.env" in result.stderr


def test_serves_until_sigterm_then_stops_cleanly(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Also the offline start: no price cache and no network, yet calls are priced from the
    built-in table and /ready says "warn", not "fail"."""
    port = _free_port()
    env_file = tmp_path / "proxy.env"
    env_file.write_text(f"CLI_PROXY_API_URL={upstream.url}\nPROXY_PORT={port}\n"
                        f"PRICING_URL=http://127.0.0.1:{_free_port()}/api.json\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_cli_proxy", "serve", "--env-file", str(env_file)],
        env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # blocks until the server says it is listening
            if json.loads(line)["event"] == "server.listening":
                break
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            assert json.load(resp) == {"status": "ok"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
            data=b'{"model":"gpt-5","messages":[]}',
            headers={"Content-Type": "application/json", "User-Agent": "curl/8.5.0"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10) as resp:
            ready = json.load(resp)
        assert resp.status == 200
        assert ready["checks"]["pricing"]["status"] == "warn"
        assert ready["checks"]["pricing"]["source"] == "builtin"
        assert set(ready["checks"]["supervisor"]["loops"]) == {"cost-backfill",
                                                               "pricing-refresh"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = proc.stdout.read()
    assert "shutdown.complete" in rest
    db = tmp_path / "data" / "agent-cli-proxy" / "proxy.db"
    assert db.exists()
    wal = db.with_name("proxy.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed on the way out
    with contextlib.closing(sqlite3.connect(db)) as conn:
        cost_status, cost = conn.execute("SELECT cost_status, cost_usd FROM request_logs"
                                         ).fetchone()
    assert cost_status == "ok" and cost > 0  # gpt-5, priced from the built-in table

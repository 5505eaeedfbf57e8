"""SIGTERM as a service manager sends it: drain open streams, refuse new work, notify."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import wire
from tests.cli.test_serve import _env, _free_port
from tests.conftest import wait_until
from tests.fake_upstream import FakeUpstream, Script

STREAM = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 5, "stream": True,
                     "messages": []}).encode()


@contextlib.contextmanager
def serving(tmp_path: Path, upstream: FakeUpstream, **extra: str
            ) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = _free_port()
    # A dead PRICING_URL: the refresh loop must not take the test's scripted answers.
    env = _env(tmp_path, CLI_PROXY_API_URL=upstream.url, PROXY_PORT=str(port),
               PRICING_URL=f"http://127.0.0.1:{_free_port()}/api.json", **extra)
    proc = subprocess.Popen([sys.executable, "-m", "agent_cli_proxy", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    startup: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # blocks until the server says it is listening
            startup.append(json.loads(line)["event"])
            if startup[-1] == "server.listening":
                break
        proc.startup_events = startup  # type: ignore[attr-defined]
        # Keep reading: a server blocked on a full output pipe would look like a hang.
        lines: list[str] = []
        proc.later_lines = lines  # type: ignore[attr-defined]
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
        reader.start()
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def open_stream(port: int) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/messages", body=STREAM,
                 headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def rows(tmp_path: Path) -> list[tuple[str, str | None]]:
    db = tmp_path / "data" / "agent-cli-proxy" / "proxy.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT lifecycle_status, error_message FROM request_logs"
                            ).fetchall()


def test_sigterm_lets_open_streams_finish_and_refuses_new_connections(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    canned = wire.messages_stream()
    script = upstream.script(Script(content_type=canned.content_type, pieces=canned.pieces,
                                    pause_after=1))
    with serving(tmp_path, upstream, SHUTDOWN_DRAIN_MS="20000") as (proc, port):
        conn, resp = open_stream(port)
        first = resp.read1(65536)
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refused(port), what="the listener to close")
        assert proc.poll() is None  # still draining the open stream
        script.release.set()
        assert first + resp.read() == canned.body
        conn.close()
        assert proc.wait(timeout=30) == 0
    assert rows(tmp_path) == [("completed", None)]


def test_streams_still_open_at_the_deadline_are_cut_and_recorded(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    canned = wire.messages_stream()
    script = upstream.script(Script(content_type=canned.content_type, pieces=canned.pieces,
                                    pause_after=1))
    try:
        with serving(tmp_path, upstream, SHUTDOWN_DRAIN_MS="300") as (proc, port):
            conn, resp = open_stream(port)
            resp.read1(65536)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(http.client.IncompleteRead):
                resp.read()
            conn.close()
            assert proc.wait(timeout=30) == 0
    finally:
        script.release.set()
    assert rows(tmp_path) == [("aborted", "shutdown")]


def test_systemd_is_told_ready_and_stopping(tmp_path: Path, upstream: FakeUpstream) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(30)
        with serving(tmp_path, upstream, NOTIFY_SOCKET=str(path)) as (proc, _port):
            assert listener.recv(4096).startswith(b"READY=1")
            proc.send_signal(signal.SIGTERM)
            assert listener.recv(4096) == b"STOPPING=1"
            assert proc.wait(timeout=30) == 0

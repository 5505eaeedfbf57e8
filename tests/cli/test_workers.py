"""PROXY_WORKERS=2: two real server processes on one port and one database, seen from
outside as one proxy (one ledger, one /metrics, one admin API, one lifecycle)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
from pathlib import Path

import pytest

from tests import wire
from tests.cli.test_shutdown import STREAM, open_stream, serving
from tests.conftest import wait_until
from tests.fake_upstream import FakeUpstream, Script

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="workers fork")


def helper_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def connections(pid: int, port: int) -> int:
    """Established TCP connections of process *pid* on local *port*."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # a fresh connection
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def requests_total(port: int) -> float:
    _status, body = get(port, "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith("agent_cli_proxy_requests_total{"))


def test_two_workers_share_the_port_the_ledger_and_the_metrics(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    canned = wire.messages_stream()
    streams = 24
    with serving(tmp_path, upstream, PROXY_WORKERS="2") as (proc, port):
        (helper,) = helper_pids(proc.pid)
        cpus = [os.sched_getaffinity(p) for p in (proc.pid, helper)]
        if len(os.sched_getaffinity(0)) >= 2:
            assert all(len(c) == 1 for c in cpus) and cpus[0] != cpus[1]
        scripts = [upstream.script(Script(content_type=canned.content_type,
                                          pieces=canned.pieces, pause_after=1))
                   for _ in range(streams)]
        opened = [open_stream(port) for _ in range(streams)]  # each its own connection
        for _conn, resp in opened:
            assert resp.read1(65536)
        # Both processes hold some of the open streams: the kernel gave each worker
        # connections (all 24 on one side would be a 1 in 8 million chance).
        assert connections(proc.pid, port) > 0 and connections(helper, port) > 0
        for script in scripts:
            script.release.set()
        for conn, resp in opened:
            resp.read()
            conn.close()
        # One ledger, one count: the first worker's /metrics adds the other's calls.
        wait_until(lambda: requests_total(port) == streams, what="merged metrics")
        for _ in range(8):  # admin routes answer the same whichever worker is asked
            status, body = get(port, "/admin/stats")
            assert status == 200 and json.loads(body)["total_requests"] == streams
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        wait_until(lambda: not alive(helper), what="the other worker to stop")
    lines = [json.loads(line) for line in proc.later_lines]  # type: ignore[attr-defined]
    assert {line.get("worker") for line in lines if line["event"] == "shutdown.complete"} == {
        0, 1}


def test_admin_access_is_checked_by_the_worker_that_takes_the_request(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    with serving(tmp_path, upstream, PROXY_WORKERS="2",
                 ADMIN_API_KEY="s3cret-admin-key") as (proc, port):
        for _ in range(8):
            # A guessed worker mark does not stand in for the key, on either worker.
            status, _body = get(port, "/admin/stats", {"X-Agent-Cli-Proxy-Worker": "guess"})
            assert status == 401
            status, _body = get(port, "/admin/stats", {"x-admin-token": "s3cret-admin-key"})
            assert status == 200
        assert get(port, "/health")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_a_worker_that_dies_stops_the_service(tmp_path: Path, upstream: FakeUpstream
                                              ) -> None:
    with serving(tmp_path, upstream, PROXY_WORKERS="2") as (proc, _port):
        (helper,) = helper_pids(proc.pid)
        os.kill(helper, signal.SIGKILL)
        assert proc.wait(timeout=30) == 1  # systemd's Restart=on-failure brings it back
    events = [json.loads(line)["event"] for line in proc.later_lines]  # type: ignore[attr-defined]
    assert "server.worker_died" in events


def test_workers_stop_when_the_first_one_is_killed(tmp_path: Path, upstream: FakeUpstream
                                                   ) -> None:
    with serving(tmp_path, upstream, PROXY_WORKERS="2") as (proc, port):
        (helper,) = helper_pids(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        wait_until(lambda: not alive(helper), what="the other worker to notice")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_provider_reload_reaches_every_worker(tmp_path: Path, upstream: FakeUpstream
                                                ) -> None:
    config = tmp_path / "providers.json"
    config.write_text(json.dumps({"providers": []}))
    with serving(tmp_path, upstream, PROXY_WORKERS="2",
                 PROVIDERS_CONFIG_PATH=str(config)) as (proc, port):
        config.write_text(json.dumps({"providers": [{
            "id": "second", "type": "anthropic", "paths": ["/v1/messages"],
            "upstreamBaseUrl": upstream.url, "auth": "none"}]}))
        proc.send_signal(signal.SIGHUP)

        def every_worker_knows_it() -> bool:
            for _ in range(8):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    conn.request("POST", "/v1/messages", body=STREAM,
                                 headers={"Content-Type": "application/json",
                                          "x-provider": "second"})
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 200:
                        return False
                finally:
                    conn.close()
            return True

        wait_until(every_worker_knows_it, what="both workers to know the new provider")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_systemd_hears_from_the_first_worker_only(tmp_path: Path, upstream: FakeUpstream
                                                  ) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(30)
        with serving(tmp_path, upstream, PROXY_WORKERS="2", NOTIFY_SOCKET=str(path)
                     ) as (proc, _port):
            ready = listener.recv(4096)
            # Sent once both workers listen (NotifyAccess=main: only this PID counts).
            assert ready.startswith(b"READY=1") and b"with 2 workers" in ready
            proc.send_signal(signal.SIGTERM)
            assert listener.recv(4096) == b"STOPPING=1"
            assert proc.wait(timeout=30) == 0
            # The first worker returns once the other has exited: anything that one sent
            # would be queued by now.
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.recv(4096)


def listening_ports(pid: int) -> set[int]:
    inodes = {os.readlink(fd)[8:-1] for fd in Path(f"/proc/{pid}/fd").iterdir()
              if os.readlink(fd).startswith("socket:[")}
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            ports.add(int(fields[1].split(":")[1], 16))
    return ports


def test_what_only_workers_may_use_stays_theirs(tmp_path: Path, upstream: FakeUpstream
                                                 ) -> None:
    with serving(tmp_path, upstream, PROXY_WORKERS="2") as (proc, port):
        (helper,) = helper_pids(proc.pid)
        # The first worker's private listener answers only the other workers.
        (private,) = listening_ports(proc.pid) - {port}
        for path in ("/health", "/admin/stats", "/v1/models"):
            status, body = get(private, path)
            assert status == 403 and json.loads(body)["error"]["code"] == "workers_only"
        # The instance lock is the first worker's alone (a restart after it died must
        # find the database free while the others drain).
        held = [os.readlink(fd) for fd in Path(f"/proc/{helper}/fd").iterdir()]
        assert not [f for f in held if f.endswith(".lock")]
        for _ in range(8):
            # A marker that is not even ASCII is just a wrong one, on either worker.
            status, _body = get(port, "/admin/stats", {"X-Agent-Cli-Proxy-Worker": "\xe9"})
            assert status == 200
            # HEAD through either worker tells the size a GET would get.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("HEAD", "/admin/openapi.json")
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert resp.status == 200 and int(resp.getheader("Content-Length") or 0) > 1000
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

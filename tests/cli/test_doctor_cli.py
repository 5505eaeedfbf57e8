"""``agent-cli-proxy doctor``: a healthy installation passes; each broken part is named.

Real pieces throughout: a proxy on waitress and a fake upstream on loopback, a small
CLIProxyAPI stand-in for the management API, real database files, doctor as a process.
Only time is faked (for the age of the price cache).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy import doctor
from agent_cli_proxy.config import Settings, inspect_settings
from agent_cli_proxy.doctor_network import check_cliproxy_management, check_service
from agent_cli_proxy.storage import open_database
from agent_cli_proxy.workers.pricing_cache import cache_document, write_cache
from tests.conftest import start_proxy
from tests.fake_upstream import MODELS_DEV_SNAPSHOT, FakeUpstream

GOOD_KEY = "the-right-management-key"
UPSTREAM_KEY = "upstream-secret-value-x"
ADMIN_KEY = "admin-secret-value-y"
SCHEMA_KEYS = {"version", "agent_cli_proxy", "python", "dependencies", "checks", "summary"}


class FakeManagement:
    """Answers /healthz, and /v0/management/auth-files like CLIProxyAPI: 200 for the right
    key, 401 for another; the keys "key-403" and "key-404" get those statuses."""

    def __init__(self) -> None:
        self.management_calls = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._answer(200, {"status": "ok"})
                    return
                owner.management_calls += 1
                key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if key == GOOD_KEY:
                    self._answer(200, {"files": [{"name": "a.json"}, {"name": "b.json"}]})
                elif key in ("key-403", "key-404"):
                    self._answer(int(key[-3:]), {"error": "no"})
                else:
                    self._answer(401, {"error": "invalid management key"})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def management() -> Iterator[FakeManagement]:
    fake = FakeManagement()
    yield fake
    fake.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def env_file(tmp_path: Path, **values: object) -> Path:
    path = tmp_path / "proxy.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


def run_doctor(tmp_path: Path, env: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "agent_cli_proxy", "doctor", "--env-file", str(env), *extra],
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)},
        capture_output=True, text=True, timeout=60)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def fresh_prices(path: Path) -> None:
    data = json.loads(MODELS_DEV_SNAPSHOT.read_text())
    write_cache(str(path), cache_document(data, time.time(), "http://127.0.0.1/api.json"))


def test_healthy(tmp_path: Path, upstream: FakeUpstream,
                 make_settings: Callable[..., Settings]) -> None:
    prices = tmp_path / "pricing-cache.json"
    fresh_prices(prices)  # so the proxy starts on cached prices, not the built-in table
    settings = make_settings(pricing_cache_path=str(prices))
    running = start_proxy(settings, background=True)
    try:
        for suffix in ("", "-wal", "-shm"):
            os.chmod(settings.db_path + suffix, 0o600)
        env = env_file(tmp_path, CLI_PROXY_API_URL=upstream.url,
                       PROXY_PORT=running.url.rsplit(":", 1)[1], DB_PATH=settings.db_path,
                       PRICING_CACHE_PATH=prices, CLI_PROXY_API_KEY=UPSTREAM_KEY)
        result = run_doctor(tmp_path, env, "--json")
        text = run_doctor(tmp_path, env)
    finally:
        running.stop()
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout
    assert set(report) == SCHEMA_KEYS and report["version"] == 1
    assert set(report["dependencies"]) == {"werkzeug", "urllib3", "waitress", "click"}
    assert all(report["dependencies"].values())
    assert [c["name"] for c in report["checks"]] == list(doctor.CHECK_NAMES)
    assert {c["name"]: c["status"] for c in report["checks"]} == dict.fromkeys(
        doctor.CHECK_NAMES, "pass"), result.stdout
    assert report["summary"] == {"pass": 8, "warn": 0, "fail": 0}
    for check in report["checks"]:
        assert set(check) == {"name", "status", "message", "details"}
    checks = by_name(report)
    assert checks["service"]["details"]["ready"]["status"] == "pass"
    assert checks["database"]["details"]["pending"] == []
    assert checks["config"]["details"]["settings"]["CLI_PROXY_API_KEY"] == "[set]"
    assert UPSTREAM_KEY not in result.stdout and UPSTREAM_KEY not in text.stdout
    assert text.returncode == 0 and "summary: 8 pass, 0 warn, 0 fail" in text.stdout


def test_bad_config_missing_database_unreachable_upstream(tmp_path: Path) -> None:
    db = tmp_path / "never" / "proxy.db"
    env = env_file(tmp_path, CLI_PROXY_API_URL=f"http://127.0.0.1:{closed_port()}",
                   PROXY_PORT="not-a-port", DB_PATH=db, ADMIN_API_KEY=ADMIN_KEY,
                   PRICING_CACHE_PATH=tmp_path / "none.json")
    env.chmod(0o644)  # holds a secret and every user may read it
    result = run_doctor(tmp_path, env, "--json")
    assert result.returncode == 1
    checks = by_name(json.loads(result.stdout))
    assert checks["config"]["status"] == "fail"
    assert [i["name"] for i in checks["config"]["details"]["issues"]] == ["PROXY_PORT"]
    assert checks["database"]["status"] == "warn"
    assert "no database" in checks["database"]["message"]
    assert checks["upstream"]["status"] == "fail"
    assert "Connection refused" in checks["upstream"]["message"]
    assert checks["pricing_cache"]["status"] == "warn"
    assert "built-in price table" in checks["pricing_cache"]["message"]
    assert checks["permissions"]["status"] == "warn"
    assert "ADMIN_API_KEY" in checks["permissions"]["details"]["files"][0]["problems"][0]
    assert checks["service"]["status"] == "warn"  # nothing running: not a failure
    assert ADMIN_KEY not in result.stdout
    assert not db.parent.exists()  # doctor creates nothing


def test_corrupt_database_and_rejected_management_key(tmp_path: Path,
                                                      management: FakeManagement) -> None:
    db = tmp_path / "proxy.db"
    db.write_bytes(b"garbage, not SQLite " * 400)
    env = env_file(tmp_path, CLI_PROXY_API_URL=management.url, DB_PATH=db,
                   CLIPROXY_MGMT_KEY="the-wrong-key", PROXY_PORT=closed_port())
    result = run_doctor(tmp_path, env, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    checks = by_name(report)
    assert checks["database"]["status"] == "fail"
    assert "file is not a database" in checks["database"]["message"]
    assert checks["upstream"]["status"] == "pass"
    mgmt = checks["cliproxy_management"]
    assert mgmt["status"] == "fail" and "(401)" in mgmt["message"]
    assert mgmt["details"]["httpStatus"] == 401
    assert management.management_calls == 1  # one attempt: CLIProxyAPI bans after five
    assert "the-wrong-key" not in result.stdout
    assert report["summary"]["fail"] == 2
    assert db.read_bytes() == b"garbage, not SQLite " * 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "proxy.db", "proxy.env"]


def _context(tmp_path: Path, clock: Any = None, **values: str) -> doctor.Context:
    settings, issues = inspect_settings({"HOME": str(tmp_path)}, env_file=str(
        env_file(tmp_path, **values)))
    return doctor.Context(settings, tuple(issues), clock or doctor.SYSTEM_CLOCK, 2.0)


@pytest.mark.parametrize(("key", "status", "words"), [
    (GOOD_KEY, "pass", "2 auth file(s)"),
    ("key-403", "fail", "(403)"),
    ("key-404", "fail", "(404)"),
])
def test_management_answers(tmp_path: Path, management: FakeManagement, key: str,
                            status: str, words: str) -> None:
    check = check_cliproxy_management(_context(tmp_path, CLI_PROXY_API_URL=management.url,
                                               CLIPROXY_MGMT_KEY=key))
    assert (check.status, management.management_calls) == (status, 1)
    assert words in check.message and key not in json.dumps(check.as_dict())


class Later:
    """A clock *days* after now (the only thing these tests fake)."""

    def __init__(self, days: float) -> None:
        self.offset = days * 86_400

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


def test_stale_and_unusable_prices(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    fresh_prices(prices)
    values = {"CLI_PROXY_API_URL": "http://127.0.0.1:9", "PRICING_CACHE_PATH": str(prices)}
    assert doctor.check_pricing_cache(_context(tmp_path, **values)).status == "pass"
    stale = doctor.check_pricing_cache(_context(tmp_path, Later(2), **values))
    assert stale.status == "warn" and "more than READY_PRICING_MAX_AGE_MS" in stale.message
    assert stale.details["ageMs"] > 86_400_000
    prices.write_text("{not json")
    broken = doctor.check_pricing_cache(_context(tmp_path, **values))
    assert broken.status == "warn" and "unusable" in broken.message


def test_a_running_proxy_that_is_not_ready(tmp_path: Path,
                                           make_settings: Callable[..., Settings]) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    running = start_proxy(make_settings(cli_proxy_api_url=dead))
    try:
        result = check_service(_context(tmp_path, CLI_PROXY_API_URL=dead,
                                        PROXY_PORT=running.url.rsplit(":", 1)[1]))
    finally:
        running.stop()
    assert result.status == "fail" and "upstream" in result.message
    assert result.details["httpStatus"] == 503


def test_doctor_never_creates_side_files(tmp_path: Path) -> None:
    path = tmp_path / "state" / "quiet.db"
    path.parent.mkdir()
    open_database(path).close()
    before = sorted(p.name for p in path.parent.iterdir())
    check = doctor.check_database(_context(tmp_path, CLI_PROXY_API_URL="http://127.0.0.1:9",
                                           DB_PATH=str(path)))
    assert check.status == "pass"
    assert before == ["quiet.db"]  # no -wal or -shm before …
    assert sorted(p.name for p in path.parent.iterdir()) == before  # … nor after

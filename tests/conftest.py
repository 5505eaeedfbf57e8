"""Shared fixtures: a fake upstream and the real proxy (waitress) on loopback port 0."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent_cli_proxy.clock import SYSTEM_CLOCK, Clock
from agent_cli_proxy.config import Settings, settings_for_tests
from agent_cli_proxy.server import make_server, request_stop
from agent_cli_proxy.storage.database import Database, open_database
from agent_cli_proxy.web.app import ProxyApp
from agent_cli_proxy.wsgi import create_app
from tests.fake_upstream import FakeUpstream


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
               ) -> Any:
    """Poll *predicate* until it returns something truthy (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


T = TypeVar("T")


@contextlib.contextmanager
def logged_events(component: str, shape: Callable[[logging.LogRecord], T]) -> Iterator[list[T]]:
    """Collect the events one component logs (all levels), each as ``shape(record)``."""
    seen: list[T] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(shape(record))

    logger = logging.getLogger(f"agent_cli_proxy.{component}")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def event_name(record: logging.LogRecord) -> str:
    return str(getattr(record, "event", ""))


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    return dict(getattr(record, "fields", {}))


@dataclass
class RunningProxy:
    url: str
    settings: Settings
    db: Database
    app: ProxyApp
    server: Any
    thread: threading.Thread

    def rows(self) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.settings.db_path)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM request_logs ORDER BY id")]
        finally:
            conn.close()

    def final_rows(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until *count* rows exist and none is pending; return them."""
        def done() -> list[dict[str, Any]] | None:
            rows = self.rows()
            ok = len(rows) >= count and all(r["lifecycle_status"] != "pending" for r in rows)
            return rows if ok else None
        rows: list[dict[str, Any]] = wait_until(done, timeout, f"{count} finalized row(s)")
        return rows

    def stop(self) -> None:
        request_stop(self.server)
        self.thread.join(timeout=10)
        self.app.services.watcher.abort_all("test teardown")
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        self.app.close()
        self.db.close()


def start_proxy(settings: Settings, *, background: bool = False,
                host: str = "127.0.0.1", clock: Clock = SYSTEM_CLOCK) -> RunningProxy:
    """The real app on waitress, port 0; *background* also starts the loops (price
    refresh, cost backfill), as ``serve`` does. Without them prices are the built-in
    table (there is no cache file yet). *clock*: a hand-moved one makes the recorded
    times, the loops' backoffs and /ready's cache follow the test."""
    db = open_database(settings.db_path)
    app = create_app(settings, db, clock=clock, disconnect_poll_s=0.02)
    if background:
        app.start_background()
    server = make_server(app, settings, host=host, port=0)
    thread = threading.Thread(target=server.run, name="waitress-loop", daemon=True)
    thread.start()
    return RunningProxy(f"http://127.0.0.1:{server.effective_port}", settings, db, app,
                        server, thread)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture
def make_settings(tmp_path: Path, upstream: FakeUpstream) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "cli_proxy_api_url": upstream.url,
            "cli_proxy_api_key": "upstream-secret",
            "db_path": str(tmp_path / "proxy.db"),
            "pricing_cache_path": str(tmp_path / "pricing-cache.json"),
            # Never models.dev from a test: the fake upstream serves the shared snapshot.
            "pricing_url": upstream.url + "/api.json",
            "proxy_threads": 16,
        }
        values.update(overrides)
        return settings_for_tests(**values)
    return build


@pytest.fixture
def proxy(make_settings: Callable[..., Settings]) -> Iterator[RunningProxy]:
    running = start_proxy(make_settings())
    yield running
    running.stop()

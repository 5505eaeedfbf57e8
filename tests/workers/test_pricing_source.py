"""PricingService: boot from cache or built-in, refresh from a loopback models.dev, keep
good prices through failures, write the cache atomically, read (and survive) bad caches.

The price source is the real fake upstream on 127.0.0.1; files are real temp files; only
time is scripted (a settable clock).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy.config import settings_for_tests
from agent_cli_proxy.usage.pricing import PriceTable
from agent_cli_proxy.workers.pricing import PricingConfig, PricingService
from agent_cli_proxy.workers.pricing_cache import CacheInvalid, read_cache, write_cache
from agent_cli_proxy.workers.supervisor import Supervisor
from tests.conftest import event_fields, event_name, logged_events
from tests.fake_upstream import FakeUpstream, Script

SNAPSHOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "models-dev-api.json"
# A model only the "live" document has, so tests can tell which table is in use.
DOC = {"anthropic": {"id": "anthropic", "models": {
    "claude-test-9": {"id": "claude-test-9", "cost": {"input": 3, "output": 15}}}}}
T0 = 1_800_000_000.0
HOUR = 3600.0
Events = list[tuple[str, int, dict[str, Any]]]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def events() -> Iterator[Events]:
    with logged_events("pricing", lambda r: (event_name(r), r.levelno, event_fields(r))) as seen:
        yield seen


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api.json"


def serve(upstream: FakeUpstream, doc: Any = DOC, status: int = 200) -> None:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    upstream.script(Script(status=status, pieces=[body], framing="length"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "state" / "pricing-cache.json"


@pytest.fixture
def make(cache: Path, clock: Clock, upstream: FakeUpstream) -> Callable[..., PricingService]:
    def build(**overrides: Any) -> PricingService:
        values: dict[str, Any] = {
            "url": upstream.url + "/api.json", "cache_path": str(cache), "ttl_s": HOUR,
            "refresh_interval_s": 6 * HOUR, "max_age_s": 24 * HOUR}
        values.update(overrides)
        return PricingService(PricingConfig(**values), clock=clock)
    return build


def live(service: PricingService) -> bool:
    return service.table.get("anthropic", "claude-test-9") is not None


def test_offline_first_start_runs_on_builtin_prices(
        make: Callable[..., PricingService], cache: Path, events: Events) -> None:
    service = make(url=closed_port_url())
    table = service.load()
    assert table is service.table and service.source == "builtin" and len(table) > 0
    assert table.match("claude-sonnet-4-5", "anthropic") is not None
    assert service.degraded
    assert service.refresh() is False
    status = service.status()
    assert status["source"] == "builtin" and status["fetched_at"] is None
    assert status["age_s"] is None and status["degraded"] is True
    assert "refused" in status["last_error"].lower()
    assert status["last_attempt_at"] == T0
    assert service.source == "builtin" and not cache.exists()
    failed = [f for e, lvl, f in events if e == "pricing.refresh_failed" and lvl == logging.WARNING]
    assert failed and "refused" in failed[0]["reason"].lower()


def test_refresh_swaps_the_table_and_writes_the_cache(
        make: Callable[..., PricingService], upstream: FakeUpstream, cache: Path) -> None:
    serve(upstream)
    service = make()
    service.load()
    assert service.refresh() is True
    assert live(service) and service.source == "models.dev" and not service.degraded
    assert service.status()["fetched_at"] == T0 and service.status()["age_s"] == 0
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert json.loads(cache.read_bytes()) == {
        "version": 1, "fetched_at": T0, "url": upstream.url + "/api.json", "data": DOC}
    assert os.listdir(cache.parent) == [cache.name]  # no temp file left behind


def test_restart_loads_the_cache_offline(make: Callable[..., PricingService],
                                         upstream: FakeUpstream, clock: Clock) -> None:
    serve(upstream)
    first = make()
    first.refresh()
    clock.now += 2 * HOUR
    second = make(url=closed_port_url())
    second.load()
    assert second.source == "cache" and live(second)
    assert second.status()["fetched_at"] == T0 and second.status()["age_s"] == 2 * HOUR
    assert len(second.table) == len(first.table)
    assert not second.degraded and second.needs_refresh()  # older than the 1 h TTL


def test_the_real_snapshot_survives_a_cache_round_trip(
        make: Callable[..., PricingService], upstream: FakeUpstream) -> None:
    if not SNAPSHOT.is_file():
        pytest.skip("models.dev snapshot not present")
    serve(upstream, SNAPSHOT.read_bytes())
    fetched = make()
    assert fetched.refresh() is True
    reloaded = make()
    reloaded.load()
    assert reloaded.source == "cache" and len(reloaded.table) == len(fetched.table) > 1000
    match = reloaded.table.match("claude-sonnet-4-5-20250929", "anthropic")
    assert match is not None and match.entry.rates.input > 0


def test_a_failed_refresh_keeps_the_good_table(
        make: Callable[..., PricingService], upstream: FakeUpstream, cache: Path,
        clock: Clock, events: Events) -> None:
    serve(upstream)
    service = make()
    service.refresh()
    good, saved = service.table, cache.read_bytes()
    clock.now += 2 * HOUR
    bad: list[tuple[Any, int]] = [(b"oops", 200), (b'{"error":"x"}', 500), ({"e": {}}, 200)]
    for doc, status in bad:
        serve(upstream, doc, status=status)
        assert service.refresh() is False
        assert service.table is good and service.source == "models.dev"
        assert cache.read_bytes() == saved
    assert service.status()["last_error"].endswith("returned no priced models")
    reasons = [f["reason"] for e, _, f in events if e == "pricing.refresh_failed"]
    assert "did not return JSON" in reasons[0] and "HTTP 500" in reasons[1]
    assert service.status()["fetched_at"] == T0  # still the prices of the last success


def test_ttl_is_respected(make: Callable[..., PricingService], upstream: FakeUpstream,
                          clock: Clock) -> None:
    serve(upstream)
    service = make()
    assert service.refresh() is True
    clock.now += HOUR - 1
    assert service.refresh() is False  # fresh: no request at all
    assert len(upstream.requests) == 1
    serve(upstream)
    assert service.refresh(force=True) is True
    assert len(upstream.requests) == 2
    clock.now += HOUR
    serve(upstream)
    assert service.refresh() is True
    assert len(upstream.requests) == 3 and service.status()["fetched_at"] == clock.now


def test_degraded_when_older_than_the_ready_limit(
        make: Callable[..., PricingService], upstream: FakeUpstream, clock: Clock) -> None:
    serve(upstream)
    service = make(url=upstream.url + "/api.json")
    service.refresh()
    clock.now += 24 * HOUR
    assert not service.degraded
    clock.now += 1
    assert service.degraded and service.status()["source"] == "models.dev"


def test_a_clock_moved_back_counts_as_stale(make: Callable[..., PricingService],
                                             upstream: FakeUpstream, clock: Clock) -> None:
    serve(upstream)
    service = make()
    service.refresh()
    clock.now -= 60
    assert service.needs_refresh()


CORRUPT: dict[str, bytes] = {
    "garbage": b"\x00\xff\x13 not json at all",
    "truncated": json.dumps({"version": 1, "fetched_at": T0, "data": DOC}).encode()[:40],
    "list": b"[1, 2]",
    "no markers": b'{"anthropic": {}}',
    "future version": json.dumps({"version": 2, "fetched_at": T0, "data": DOC}).encode(),
    "data not object": json.dumps({"version": 1, "fetched_at": T0, "data": []}).encode(),
    "bad timestamp": json.dumps({"version": 1, "fetched_at": "yesterday", "data": DOC}).encode(),
    "no prices": json.dumps({"version": 1, "fetched_at": T0, "data": {"x": {}}}).encode(),
    "original, bad pairs": json.dumps({"fetchedAt": T0 * 1000, "data": [["k", 1]]}).encode(),
    "original, data object": json.dumps({"fetchedAt": T0 * 1000, "data": {}}).encode(),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_a_corrupt_cache_is_ignored_with_a_warning(
        name: str, make: Callable[..., PricingService], cache: Path, events: Events) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_bytes(CORRUPT[name])
    service = make(url=closed_port_url())
    service.load()
    assert service.source == "builtin" and len(service.table) > 0
    warning = [(lvl, f) for e, lvl, f in events if e == "pricing.cache_invalid"]
    assert len(warning) == 1 and warning[0][0] == logging.WARNING
    assert warning[0][1]["path"] == str(cache) and warning[0][1]["reason"]


def test_an_unreadable_cache_is_ignored(make: Callable[..., PricingService], cache: Path,
                                        events: Events) -> None:
    cache.mkdir(parents=True)  # a directory where the file should be
    service = make()
    service.load()
    assert service.source == "builtin"
    assert [e for e, _, _ in events if e == "pricing.cache_invalid"]


def test_the_originals_cache_format_is_not_trusted(make: Callable[..., PricingService],
                                                   cache: Path, events: Events) -> None:
    # Its flat list puts resellers' ids (openai/o3 from OpenRouter) beside vendors' with
    # the last writer winning: rebuilding vendor prices from it would misprice calls.
    price = {"input": 3, "output": 15, "cache_read": 0.3}
    original = {"fetchedAt": int(T0 * 1000) - 5000, "data": [
        ["claude-test-9", price], ["anthropic/claude-test-9", price],
        ["openrouter/anthropic/claude-test-9", price], ["Claude Test 9", price]]}
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps(original))
    service = make(url=closed_port_url())
    service.load()
    assert service.source == "builtin"
    (reason,) = [f["reason"] for e, _, f in events if e == "pricing.cache_invalid"]
    assert "TypeScript original" in reason


def test_a_much_smaller_document_does_not_replace_good_prices(
        cache: Path, clock: Clock) -> None:
    def doc(count: int) -> dict[str, Any]:
        models = {f"claude-test-{i}": {"id": f"claude-test-{i}",
                                       "cost": {"input": 1, "output": 2}} for i in range(count)}
        return {"anthropic": {"id": "anthropic", "models": models}}

    documents = [doc(40), doc(1)]
    config = PricingConfig(url="http://127.0.0.1:9/api.json", cache_path=str(cache),
                           ttl_s=HOUR, refresh_interval_s=6 * HOUR, max_age_s=24 * HOUR)
    service = PricingService(config, clock=clock, fetch=lambda: (documents.pop(0), T0))
    assert service.refresh(force=True)
    known = len(service.table)
    assert not service.refresh(force=True)  # one model where 40 were known: refused
    assert len(service.table) == known
    assert "keeping the current prices" in service.status()["last_error"]


def test_cache_write_is_atomic(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cache(str(cache), {"version": 1, "fetched_at": T0, "data": DOC})
    before = cache.read_bytes()
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src: Any, dst: Any) -> None:
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    write_cache(str(cache), {"version": 1, "fetched_at": T0 + 1, "data": DOC})
    (src, dst), = renames
    assert dst == str(cache) and os.path.dirname(src) == str(cache.parent)
    assert os.path.basename(src).startswith(".pricing-cache.json.") and src.endswith(".tmp")

    def crash(fd: int) -> None:  # the process "dies" after writing, before the rename
        raise OSError(5, "simulated crash")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_cache(str(cache), {"version": 1, "fetched_at": T0 + 2, "data": {}})
    assert json.loads(cache.read_bytes())["fetched_at"] == T0 + 1 != json.loads(before)[
        "fetched_at"]
    assert os.listdir(cache.parent) == [cache.name]


def test_a_cache_write_failure_keeps_the_new_prices(
        make: Callable[..., PricingService], upstream: FakeUpstream, tmp_path: Path,
        events: Events) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    serve(upstream)
    service = make(cache_path=str(blocker / "pricing-cache.json"))
    assert service.refresh() is True and live(service)
    failed = [f for e, lvl, f in events
              if e == "pricing.cache_write_failed" and lvl == logging.WARNING]
    assert failed and failed[0]["path"] == str(blocker / "pricing-cache.json")


def test_read_cache_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_cache(str(tmp_path / "none.json"))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(CacheInvalid, match="not a pricing cache"):
        read_cache(str(tmp_path / "x.json"))


def test_overrides_and_aliases_apply_to_every_table(
        make: Callable[..., PricingService], upstream: FakeUpstream) -> None:
    service = make(overrides={"house-model": {"input": 1.0, "output": 2.0}},
                   aliases={"team-": "claude-sonnet-4-5", "lab-": "claude-test-9"})

    def rule(model: str) -> str | None:
        match = service.table.match(model, None)
        return None if match is None else match.rule

    service.load()  # built-in
    assert rule("house-model") == "override"
    assert (rule("team-coder") or "").startswith("alias:team-")
    serve(upstream)
    service.refresh()  # fetched
    assert rule("house-model") == "override"
    assert (rule("lab-x") or "").startswith("alias:lab-")
    reloaded = make(overrides={"house-model": {"input": 1.0, "output": 2.0}})
    reloaded.load()  # cached
    assert reloaded.source == "cache"
    assert reloaded.table.match("house-model", None) is not None


def test_on_update_runs_once_per_swap(make: Callable[..., PricingService],
                                      upstream: FakeUpstream, events: Events) -> None:
    seen: list[PriceTable] = []
    service = make()

    def broken(table: PriceTable) -> None:
        raise RuntimeError("listener bug")

    service.on_update.extend([broken, seen.append])
    serve(upstream)
    assert service.refresh() is True
    assert service.refresh() is False  # fresh: skipped
    serve(upstream, status=500)
    assert service.refresh(force=True) is False
    serve(upstream)
    assert service.refresh(force=True) is True
    assert len(seen) == 2 and seen[-1] is service.table
    assert [e for e, _, _ in events].count("pricing.on_update_failed") == 2


def test_from_settings(tmp_path: Path, clock: Clock) -> None:
    settings = settings_for_tests(pricing_cache_path=str(tmp_path / "p.json"),
                                  pricing_cache_ttl_ms=60_000)
    service = PricingService(settings, clock=clock)
    assert service.config.ttl_s == 60 and service.config.cache_path == str(tmp_path / "p.json")
    assert service.config.url == settings.pricing_url
    assert service.source == "builtin" and len(service.table) > 0  # usable before load()


class StopAfter:
    """A supervisor wait hook: records delays, stops the loop at the *n*-th pause."""

    def __init__(self, n: int) -> None:
        self.n, self.done = n, threading.Event()
        self.delays: list[float] = []

    def __call__(self, event: threading.Event, timeout: float) -> bool:
        self.delays.append(timeout)
        if len(self.delays) >= self.n:
            event.set()
            self.done.set()
        return event.is_set()


def run_loop(service: PricingService, pauses: int) -> list[float]:
    wait = StopAfter(pauses)
    supervisor = Supervisor(wait=wait, rng=random.Random(3))
    service.register(supervisor)
    supervisor.start()
    assert wait.done.wait(10)
    assert supervisor.stop(timeout_s=10)
    return wait.delays


def test_the_loop_fetches_at_start_when_on_builtin(
        make: Callable[..., PricingService], upstream: FakeUpstream) -> None:
    serve(upstream)
    service = make()
    service.load()
    delays = run_loop(service, 1)
    assert live(service) and len(upstream.requests) == 1
    assert 0.9 * 6 * HOUR <= delays[0] <= 1.1 * 6 * HOUR


def test_the_loop_waits_an_interval_when_the_cache_is_fresh(
        make: Callable[..., PricingService], upstream: FakeUpstream) -> None:
    serve(upstream)
    make().refresh()
    service = make()
    service.load()
    assert run_loop(service, 1) == [6 * HOUR]
    assert len(upstream.requests) == 1  # only the first service's fetch


def test_the_loop_retries_a_failure_within_minutes(
        make: Callable[..., PricingService]) -> None:
    service = make(url=closed_port_url())
    service.load()
    delays = run_loop(service, 2)
    assert all(540 <= d <= 660 for d in delays)  # 10 min ± jitter, not 6 h
    assert service.source == "builtin"


def test_listeners_run_outside_the_refresh(make: Callable[..., PricingService],
                                           upstream: FakeUpstream) -> None:
    """A slow listener (the cost backfill) must not hold up another refresh."""
    service = make()
    results: list[bool] = []
    calls: list[PriceTable] = []

    def listener(table: PriceTable) -> None:
        calls.append(table)
        if len(calls) > 1:  # the nested refresh's own notification
            return
        other = threading.Thread(target=lambda: results.append(service.refresh(force=True)))
        other.start()
        other.join(10)
        assert not other.is_alive(), "a refresh waited for a listener"

    service.on_update.append(listener)
    serve(upstream)
    serve(upstream)
    assert service.refresh() is True
    assert results == [True] and len(upstream.requests) == 2 and len(calls) == 2

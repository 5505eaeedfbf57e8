"""``GET /metrics``: the handler on its own (scrape-time families, broken sources), then end
to end through real waitress (a call, a scrape, the counters and histograms it moved)."""

from __future__ import annotations

import datetime as dt
import http.client
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from agent_cli_proxy.proxy_metrics import ProxyMetrics
from agent_cli_proxy.storage.database import Database, open_database
from agent_cli_proxy.web import metrics as endpoint
from tests.conftest import (
    RunningProxy,
    event_fields,
    event_name,
    logged_events,
    start_proxy,
    wait_until,
)
from tests.test_metrics import Family, parse_exposition
from tests.web.test_relay_formats import post

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC).timestamp()
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
P = "agent_cli_proxy_"


# -- the handler on its own ------------------------------------------------------------------


class FixedClock:
    def time(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return 100.0


@dataclass
class FakePricing:
    age_s: float | None = 30.0
    broken: bool = False

    @property
    def table(self) -> Any:
        raise NotImplementedError

    @property
    def degraded(self) -> bool:
        return self.age_s is None

    def status(self) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("pricing exploded")
        return {"source": "cache" if self.age_s is not None else "builtin",
                "age_s": self.age_s}


@dataclass
class NamesOnlyLoops:
    """What the ``Background`` protocol promises: names() of the running loops."""

    running: list[str] = field(default_factory=lambda: ["cost-backfill", "pricing-refresh"])
    broken: bool = False

    def names(self) -> list[str]:
        if self.broken:
            raise RuntimeError("loops exploded")
        return self.running

    def start(self) -> None:
        pass

    def stop(self, timeout_s: float = 5.0) -> bool:
        return True


class SupervisorLoops(NamesOnlyLoops):
    def status(self) -> dict[str, dict[str, Any]]:
        return {"cost-backfill": {"running": True, "runs": 4, "failures": 0,
                                  "last_success_at": NOW - 60, "last_error": None},
                "pricing-refresh": {"running": False, "runs": 9, "failures": 2,
                                    "last_success_at": None, "last_error": "HTTP 503"}}


@dataclass
class Services:
    db: Database
    clock: FixedClock
    pricing: FakePricing
    loops: NamesOnlyLoops
    metrics: ProxyMetrics


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    db = open_database(tmp_path / "proxy.db")
    conn = sqlite3.connect(tmp_path / "proxy.db")
    with conn:
        conn.executemany(
            "INSERT INTO daily_usage (day, provider, model, request_count, total_tokens, "
            "cost_usd) VALUES (?, ?, ?, ?, ?, ?)",
            [("2026-03-01", "anthropic", 'claude "quoted"\\model', 3, 900, 0.5),
             ("2026-03-01", "openai", "gpt-5", 2, 100, None),
             ("2026-02-28", "openai", "gpt-5", 50, 5000, 9.0)])  # yesterday: not shown
    conn.close()
    yield Services(db, FixedClock(), FakePricing(), SupervisorLoops(), ProxyMetrics())
    db.close()


def scrape(services: Services) -> tuple[str, dict[str, Family]]:
    response = endpoint.handle(services, Request(EnvironBuilder(path="/metrics").get_environ()))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    assert response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    return text, parse_exposition(text)


def test_scrape_has_every_family_once_and_todays_usage(services: Services) -> None:
    services.metrics.request_started()
    services.metrics.request_finished(
        provider="openai", model="gpt-5", tool="codex", status=200, lifecycle="completed",
        streamed=False, duration_s=0.8, upstream_s=0.79, ttfb_s=0.5,
        usage_tokens={"prompt": 10, "completion": 5}, cost_usd=0.001)
    text, fams = scrape(services)
    assert text.startswith(f"# HELP {P}up ")
    assert fams[P + "up"].get() == 1
    req = fams[P + "requests_today"]
    assert req.type == "gauge"
    assert req.series() == [{"provider": "anthropic", "model": 'claude "quoted"\\model'},
                            {"provider": "openai", "model": "gpt-5"}]
    assert req.get(provider="openai", model="gpt-5") == 2
    assert fams[P + "tokens_today"].get(provider="anthropic",
                                        model='claude "quoted"\\model') == 900
    assert fams[P + "cost_usd_today"].get(provider="openai", model="gpt-5") == 0
    assert fams[P + "requests_total"].get(provider="openai", model="gpt-5", tool="codex",
                                          status="200", lifecycle_status="completed") == 1
    assert fams[P + "in_flight_requests"].get() == 0
    assert fams[P + "pricing_age_seconds"].get() == 30
    assert fams[P + "pricing_degraded"].get() == 0
    assert fams[P + "loop_up"].get(loop="pricing-refresh") == 0
    assert fams[P + "loop_failures"].get(loop="pricing-refresh") == 2
    assert fams[P + "loop_last_success_timestamp_seconds"].get(loop="cost-backfill") == NOW - 60


def test_loops_without_status_report_the_running_names(services: Services) -> None:
    services.loops = NamesOnlyLoops(running=["pricing-refresh"])
    services.pricing = FakePricing(age_s=None)
    _text, fams = scrape(services)
    assert fams[P + "loop_up"].series() == [{"loop": "pricing-refresh"}]
    assert fams[P + "pricing_degraded"].get() == 1
    assert P + "pricing_age_seconds" not in fams  # never fetched: no age, not a fake 0


def test_broken_sources_leave_their_families_out(services: Services) -> None:
    services.db.close()
    services.pricing = FakePricing(broken=True)
    services.loops = NamesOnlyLoops(broken=True)
    with logged_events("web", lambda r: (event_name(r), event_fields(r))) as events:
        _text, fams = scrape(services)
    assert sorted(f["source"] for name, f in events if name == "metrics.source_failed") == [
        "daily_usage", "loops", "pricing"]
    assert fams[P + "up"].get() == 1
    assert P + "requests_total" in fams
    for gone in ("requests_today", "pricing_degraded", "loop_up"):
        assert P + gone not in fams


# -- end to end ------------------------------------------------------------------------------


def get_metrics(proxy: RunningProxy, headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], str]:
    url = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def test_a_call_moves_the_counters_and_histograms(proxy: RunningProxy) -> None:
    status, _h, _b = post(proxy, "/v1/chat/completions", {"model": "gpt-5", "messages": []},
                          {"User-Agent": "OpenAI/Python 2.0"})
    assert status == 200
    status, _h, _b = post(proxy, "/v1/messages", {"model": "claude-sonnet-4-5",
                                                  "max_tokens": 5, "messages": [],
                                                  "stream": True})
    assert status == 200
    rows = proxy.final_rows(2)

    def settled() -> dict[str, Family] | None:
        code, headers, text = get_metrics(proxy)
        assert code == 200
        assert headers["content-type"] == CONTENT_TYPE
        fams = parse_exposition(text)
        done = sum(s.value for s in fams[P + "requests_total"].samples)
        return fams if done == 2 and fams[P + "in_flight_requests"].get() == 0 else None

    fams: dict[str, Family] = wait_until(settled, what="both calls counted")
    for row in rows:
        who = {"provider": row["provider"], "model": row["model"], "tool": row["tool"]}
        assert fams[P + "requests_total"].get(**who, status="200",
                                              lifecycle_status="completed") == 1
        tokens = {s.labels["type"]: s.value for s in fams[P + "tokens_total"].samples
                  if {k: s.labels[k] for k in who} == who}
        want = {kind: row[f"{kind}_tokens"] for kind in
                ("prompt", "cache_read", "cache_creation", "completion", "reasoning")}
        assert tokens == {k: v for k, v in want.items() if v}
        assert fams[P + "cost_usd_total"].get(**who) == pytest.approx(row["cost_usd"])
        streamed = "true" if row["streamed"] else "false"
        duration = fams[P + "request_duration_seconds"]
        assert duration.get(P + "request_duration_seconds_count", provider=row["provider"],
                            streamed=streamed) == 1
        assert fams[P + "requests_today"].get(provider=row["provider"],
                                              model=row["model"]) == 1
    overhead = fams[P + "proxy_overhead_seconds"]
    assert overhead.get(P + "proxy_overhead_seconds_count") == 2
    total = sum(s.value for s in fams[P + "request_duration_seconds"].samples
                if s.name.endswith("_sum"))
    assert 0 <= overhead.get(P + "proxy_overhead_seconds_sum") <= total
    ttfb = fams[P + "upstream_ttfb_seconds"]
    assert sum(s.value for s in ttfb.samples if s.name.endswith("_count")) == 2
    assert all(math.isfinite(s.value) for f in fams.values() for s in f.samples)


def test_metrics_need_the_admin_token_when_one_is_set(make_settings: Any) -> None:
    running = start_proxy(make_settings(admin_api_key="s3cret"))
    try:
        assert get_metrics(running)[0] == 401
        code, _headers, text = get_metrics(running, {"x-admin-token": "s3cret"})
        assert code == 200
        assert parse_exposition(text)[P + "up"].get() == 1
    finally:
        running.stop()

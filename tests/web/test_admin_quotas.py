"""The quota admin handlers, called directly with real requests, a real database and the
real quota service over a fake CLIProxyAPI."""

from __future__ import annotations

import calendar
import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from agent_cli_proxy.config import Settings
from agent_cli_proxy.upstream.client import UpstreamClient
from agent_cli_proxy.upstream.management import ManagementClient
from agent_cli_proxy.web import admin_quotas
from agent_cli_proxy.web.app import ROUTES
from agent_cli_proxy.web.services import ProxyServices
from agent_cli_proxy.workers.quotas import QuotaService
from tests.conftest import RunningProxy, start_proxy, wait_until
from tests.fake_cliproxy import DEFAULT_KEY, FakeCliProxy
from tests.fake_cliproxy import running as running_cpa
from tests.hand_clock import HandClock
from tests.web.test_admin import get

NOW = float(calendar.timegm((2026, 8, 20, 10, 30, 0)))


Handler = Callable[[ProxyServices, Request], Response]


def call(handler: Handler, services: ProxyServices, query: str = "",
         method: str = "GET") -> tuple[int, Any]:
    request = Request.from_values("/admin/quotas", query_string=query, method=method)
    response = handler(services, request)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_data())


@pytest.fixture
def running(make_settings: Callable[..., Settings]) -> Iterator[RunningProxy]:
    proxy = start_proxy(make_settings())
    yield proxy
    proxy.stop()


@pytest.fixture
def clock() -> HandClock:
    return HandClock(NOW)


@pytest.fixture
def bare(running: RunningProxy, clock: HandClock) -> ProxyServices:
    """Services as the composition root builds them without CLIProxyAPI settings."""
    return dataclasses.replace(running.app.services, clock=clock, quotas=None)


@pytest.fixture
def cpa(clock: HandClock) -> Iterator[FakeCliProxy]:
    fake = FakeCliProxy(clock=clock.time)
    fake.add_account("carol@example.com", "codex", access_token="tok-c")
    fake.add_account("alice@example.com", "claude", access_token="tok-a")
    fake.add_account("bob@example.com", "claude", access_token="tok-b",
                     fake_quota={"status": 401, "body": {"error": {"message": "expired"}}})
    yield fake
    fake.close()


@pytest.fixture
def services(running: RunningProxy, cpa: FakeCliProxy, clock: HandClock
             ) -> Iterator[ProxyServices]:
    http = UpstreamClient(maxsize=2)
    base = running.app.services
    management = ManagementClient(http, cpa.url, DEFAULT_KEY, clock=clock)
    service = QuotaService(base.db, base.settings, management=management, clock=clock)
    yield dataclasses.replace(base, clock=clock, quotas=service)
    service.close()
    http.close()


def add_original_rows(services: ProxyServices) -> None:
    """Snapshots as the TypeScript original writes them (no ``model``)."""
    with services.db.write() as conn:
        for stamp, used in (("2026-08-19T09:00:00.000Z", 10.0),
                            ("2026-08-20T09:10:00.000Z", 20.0),
                            ("2026-08-20T09:40:00.000Z", 30.0)):
            conn.execute(
                "INSERT INTO quota_snapshots (timestamp, provider, account, quota_type, "
                "used_pct, remaining, remaining_raw, resets_at, raw_json) "
                "VALUES (?, 'claude', 'old@x', '5h', ?, ?, ?, NULL, '{}')",
                (stamp, used, 100 - used, f"{100 - used:.2f}%"))


def test_not_configured_serves_stored_snapshots_and_refuses_refresh(
        bare: ProxyServices) -> None:
    add_original_rows(bare)
    status, body = call(admin_quotas.quotas, bare)
    assert status == 200
    assert [(s["account"], s["quota_type"], s["used_pct"], s["window"])
            for s in body["snapshots"]] == [("old@x", "5h", 30.0, "5h")]
    assert set(body) == {"snapshots"}  # the original's answer, exactly
    for handler, query, method in ((admin_quotas.quotas, "refresh=true", "GET"),
                                   (admin_quotas.refresh, "", "POST")):
        status, body = call(handler, bare, query, method)
        assert status == 503
        assert body["error"]["code"] == "quotas_not_configured"
    status, body = call(admin_quotas.probes, bare)
    assert status == 200
    assert [p["provider"] for p in body["probes"]] == [
        "codex", "claude", "gemini-cli", "antigravity", "kimi"]
    assert all(p["via"] is None for p in body["probes"])
    assert body["status"]["enabled"] is False
    status, body = call(admin_quotas.history, bare)
    assert status == 200
    assert (body["hours"], body["since"]) == (24, "2026-08-19T11:00:00.000Z")
    assert [(b["timestamp"], b["used_pct"], b["samples"]) for b in body["buckets"]] == [
        ("2026-08-20T09:00:00.000Z", 30.0, 2)]


def test_refresh_then_latest_per_account(services: ProxyServices, cpa: FakeCliProxy) -> None:
    status, result = call(admin_quotas.refresh, services, method="POST")
    assert status == 200
    assert set(result) >= {"timestamp", "accounts", "inserted"}
    assert result["timestamp"] == "2026-08-20T10:30:00.000Z"
    assert result["inserted"] == 4
    statuses = {a["account"]: a["status"] for a in result["accounts"]}
    assert statuses == {"carol@example.com": "active", "alice@example.com": "active",
                        "bob@example.com": "unauthorized"}
    assert set(result["accounts"][0]) >= {"provider", "account", "status", "unavailable",
                                          "disabled", "plan", "refreshed_at", "error",
                                          "windows", "local_usage"}
    status, body = call(admin_quotas.quotas, services)
    assert status == 200
    assert [(s["provider"], s["account"], s["quota_type"]) for s in body["snapshots"]] == [
        ("claude", "alice@example.com", "5h"), ("claude", "alice@example.com", "week"),
        ("codex", "carol@example.com", "5h"), ("codex", "carol@example.com", "week")]
    assert body["status"]["last_source"] == "management"
    bob = next(a for a in body["accounts"] if a["account"] == "bob@example.com")
    assert (bob["status"], bob["error"]) == ("unauthorized", "HTTP 401: expired")
    assert "windows" not in bob
    status, body = call(admin_quotas.quotas, services, "provider=codex")
    assert {s["provider"] for s in body["snapshots"]} == {"codex"}
    calls_before = len(cpa.api_calls)
    status, again = call(admin_quotas.quotas, services, "refresh=true")
    assert status == 200 and again["inserted"] == 4
    assert len(cpa.api_calls) == calls_before + 3


def test_probes_show_the_placeholder(services: ProxyServices) -> None:
    status, body = call(admin_quotas.probes, services)
    assert status == 200
    codex = body["probes"][0]
    assert (codex["provider"], codex["via"], codex["method"]) == ("codex", "api-call", "GET")
    assert codex["url"] == "https://chatgpt.com/backend-api/wham/usage"
    assert codex["headers"]["Authorization"] == "Bearer $TOKEN$"
    assert body["status"]["enabled"] is True


def test_history_buckets_and_filters(services: ProxyServices) -> None:
    add_original_rows(services)
    call(admin_quotas.refresh, services, method="POST")
    status, body = call(admin_quotas.history, services, "hours=1")
    assert (status, body["since"]) == (200, "2026-08-20T10:00:00.000Z")
    assert {(b["provider"], b["account"], b["quota_type"]) for b in body["buckets"]} == {
        ("claude", "alice@example.com", "5h"), ("claude", "alice@example.com", "week"),
        ("codex", "carol@example.com", "5h"), ("codex", "carol@example.com", "week")}
    status, body = call(admin_quotas.history, services,
                        "hours=48&provider=claude&account=old@x")
    assert [(b["timestamp"], b["used_pct"], b["max_used_pct"], b["samples"])
            for b in body["buckets"]] == [("2026-08-19T09:00:00.000Z", 10.0, 10.0, 1),
                                          ("2026-08-20T09:00:00.000Z", 30.0, 30.0, 2)]
    status, body = call(admin_quotas.history, services, "account=nobody")
    assert (status, body["buckets"]) == (200, [])


@pytest.mark.parametrize("hours", ["0", "-1", "1.5", "abc", "24h", "99999999", " ",
                                   "\uff11"])  # a fullwidth 1
def test_history_rejects_bad_hours(bare: ProxyServices, hours: str) -> None:
    status, body = call(admin_quotas.history, bare, "hours=" + hours)
    if hours == " ":
        assert status == 200  # empty: the default
        return
    assert status == 400
    assert body["error"]["message"] == "Invalid hours parameter"
    assert body["error"]["parameter"] == "hours"


# -- through the real app, once the routes are in the routing table -------------------------

@pytest.mark.skipif("admin_quotas_history" not in ROUTES,
                    reason="quota routes not wired into web/app.py yet")
def test_served_by_the_app_with_the_loop(make_settings: Callable[..., Settings]) -> None:
    with running_cpa() as cpa:
        cpa.add_account("alice@example.com", "claude", access_token="tok-a")
        proxy = start_proxy(make_settings(cli_proxy_api_url=cpa.url,
                                          cliproxy_mgmt_key=DEFAULT_KEY), background=True)
        try:
            # The loop's first refresh runs at start.
            body = wait_until(lambda: get(proxy.url, "/admin/quotas")[1]["snapshots"],
                              what="the first quota refresh")
            assert {s["quota_type"] for s in body} == {"5h", "week"}
            status, result = get(proxy.url, "/admin/quotas/refresh", method="POST")
            assert status == 200 and result["inserted"] == 2
            status, history = get(proxy.url, "/admin/quotas/history?hours=2")
            assert status == 200 and len(history["buckets"]) == 2
            assert get(proxy.url, "/admin/quotas/history?hours=0")[0] == 400
            status, probes = get(proxy.url, "/admin/quotas/probes")
            assert probes["probes"][0]["via"] == "api-call"
        finally:
            proxy.stop()

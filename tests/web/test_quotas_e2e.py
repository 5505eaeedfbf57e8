"""Quota snapshots through the real proxy: ``/admin/quotas?refresh=true`` makes the proxy's
quota service probe every account of a fake CLIProxyAPI through its ``api-call`` relay,
and the admin routes serve the snapshots, the probes and the hourly history.

The proxy and the fake share a hand-moved clock (snapshot times, the history's hours);
the vendors are the canned answers of ``tests.fake_cliproxy_quota``, reached only
through the fake's ``api-call``: nothing leaves the machine.
"""

from __future__ import annotations

import calendar
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent_cli_proxy.config import Settings
from tests.conftest import RunningProxy, start_proxy
from tests.fake_cliproxy import DEFAULT_KEY, FakeCliProxy
from tests.hand_clock import HandClock
from tests.web.test_admin import get
from tests.workers.test_quotas import add_all_providers

NOW = float(calendar.timegm((2026, 8, 20, 10, 0, 0)))
STAMP = "2026-08-20T10:00:00.000Z"
# Each provider's windows and their share used, from the canned vendor answers.
WINDOWS = {
    ("codex", "carol@example.com", "5h"): 37.0, ("codex", "carol@example.com", "week"): 61.0,
    ("claude", "alice@example.com", "5h"): 42.0,
    ("claude", "alice@example.com", "week"): 18.5,
    ("gemini-cli", "gem@example.com", "gemini-2.5-pro"): 20.0,
    ("gemini-cli", "gem@example.com", "gemini-2.5-flash"): 0.0,
    ("antigravity", "anti@example.com", "claude:5h"): 75.0,
    ("antigravity", "anti@example.com", "gemini-pro"): 50.0,
    ("kimi", "kim@example.com", "week"): 25.0, ("kimi", "kim@example.com", "5h"): 20.0,
}


@pytest.fixture
def clock() -> HandClock:
    return HandClock(NOW)


@pytest.fixture
def cpa(clock: HandClock) -> Iterator[FakeCliProxy]:
    fake = FakeCliProxy.like("v7", clock=clock.time)
    add_all_providers(fake)
    yield fake
    fake.close()


@pytest.fixture
def make_proxy(make_settings: Callable[..., Settings], cpa: FakeCliProxy,
               clock: HandClock) -> Iterator[Callable[..., RunningProxy]]:
    made: list[RunningProxy] = []

    def build(**overrides: Any) -> RunningProxy:
        values: dict[str, Any] = {"cli_proxy_api_url": cpa.url,
                                  "cliproxy_mgmt_key": DEFAULT_KEY, "cliproxy_auth_dir": "",
                                  **overrides}
        made.append(start_proxy(make_settings(**values), clock=clock))
        return made[-1]

    yield build
    for running in made:
        running.stop()


def windows(snapshots: list[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
    return {(s["provider"], s["account"], s["window"]): s["used_pct"] for s in snapshots}


def test_snapshots_for_every_provider_through_the_admin_api(
        make_proxy: Callable[..., RunningProxy], cpa: FakeCliProxy,
        clock: HandClock) -> None:
    proxy = make_proxy()
    status, result = get(proxy.url, "/admin/quotas?refresh=true")
    assert status == 200
    assert (result["timestamp"], result["source"], result["inserted"]) == \
        (STAMP, "management", 10)
    assert {a["provider"]: a["status"] for a in result["accounts"]} == {
        "codex": "active", "claude": "active", "gemini-cli": "active",
        "antigravity": "active", "kimi": "active"}
    # Through CPA's relay, with the token placeholder: the proxy never held a token.
    assert len(cpa.management_requests("/api-call")) == 5
    assert {c["header"]["Authorization"] for c in cpa.api_calls} == {"Bearer $TOKEN$"}

    status, body = get(proxy.url, "/admin/quotas")
    assert status == 200
    assert windows(body["snapshots"]) == WINDOWS
    claude = next(s for s in body["snapshots"]
                  if (s["provider"], s["window"]) == ("claude", "5h"))
    assert (claude["timestamp"], claude["remaining"], claude["resets_at"]) == \
        (STAMP, 58.0, "2026-08-20T14:00:00.000Z")
    assert body["status"]["last_source"] == "management"
    assert {a["account"] for a in body["accounts"]} == {a for _, a, _ in WINDOWS}

    # An hour later the Claude account has used more: a second snapshot, kept as history.
    clock.advance(3600)
    cpa.accounts[1].file["fake_quota"] = {"status": 200, "body": {
        "five_hour": {"utilization": 64.0, "resets_at": "2026-08-20T14:00:00Z"},
        "seven_day": {"utilization": 20.0, "resets_at": "2026-08-25T03:00:00Z"}}}
    status, again = get(proxy.url, "/admin/quotas/refresh", method="POST")
    assert status == 200 and again["inserted"] == 10
    _, body = get(proxy.url, "/admin/quotas?provider=claude")
    assert windows(body["snapshots"]) == {("claude", "alice@example.com", "5h"): 64.0,
                                          ("claude", "alice@example.com", "week"): 20.0}

    status, history = get(proxy.url, "/admin/quotas/history?hours=2")
    assert status == 200
    assert history["since"] == STAMP
    hours = {(b["timestamp"], b["provider"], b["account"], b["window"]): b["used_pct"]
             for b in history["buckets"]}
    assert len(hours) == 20  # every window of every provider, in each of the two hours
    assert {(p, a, w): pct for (t, p, a, w), pct in hours.items()
            if t == "2026-08-20T10:00:00.000Z"} == WINDOWS
    assert hours[("2026-08-20T11:00:00.000Z", "claude", "alice@example.com", "5h")] == 64.0
    _, one = get(proxy.url, "/admin/quotas/history?hours=1&provider=codex")
    assert {(b["provider"], b["window"]) for b in one["buckets"]} == {("codex", "5h"),
                                                                       ("codex", "week")}
    status, bad = get(proxy.url, "/admin/quotas/history?hours=0")
    assert (status, bad["error"]["parameter"]) == (400, "hours")


def test_probes_name_each_provider_and_how_it_is_asked(
        make_proxy: Callable[..., RunningProxy]) -> None:
    proxy = make_proxy()
    status, body = get(proxy.url, "/admin/quotas/probes")
    assert status == 200
    assert {p["provider"]: p["via"] for p in body["probes"]} == dict.fromkeys(
        ("codex", "claude", "gemini-cli", "antigravity", "kimi"), "api-call")
    assert all("$TOKEN$" in p["headers"]["Authorization"] for p in body["probes"])
    assert body["status"]["management_api"] is True


def test_a_slow_vendor_does_not_pause_attribution(make_proxy: Callable[..., RunningProxy],
                                                  cpa: FakeCliProxy) -> None:
    proxy = make_proxy(quota_refresh_timeout_ms=250)
    slow = threading.Event()
    cpa.accounts[1].file["fake_quota_hold"] = slow  # Claude's usage endpoint hangs
    try:
        status, result = get(proxy.url, "/admin/quotas?refresh=true")
    finally:
        slow.set()
    assert status == 200
    by_provider = {a["provider"]: a for a in result["accounts"]}
    assert by_provider["claude"]["status"] == "error"
    assert "within 0.25 s" in by_provider["claude"]["error"]
    assert {a["status"] for p, a in by_provider.items() if p != "claude"} == {"active"}
    _, ready = get(proxy.url, "/ready")
    assert ready["checks"]["accounts"]["state"] == "ok"

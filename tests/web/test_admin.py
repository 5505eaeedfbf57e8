"""The admin API: every route from loopback, parameter checks, access control."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from tests.conftest import RunningProxy, start_proxy
from tests.web.test_relay_formats import post

TODAY = dt.datetime.now(dt.UTC).date().isoformat()


def get(url: str, target: str, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, target, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, json.loads(body) if body else None
    finally:
        conn.close()


@pytest.fixture
def busy(proxy: RunningProxy) -> RunningProxy:
    """A proxy with three recorded calls: Claude (stream), GPT (JSON), one upstream error."""
    post(proxy, "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 5,
                                 "messages": [], "stream": True})
    post(proxy, "/v1/chat/completions", {"model": "gpt-5", "messages": []},
         {"User-Agent": "OpenAI/Python 2.0"})
    post(proxy, "/v1/chat/completions", b"{broken")
    proxy.final_rows(3)
    return proxy


def test_usage_views(busy: RunningProxy) -> None:
    status, today = get(busy.url, "/admin/usage/today")
    assert status == 200
    assert today["date"] == TODAY
    assert today["requests"] == 3
    assert {r["model"] for r in today["breakdown"]} >= {"claude-sonnet-4-5-20250929",
                                                       "gpt-5-2025-08-07"}
    row = today["breakdown"][0]
    assert set(row) == {"day", "provider", "model", "request_count", "prompt_tokens",
                        "completion_tokens", "cache_creation_tokens", "cache_read_tokens",
                        "total_tokens", "cost_usd"}

    status, days = get(busy.url, f"/admin/usage/range?from={TODAY}&to={TODAY}")
    assert status == 200 and [d["date"] for d in days] == [TODAY]
    assert days[0]["requests"] == 3
    status, models = get(busy.url, f"/admin/usage/models?day={TODAY}")
    assert status == 200 and models == today["breakdown"]
    status, providers = get(busy.url, "/admin/usage/providers")
    assert status == 200
    assert {p["provider"]: p["request_count"] for p in providers} == {"anthropic": 1,
                                                                     "openai": 2}
    for target in ("/admin/usage/accounts", f"/admin/usage/accounts/range?from={TODAY}"
                   f"&to={TODAY}", "/admin/usage/accounts/summary"):
        status, rows = get(busy.url, target)
        assert (status, rows) == (200, []), target  # filled by CLIProxyAPI correlation
    status, trend = get(busy.url, "/admin/usage/trend?hours=3")
    assert status == 200 and trend["hours"] == 3
    assert sum(b["requests"] for b in trend["buckets"]) == 3
    status, stats = get(busy.url, "/admin/stats")
    assert status == 200 and stats["total_requests"] == 3
    assert stats["total_cost_usd"] > 0


def test_logs_filters_and_single_log(busy: RunningProxy) -> None:
    status, rows = get(busy.url, "/admin/logs")
    assert status == 200 and len(rows) == 3
    assert rows[0]["started_at"] >= rows[-1]["started_at"]
    status, rows = get(busy.url, "/admin/logs?status=error")
    assert [r["status"] for r in rows] == [400]
    status, rows = get(busy.url, "/admin/logs?status=400")
    assert len(rows) == 1
    status, rows = get(busy.url, "/admin/logs?tool=openai-sdk&limit=1&offset=0")
    assert [r["tool"] for r in rows] == ["openai-sdk"]
    status, rows = get(busy.url, "/admin/logs?model=" + quote("x' OR 1=1 --"))
    assert (status, rows) == (200, [])  # bound as a value, never spliced into SQL

    first = busy.rows()[0]
    status, row = get(busy.url, f"/admin/logs/{first['id']}")
    assert status == 200 and row["request_id"] == first["request_id"]
    status, body = get(busy.url, "/admin/logs/999999")
    assert (status, body["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize(("target", "parameter"), [
    ("/admin/usage/models?day=yesterday", "day"),
    ("/admin/usage/models?day=2026-02-30", "day"),
    ("/admin/usage/range?from=2026-01-01", "to"),
    ("/admin/usage/range?from=2026-02-01&to=2026-01-01", "from"),
    ("/admin/usage/range?from=1900-01-01&to=2026-01-01", "to"),
    ("/admin/logs?limit=0", "limit"),
    ("/admin/logs?limit=100000", "limit"),
    ("/admin/logs?limit=ten", "limit"),
    ("/admin/logs?offset=-1", "offset"),
    ("/admin/logs?status=bogus", "status"),
    ("/admin/logs?tool=" + "x" * 500, "tool"),
    ("/admin/usage/trend?hours=0", "hours"),
    ("/admin/usage/trend?hours=1e9", "hours"),
])
def test_bad_parameters_are_400_naming_the_parameter(proxy: RunningProxy, target: str,
                                                     parameter: str) -> None:
    status, body = get(proxy.url, target)
    assert status == 400
    assert body["error"]["code"] == "invalid_parameter"
    assert body["error"]["parameter"] == parameter


def test_quotas_config_and_unknown_admin_paths(proxy: RunningProxy) -> None:
    status, body = get(proxy.url, "/admin/quotas")
    assert (status, body) == (200, {"snapshots": []})
    status, body = get(proxy.url, "/admin/config")
    assert status == 200
    assert body["config"]["CLI_PROXY_API_URL"] == proxy.settings.cli_proxy_api_url
    assert "upstream-secret" not in json.dumps(body)  # CLI_PROXY_API_KEY is redacted
    status, body = get(proxy.url, "/admin/providers")
    assert status == 200
    (provider,) = body["providers"]
    assert provider["upstreamBaseUrl"] == proxy.settings.cli_proxy_api_url
    assert "upstream-secret" not in json.dumps(body)
    status, body = get(proxy.url, "/admin/nope")
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_admin_api_key_is_required_when_set(make_settings: Any) -> None:
    proxy = start_proxy(make_settings(admin_api_key="s3cret-admin-key"))
    try:
        for headers in ({}, {"x-admin-token": "wrong"}, {"Authorization": "Bearer wrong"}):
            status, body = get(proxy.url, "/admin/stats", headers)
            assert (status, body["error"]["code"]) == (401, "UNAUTHORIZED")
        status, _ = get(proxy.url, "/admin/nope", {})
        assert status == 401  # unknown admin paths are behind the key too
        for headers in ({"x-admin-token": "s3cret-admin-key"},
                        {"Authorization": "Bearer s3cret-admin-key"}):
            status, _ = get(proxy.url, "/admin/stats", headers)
            assert status == 200
        status, _ = get(proxy.url, "/health")
        assert status == 200  # probes stay open
    finally:
        proxy.stop()


def _non_loopback_address() -> str | None:
    """This machine's own address on a non-loopback interface, if it has one."""
    for target in ("10.255.255.255", "198.51.100.1", "192.0.2.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((target, 9))  # UDP: no packet is sent, only a route lookup
            except OSError:
                continue
            address = str(probe.getsockname()[0])
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    return None


def test_a_non_loopback_socket_is_refused(make_settings: Any) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    proxy = start_proxy(make_settings(), host="0.0.0.0")
    try:
        port = urlsplit(proxy.url).port
        status, body = get(f"http://{address}:{port}", "/admin/stats")
        assert (status, body["error"]["code"]) == (403, "LOCAL_ONLY")
        status, _ = get(proxy.url, "/admin/stats")
        assert status == 200
    finally:
        proxy.stop()


def test_trusted_reverse_proxy_names_the_client(make_settings: Any) -> None:
    proxy = start_proxy(make_settings(trust_proxy_headers=True))
    try:
        # The hop we trust appended the last address; the first one is the client's claim.
        status, _ = get(proxy.url, "/admin/stats", {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"})
        assert status == 403
        status, _ = get(proxy.url, "/admin/stats", {"X-Forwarded-For": "203.0.113.9, 127.0.0.1"})
        assert status == 200
    finally:
        proxy.stop()


def test_trusted_mode_still_refuses_other_forwarding_headers(make_settings: Any) -> None:
    proxy = start_proxy(make_settings(trust_proxy_headers=True))
    try:
        for headers in ({"Forwarded": "for=8.8.8.8"}, {"X-Real-IP": "203.0.113.4"}):
            assert get(proxy.url, "/admin/stats", headers)[0] == 403, headers
    finally:
        proxy.stop()

"""/ready: database, prices, upstream health route and loops; cached for a few seconds."""

from __future__ import annotations

import socket
from typing import Any

from agent_cli_proxy.web.ready_cache import ReadyCache
from tests.conftest import RunningProxy, start_proxy
from tests.fake_upstream import FakeUpstream, Script
from tests.web.test_admin import get


def healthz_calls(upstream: FakeUpstream) -> int:
    return sum(r.path == "/healthz" for r in upstream.requests)


def test_ready_probes_the_upstream_health_route_once_per_ttl(proxy: RunningProxy,
                                                             upstream: FakeUpstream) -> None:
    status, body = get(proxy.url, "/ready")
    assert status == 200
    assert body["checks"]["upstream"]["status"] == "pass"
    assert body["checks"]["upstream"]["httpStatus"] == 200
    get(proxy.url, "/ready")
    assert healthz_calls(upstream) == 1  # the second answer came from the cache


def test_old_cliproxyapi_without_healthz_is_probed_at_root(proxy: RunningProxy,
                                                           upstream: FakeUpstream) -> None:
    upstream.script(Script(404, pieces=[b"404 page not found"], framing="length"))
    upstream.script(Script(pieces=[b'{"message":"CLI Proxy API Server"}'], framing="length"))
    status, body = get(proxy.url, "/ready")
    assert status == 200
    assert body["checks"]["upstream"]["output"] == "HTTP 200 from /"


def test_a_missing_route_is_not_up(proxy: RunningProxy, upstream: FakeUpstream) -> None:
    upstream.script(Script(404, pieces=[b"no"], framing="length"))
    upstream.script(Script(404, pieces=[b"no"], framing="length"))
    status, body = get(proxy.url, "/ready")
    assert status == 503
    assert body["status"] == "fail"
    assert body["checks"]["upstream"]["status"] == "fail"


def test_unreachable_upstream_fails_ready(make_settings: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    proxy = start_proxy(make_settings(cli_proxy_api_url=f"http://127.0.0.1:{dead}"))
    try:
        status, body = get(proxy.url, "/ready")
    finally:
        proxy.stop()
    assert status == 503
    assert "refused" in body["checks"]["upstream"]["output"].lower()
    assert body["checks"]["database"]["status"] == "pass"


def test_ready_cache_expires_and_recomputes() -> None:
    cache = ReadyCache(ttl_s=3.0)
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert cache.get(100.0, compute) == 1
    assert cache.get(102.9, compute) == 1
    assert cache.get(103.0, compute) == 2
    assert cache.get(50.0, compute) == 3  # a clock that went back never pins an old answer

"""Circuit breaking end to end: a failing upstream is left alone, then probed back."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import start_proxy
from tests.fake_upstream import FakeUpstream, Script
from tests.web.test_admin import get
from tests.web.test_relay_formats import post


def test_failures_open_the_breaker_and_reset_closes_it(make_settings: Any,
                                                       upstream: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(upstream_circuit_breaker_open_after_failures=2))
    try:
        for _ in range(2):  # what a dead upstream behind a gateway looks like
            upstream.script(Script(502, content_type="text/html", pieces=[b"<h1>502</h1>"],
                                   framing="length"))
            assert post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"})[0] == 502
        sent = len(upstream.requests)
        status, headers, body = post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"})
        assert status == 503
        assert int(headers["retry-after"]) > 0
        assert json.loads(body)["error"]["code"] == "circuit_open"
        assert len(upstream.requests) == sent  # the failing upstream was left alone
        rows = proxy.final_rows(3)
        assert (rows[-1]["lifecycle_status"], rows[-1]["error_code"]) == ("error",
                                                                          "circuit_open")

        status, body = get(proxy.url, "/admin/breakers")
        assert status == 200
        (snap,) = body["breakers"]
        assert (snap["providerId"], snap["state"], snap["failures"]) == ("cliproxyapi",
                                                                         "open", 2)
        status, text = _metrics(proxy.url)
        assert 'agent_cli_proxy_breaker_state{breaker="cliproxyapi"} 2' in text
        assert get(proxy.url, "/admin/breakers/cliproxyapi")[1]["state"] == "open"
        assert get(proxy.url, "/admin/breakers/nope")[0] == 404

        status, body = get(proxy.url, "/admin/breakers/cliproxyapi/reset", method="POST")
        assert (status, body) == (200, {"ok": True, "providerId": "cliproxyapi"})
        assert post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"})[0] == 200
    finally:
        proxy.stop()


def test_client_errors_and_rate_limits_do_not_open_it(make_settings: Any,
                                                      upstream: FakeUpstream) -> None:
    proxy = start_proxy(make_settings(upstream_circuit_breaker_open_after_failures=1))
    try:
        upstream.script(Script(429, pieces=[b"{}"], headers=[("Retry-After", "3")],
                               framing="length"))
        upstream.script(Script(400, pieces=[b"{}"], framing="length"))
        assert post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"})[0] == 429
        assert post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"})[0] == 400
        assert post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"})[0] == 200
        assert get(proxy.url, "/admin/breakers")[1]["breakers"][0]["state"] == "closed"
    finally:
        proxy.stop()


def test_application_errors_from_a_working_upstream_do_not_open_it(
        make_settings: Any, upstream: FakeUpstream) -> None:
    # CLIProxyAPI answers e.g. an unknown model with a JSON 502: one client's mistake must
    # not shut every other client out.
    proxy = start_proxy(make_settings(upstream_circuit_breaker_open_after_failures=1))
    try:
        for _ in range(3):
            upstream.script(Script(502, pieces=[b'{"error":"unknown provider for model x"}'],
                                   framing="length"))
            assert post(proxy, "/v1/messages", {"model": "x"})[0] == 502
        assert post(proxy, "/v1/messages", {"model": "claude-haiku-4-5"})[0] == 200
        assert get(proxy.url, "/admin/breakers")[1]["breakers"][0]["state"] == "closed"
    finally:
        proxy.stop()


def _metrics(url: str) -> tuple[int, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()

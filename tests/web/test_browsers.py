"""What a web page could make the browser send to a local proxy is refused."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunningProxy
from tests.fake_upstream import FakeUpstream
from tests.web.test_admin import get
from tests.web.test_relay_formats import post


@pytest.mark.parametrize("headers", [
    {"Host": "evil.example:3100"},  # DNS rebinding: the page's own name, resolved locally
    {"Origin": "https://evil.example"},  # a blind cross-site POST
    {"Sec-Fetch-Site": "cross-site"},
])
def test_open_loopback_proxy_refuses_browser_requests(proxy: RunningProxy,
                                                      upstream: FakeUpstream,
                                                      headers: dict[str, str]) -> None:
    status, _, body = post(proxy, "/v1/chat/completions", {"model": "gpt-5"}, headers)
    assert status == 403
    assert b"browser_request_refused" in body
    assert upstream.requests == [] and proxy.rows() == []
    status, payload = get(proxy.url, "/admin/stats", headers)
    assert (status, payload["error"]["code"]) == (403, "browser_request_refused")


def test_local_origins_and_plain_clients_pass(proxy: RunningProxy) -> None:
    for headers in ({}, {"Origin": "http://localhost:5173"}, {"Host": "localhost:3100"},
                    {"Origin": "null"}):
        assert post(proxy, "/v1/chat/completions", {"model": "gpt-5"}, headers)[0] == 200


def test_with_client_keys_required_the_proxy_routes_do_not_check(make_settings: Any,
                                                                 upstream: FakeUpstream
                                                                 ) -> None:
    from agent_cli_proxy.storage.api_keys import create_key
    from tests.conftest import start_proxy
    proxy = start_proxy(make_settings(proxy_require_api_key=True))
    try:
        _, key = create_key(proxy.db, "web-app", allowed_providers=None,
                            allowed_accounts=None, now_iso="2026-11-21T00:00:00.000Z")
        status, _, _ = post(proxy, "/v1/chat/completions", {"model": "gpt-5"},
                            {"Origin": "https://my-web-app.example",
                             "Authorization": f"Bearer {key}"})
        assert status == 200  # a keyed client may be a web app; the key is the control
    finally:
        proxy.stop()

"""Costs end to end: each finalized call is priced, audited, and explainable over HTTP."""

from __future__ import annotations

import http.client
import json
import pathlib
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningProxy
from tests.fake_upstream import MODELS_DEV_SNAPSHOT, FakeUpstream, Script
from tests.web.test_relay_formats import post


def get(proxy: RunningProxy, target: str, headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, Any]]:
    url = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_streamed_claude_call_is_priced_exactly_and_audited(proxy: RunningProxy) -> None:
    post(proxy, "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 10,
                                 "messages": [], "stream": True})
    (row,) = proxy.final_rows()
    # Anthropic rates per million: input 3, output 15, cache read 0.3, 5-minute write 3.75,
    # 1-hour write 2 x input = 6. Buckets: 25 / 2000 / 600 + 400 / 42.
    # 25*3 + 2000*0.3 + 600*3.75 + 400*6 + 42*15 = 75 + 600 + 2250 + 2400 + 630 = 5955
    assert row["cost_status"] == "ok"
    assert row["cost_usd"] == pytest.approx(0.005955, abs=1e-12)

    status, body = get(proxy, f"/admin/logs/{row['id']}/cost-audit")
    assert status == 200
    (audit,) = body["audits"]
    assert audit["base_cost_usd"] == pytest.approx(0.005955, abs=1e-12)
    assert audit["price_key"].startswith("anthropic/claude-sonnet-4-5")
    assert audit["rule"]
    assert audit["detail"]


def test_claude_through_chat_completions_is_priced_as_claude(proxy: RunningProxy,
                                                             upstream: FakeUpstream) -> None:
    chat = {"id": "c1", "object": "chat.completion", "model": "claude-sonnet-4-5-20250929",
            "choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 100,
                                     "total_tokens": 1100,
                                     "prompt_tokens_details": {"cached_tokens": 0}}}
    upstream.script(Script(pieces=[json.dumps(chat).encode()], framing="length"))
    post(proxy, "/v1/chat/completions", {"model": "claude-sonnet-4-5", "messages": []})
    (row,) = proxy.final_rows()
    assert row["provider"] == "openai"
    # 1000 * 3 + 100 * 15 = 4500 per million
    assert row["cost_usd"] == pytest.approx(0.0045, abs=1e-12)


def test_unknown_model_is_never_given_a_made_up_price(proxy: RunningProxy,
                                                      upstream: FakeUpstream) -> None:
    chat = {"id": "c1", "object": "chat.completion", "model": "totally-new-model-9",
            "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                                     "total_tokens": 15}}
    upstream.script(Script(pieces=[json.dumps(chat).encode()], framing="length"))
    post(proxy, "/v1/chat/completions", {"model": "totally-new-model-9", "messages": []})
    (row,) = proxy.final_rows()
    assert (row["cost_status"], row["cost_usd"]) == ("pending", 0)


def test_admin_pricing_explains_a_match(proxy: RunningProxy) -> None:
    status, body = get(proxy, "/admin/pricing?model=claude-sonnet-4-5-20250929&provider=openai")
    assert status == 200
    assert body["match"]["provider"] == "anthropic"
    assert body["match"]["rates"]["input"] == 3.0
    assert body["match"]["rule"]
    assert "source" in body["pricing"]
    status, body = get(proxy, "/admin/pricing?model=totally-new-model-9")
    assert (status, body["match"]) == (200, None)


def test_cost_audit_of_a_missing_row_is_404(proxy: RunningProxy) -> None:
    status, body = get(proxy, "/admin/logs/999/cost-audit")
    assert status == 404
    assert body["error"]["code"] == "not_found"


def test_ready_reports_builtin_prices_as_degraded_not_failed(proxy: RunningProxy) -> None:
    status, body = get(proxy, "/ready")
    assert status == 200
    assert body["checks"]["database"]["status"] == "pass"
    assert body["checks"]["pricing"]["status"] == "warn"
    assert body["checks"]["pricing"]["source"] == "builtin"
    assert body["status"] == "warn"


@pytest.mark.skipif(not MODELS_DEV_SNAPSHOT.exists(),
                    reason="needs ../shared/data/models-dev-api.json beside the checkout")
def test_rows_waiting_for_a_price_are_priced_when_prices_arrive(
        proxy: RunningProxy, upstream: FakeUpstream) -> None:
    chat = {"id": "c1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
            "choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 100,
                                     "total_tokens": 1100,
                                     "prompt_tokens_details": {"cached_tokens": 400}}}
    upstream.script(Script(pieces=[json.dumps(chat).encode()], framing="length"))
    post(proxy, "/v1/chat/completions", {"model": "gpt-4o", "messages": []})
    (row,) = proxy.final_rows()
    assert row["cost_status"] == "pending"  # not in the built-in table: no guessed price

    pricing = proxy.app.services.pricing
    assert pricing.refresh(force=True)  # the fake upstream serves the models.dev snapshot
    (row,) = proxy.rows()
    # gpt-4o-2024-08-06: input 2.5, output 10, cache read 1.25 per million.
    # 600 * 2.5 + 400 * 1.25 + 100 * 10 = 1500 + 500 + 1000 = 3000
    assert row["cost_status"] == "ok"
    assert row["cost_usd"] == pytest.approx(0.003, abs=1e-12)
    status, body = get(proxy, f"/admin/logs/{row['id']}/cost-audit")
    assert [a["source"] for a in body["audits"]] == ["pricing_unavailable", "pricing"]

    assert pathlib.Path(proxy.settings.pricing_cache_path).exists()
    status, body = get(proxy, "/ready")
    assert status == 200  # overall "warn": this test runs without the background loops
    assert body["checks"]["pricing"]["status"] == "pass"
    assert body["checks"]["pricing"]["source"] == "models.dev"


@pytest.mark.parametrize("headers", [{"X-Forwarded-For": "203.0.113.5"},
                                     {"X-Forwarded-For": "127.0.0.1, 198.51.100.7"},
                                     {"Forwarded": 'for="[2001:db8::1]:4711"'}])
def test_admin_refuses_requests_forwarded_by_a_local_reverse_proxy(
        proxy: RunningProxy, headers: dict[str, str]) -> None:
    status, body = get(proxy, "/admin/pricing", headers)
    assert status == 403
    assert body["error"]["code"] == "LOCAL_ONLY"


def test_admin_accepts_local_callers_even_behind_a_local_proxy(proxy: RunningProxy) -> None:
    status, _ = get(proxy, "/admin/pricing", {"X-Forwarded-For": "127.0.0.1"})
    assert status == 200


def test_cost_audit_of_an_id_beyond_sqlite_integers_is_404(proxy: RunningProxy) -> None:
    status, body = get(proxy, "/admin/logs/99999999999999999999/cost-audit")
    assert (status, body["error"]["code"]) == (404, "not_found")

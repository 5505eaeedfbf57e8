"""Quota probes as data: accounts, requests, and every provider's answer, odd shapes too."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from agent_cli_proxy.providers.quota_answers import iso_time, percent
from agent_cli_proxy.providers.quotas import (
    TOKEN,
    Account,
    VendorUrls,
    account_from_entry,
    account_from_file,
    file_auth_index,
    parse_answer,
    probe_definitions,
    probe_requests,
    token_expired,
    token_of,
    try_next_url,
)
from tests.fake_cliproxy_quota import (
    ANTIGRAVITY_SUMMARY,
    CLAUDE_USAGE,
    CLAUDE_USAGE_LIMITS,
    CODEX_USAGE,
    GEMINI_QUOTA,
    KIMI_USAGES,
)

NOW = 1787220000.0  # 2026-08-20T10:00:00Z


def windows(provider: str, body: Any, status: int = 200) -> list[tuple[Any, ...]]:
    text = body if isinstance(body, str) else json.dumps(body)
    outcome = parse_answer(provider, status, text, NOW)
    return [(w.window, w.used_pct, w.resets_at, w.model) for w in outcome.windows]


# -- parsers ------------------------------------------------------------------------------

def test_codex_windows_from_their_length() -> None:
    outcome = parse_answer("codex", 200, json.dumps(CODEX_USAGE), NOW)
    assert outcome.status == "active"
    assert outcome.plan == "plus"
    assert [(w.window, w.used_pct, w.remaining, w.resets_at) for w in outcome.windows] == [
        ("5h", 37.0, 63.0, "2026-08-20T10:50:00.000Z"),
        ("week", 61.0, 39.0, "2026-08-23T17:20:00.000Z"),
    ]
    assert outcome.windows[0].raw["limit_window_seconds"] == 18000


def test_codex_monthly_code_review_additional_and_missing_lengths() -> None:
    body = {
        "plan_type": "team",
        "rate_limit": {"allowed": False, "limit_reached": True,
                       "primary_window": {"limit_window_seconds": 2592000,
                                          "reset_after_seconds": 60},
                       "secondary_window": None},
        "code_review_rate_limit": {"primary_window": {"used_percent": "12.5"}},
        "additional_rate_limits": [
            {"limit_name": "gpt-5-codex-mini", "rate_limit": {
                "primary_window": {"used_percent": 3, "reset_at": 1787223000000}}},
            {"metered_feature": None}, "junk"],
        "unknown": [1, 2],
    }
    outcome = parse_answer("codex", 200, json.dumps(body), NOW)
    assert outcome.status == "limit_reached"
    assert [(w.window, w.used_pct, w.resets_at, w.model) for w in outcome.windows] == [
        # Blocked without a number: used up. The reset comes from reset_after_seconds.
        ("monthly", 100.0, "2026-08-20T10:01:00.000Z", None),
        ("code_review_5h", 12.5, None, None),
        # reset_at in milliseconds is read as such.
        ("gpt-5-codex-mini_5h", 3.0, "2026-08-20T10:50:00.000Z", "gpt-5-codex-mini"),
    ]


def test_codex_error_body_is_an_exhausted_window() -> None:
    body = {"error": {"type": "usage_limit_reached", "message": "limit reached",
                      "plan_type": "plus", "resets_at": 1787223000}}
    outcome = parse_answer("codex", 429, json.dumps(body), NOW)
    assert (outcome.status, outcome.plan, outcome.error) == (
        "usage_limit_reached", "plus", "limit reached")
    assert windows("codex", body, 429) == [("exhausted", 100.0, "2026-08-20T10:50:00.000Z",
                                            None)]


def test_claude_keys_shape() -> None:
    outcome = parse_answer("claude", 200, json.dumps(CLAUDE_USAGE), NOW)
    assert outcome.status == "active"
    assert windows("claude", CLAUDE_USAGE) == [
        ("5h", 42.0, "2026-08-20T14:00:00.000Z", None),
        ("week", 18.5, "2026-08-25T03:00:00.000Z", None),
    ]  # seven_day_opus is null and extra usage is off: no window for either


def test_claude_limits_array_shape_and_unknown_keys() -> None:
    outcome = parse_answer("claude", 200, json.dumps(CLAUDE_USAGE_LIMITS), NOW)
    assert outcome.status == "limit_reached"  # the opus bucket is at 100 %
    assert windows("claude", CLAUDE_USAGE_LIMITS) == [
        ("5h", 7.0, "2026-08-20T14:00:00.000Z", None),
        ("week", 30.0, None, None),
        ("week_sonnet", 12.5, "2026-08-25T03:00:00.000Z", None),
        ("week_claude-opus-4-5", 100.0, "2026-08-26T00:00:00.000Z", "claude-opus-4-5"),
    ]


def test_claude_per_model_keys_and_extra_usage() -> None:
    body = {"five_hour": {"utilization": 1, "resets_at": None},
            "seven_day_sonnet": {"utilization": 0.0, "resets_at": "2026-08-25T03:00:00Z"},
            "seven_day_opus": {"utilization": None},
            "iguana_necktie": {"utilization": 5},
            "extra_usage": {"is_enabled": True, "monthly_limit": 50, "used_credits": 10,
                            "utilization": None}}
    assert windows("claude", body) == [
        # 1 means 1 %: the scale of each field is known, never guessed from the number.
        ("5h", 1.0, None, None),
        ("week_sonnet", 0.0, "2026-08-25T03:00:00.000Z", None),
        ("iguana_necktie", 5.0, None, None),
        ("extra_monthly", 20.0, None, None),
    ]


def test_gemini_buckets_per_model() -> None:
    body = copy.deepcopy(GEMINI_QUOTA)
    body["buckets"] += [{"modelId": "gemini-2.5-pro", "tokenType": "INPUT_TOKENS",
                         "remainingFraction": 0.123456},
                        {"tokenType": "REQUESTS"}, None,
                        {"modelId": "gemini-x", "remainingFraction": None}]
    assert windows("gemini-cli", body) == [
        ("gemini-2.5-pro", 20.0, "2026-08-21T00:00:00.000Z", "gemini-2.5-pro"),
        ("gemini-2.5-flash", 0.0, "2026-08-21T00:00:00.000Z", "gemini-2.5-flash"),
        ("gemini-2.5-pro:input_tokens", 87.6544, None, "gemini-2.5-pro"),
        ("gemini-x", None, None, "gemini-x"),
    ]


def test_antigravity_groups_and_legacy_models() -> None:
    assert windows("antigravity", ANTIGRAVITY_SUMMARY) == [
        ("claude:5h", 75.0, "2026-08-20T15:00:00.000Z", "Claude"),
        ("gemini-pro", 50.0, "2026-08-20T16:00:00.000Z", "Gemini 3 Pro"),
    ]
    legacy = {"models": {"gemini-3-pro": {"quotaInfo": {"remainingFraction": 0.9,
                                                        "resetTime": "2026-08-20T12:00:00Z"}},
                         "chat_internal": {"displayName": "no quota"}}}
    assert windows("antigravity", legacy) == [
        ("gemini-3-pro", 10.0, "2026-08-20T12:00:00.000Z", "gemini-3-pro")]


def test_kimi_weekly_and_window_limits() -> None:
    outcome = parse_answer("kimi", 200, json.dumps(KIMI_USAGES), NOW)
    assert outcome.plan == "LEVEL_INTERMEDIATE"
    assert windows("kimi", KIMI_USAGES) == [
        ("week", 25.0, "2026-08-25T00:00:00.000Z", None),
        ("5h", 20.0, "2026-08-20T15:00:00.000Z", None),  # used = limit - remaining
    ]
    scoped = {"usages": [{"scope": "OTHER", "detail": {"limit": 1, "used": 1}},
                         {"scope": "FEATURE_CODING", "detail": {"limit": 10, "used": 5},
                          "limits": [{"window": {"duration": 2, "timeUnit": "HOUR"},
                                      "detail": {"limit": 4, "used": 4}}]}]}
    assert windows("kimi", scoped) == [("week", 50.0, None, None), ("2h", 100.0, None, None)]


@pytest.mark.parametrize("provider", ["codex", "claude", "gemini-cli", "antigravity", "kimi"])
@pytest.mark.parametrize("body", ["", "not json", "[]", "null", "42", '"text"', "{}",
                                  '{"rate_limit": "x", "five_hour": 3, "buckets": "x", '
                                  '"groups": [1], "limits": {"a": 1}, "usages": "x"}',
                                  '{"limits": 0.5, "buckets": true, "groups": 7, "usages": 1, '
                                  '"additional_rate_limits": 3}',
                                  '{"groups": [{"buckets": 5}], "usages": [{"scope": '
                                  '"FEATURE_CODING", "limits": 2}]}'])
def test_odd_bodies_never_raise(provider: str, body: str) -> None:
    outcome = parse_answer(provider, 200, body, NOW)
    assert outcome.windows == ()
    assert outcome.status in ("active", "error")


@pytest.mark.parametrize(("status", "body", "kind", "error"), [
    (401, '{"error": {"message": "token expired"}}', "unauthorized", "HTTP 401: token expired"),
    (403, '{"error": "forbidden here"}', "forbidden", "HTTP 403: forbidden here"),
    (429, "", "rate_limited", "HTTP 429: empty answer"),
    (500, "<html>oops</html>", "error", "HTTP 500: <html>oops</html>"),
])
def test_error_answers(status: int, body: str, kind: str, error: str) -> None:
    outcome = parse_answer("claude", status, body, NOW)
    assert (outcome.status, outcome.error, outcome.windows) == (kind, error, ())


def test_unknown_provider_is_unsupported() -> None:
    assert parse_answer("xai", 200, "{}", NOW).status == "unsupported"


def test_percent_and_reset_normalisation() -> None:
    assert percent(0.42, fraction=True) == 42.0
    assert percent(42) == 42.0
    assert percent(150) == 100.0
    assert percent(-3) == 0.0
    assert [percent(v) for v in (None, True, "x", float("nan"), float("inf"), {})] == [None] * 6
    assert iso_time(1787223000) == iso_time(1787223000000) == iso_time("1787223000") \
        == "2026-08-20T10:50:00.000Z"
    assert iso_time("2026-08-20T12:50:00+02:00") == "2026-08-20T10:50:00.000Z"
    assert iso_time("2026-08-20T10:50:00.123456Z") == "2026-08-20T10:50:00.123Z"
    assert iso_time("2026-08-20 10:50:00") == "2026-08-20T10:50:00.000Z"  # naive = UTC
    assert [iso_time(v) for v in (None, 0, -5, "soon", "", 1e300, [1])] == [None] * 7


# -- accounts and requests ----------------------------------------------------------------

def jwt(claims: dict[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{payload}.sig"


def test_account_from_management_entry() -> None:
    entry = {"id": "codex-1-carol@example.com-plus.json", "auth_index": "aa00bb11cc22dd33",
             "name": "codex-1-carol@example.com-plus.json", "type": "codex",
             "provider": "codex", "label": "carol@example.com", "email": "carol@example.com",
             "status": "error", "disabled": False, "unavailable": True,
             "id_token": {"chatgpt_account_id": "acct-7f3e", "plan_type": "plus"}}
    account = account_from_entry(entry)
    assert account == Account(provider="codex", account="carol@example.com",
                              name=entry["name"], auth_index="aa00bb11cc22dd33",
                              unavailable=True, chatgpt_account_id="acct-7f3e", plan="plus")
    gemini = account_from_entry({"name": "g.json", "type": "gemini", "label": "g@x",
                                 "project_id": "p1, p2", "account_type": "oauth"})
    assert gemini is not None
    assert (gemini.provider, gemini.account, gemini.project_id) == ("gemini-cli", "g@x", "p1")
    key = account_from_entry({"name": "k", "provider": "claude", "account_type": "api_key"})
    assert key is not None and key.api_key and probe_requests(key, VendorUrls()) == []
    assert account_from_entry({"provider": "claude"}) is None
    assert account_from_entry({"name": "x.json"}) is None


def test_account_and_token_from_files(tmp_path: Any) -> None:
    codex = {"type": "codex", "email": "carol@example.com", "access_token": "tok-c",
             "id_token": jwt({"https://api.openai.com/auth": {
                 "chatgpt_account_id": "acct-jwt", "chatgpt_plan_type": "pro"}}),
             "expired": "2026-08-21T00:00:00Z"}
    path = str(tmp_path / "codex-carol@example.com-pro.json")
    account = account_from_file(path, codex)
    assert account is not None
    assert (account.provider, account.account, account.chatgpt_account_id, account.plan) == (
        "codex", "carol@example.com", "acct-jwt", "pro")
    assert account.auth_index == file_auth_index("codex", path)
    assert len(account.auth_index) == 16
    assert token_of(codex) == "tok-c"
    assert not token_expired(codex, NOW)
    assert token_expired(codex, NOW + 86_400)
    gemini = {"type": "gemini", "email": "g@x", "project_id": "proj",
              "token": {"access_token": "tok-g", "expiry": "2026-08-20T09:00:00Z"}}
    assert token_of(gemini) == "tok-g"
    assert token_expired(gemini, NOW)
    assert token_of({"type": "kimi", "api_key": " k "}) == "k"
    assert token_of({"type": "claude", "access_token": ""}) is None
    assert account_from_file(path, {"email": "no type"}) is None


def test_probe_requests_carry_the_token_placeholder() -> None:
    urls = VendorUrls()
    codex = Account(provider="codex", account="c@x", name="c", chatgpt_account_id="acct-1")
    (request,) = probe_requests(codex, urls)
    assert (request.method, request.url) == ("GET", "https://chatgpt.com/backend-api/wham/usage")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Chatgpt-Account-Id"] == "acct-1"
    assert request.with_token("abc").headers["Authorization"] == "Bearer abc"
    anti = Account(provider="antigravity", account="a@x", name="a", project_id="proj-9")
    requests = probe_requests(anti, urls)
    assert len(requests) == 3 and all(r.method == "POST" for r in requests)
    assert json.loads(requests[0].body or "") == {"project": "proj-9"}
    claude = probe_requests(Account(provider="claude", account="c", name="c"), urls)[0]
    assert claude.headers["anthropic-beta"] == "oauth-2025-04-20"
    assert probe_requests(Account(provider="xai", account="x", name="x"), urls) == []
    assert try_next_url(404) and try_next_url(503)
    assert not try_next_url(401) and not try_next_url(200)


def test_vendor_urls_at_one_host_and_definitions() -> None:
    urls = VendorUrls.at("http://127.0.0.1:9/")
    assert urls.antigravity == ("http://127.0.0.1:9/v1internal:retrieveUserQuotaSummary",)
    assert urls.kimi == ("http://127.0.0.1:9/coding/v1/usages", "http://127.0.0.1:9/v1/usages")
    assert urls.for_provider("gemini-cli") == (
        "http://127.0.0.1:9/v1internal:retrieveUserQuota",)
    defs = {d["provider"]: d for d in probe_definitions(VendorUrls())}
    assert list(defs) == ["codex", "claude", "gemini-cli", "antigravity", "kimi"]
    assert defs["codex"]["headers"]["Chatgpt-Account-Id"] == "<chatgpt_account_id>"
    assert json.loads(defs["gemini-cli"]["body"]) == {"project": "<project_id>"}
    assert len(defs["antigravity"]["fallback_urls"]) == 2


def test_a_full_side_allowance_does_not_mark_the_account_limit_reached() -> None:
    codex = copy.deepcopy(CODEX_USAGE)
    codex["code_review_rate_limit"] = {
        "allowed": True, "limit_reached": False,
        "primary_window": {"used_percent": 100, "limit_window_seconds": 604800}}
    assert parse_answer("codex", 200, json.dumps(codex), NOW).status == "active"
    codex["rate_limit"]["primary_window"]["used_percent"] = 100
    assert parse_answer("codex", 200, json.dumps(codex), NOW).status == "limit_reached"
    claude = {"five_hour": {"utilization": 5, "resets_at": None},
              "extra_usage": {"is_enabled": True, "utilization": 100}}
    assert parse_answer("claude", 200, json.dumps(claude), NOW).status == "active"
    # Per-model buckets: blocked only when every model's bucket is used up.
    gemini = {"buckets": [{"modelId": "a", "remainingFraction": 0},
                          {"modelId": "b", "remainingFraction": 0.5}]}
    assert parse_answer("gemini-cli", 200, json.dumps(gemini), NOW).status == "active"
    gemini["buckets"][1]["remainingFraction"] = 0
    assert parse_answer("gemini-cli", 200, json.dumps(gemini), NOW).status == "limit_reached"

"""The pure half of the correlator: CPA timestamps and token semantics, details without
client keys, model agreement, and pairs that use each row and detail once."""

from __future__ import annotations

import calendar
from typing import Any

import pytest

from agent_cli_proxy.storage.accounts import Candidate
from agent_cli_proxy.storage.requests import iso_utc
from agent_cli_proxy.usage.model import Usage
from agent_cli_proxy.workers.correlation import (
    UsageDetail,
    details_from_queue,
    details_from_usage,
    match,
    model_key,
    models_agree,
    normalise_tokens,
    parse_timestamp,
)
from tests import wire
from tests.fake_cliproxy import cpa_tokens

T0 = float(calendar.timegm((2026, 4, 20, 1, 12, 3)))


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-04-20T09:12:03.512345678+08:00", T0 + 0.512345678),
    ("2026-04-20T01:12:03Z", T0),
    ("2026-04-20T01:12:03.000Z", T0),
    ("2026-04-19T20:12:03-05:00", T0),
    ("2026-04-20T01:12:03", None),  # no zone: cannot be placed in time
    ("yesterday", None), (None, None), (1713575523, None),
])
def test_timestamps(text: Any, expected: float | None) -> None:
    got = parse_timestamp(text)
    assert got == (None if expected is None else pytest.approx(expected, abs=1e-6))


@pytest.mark.parametrize(("route", "buckets", "provider"), [
    ("/v1/messages", wire.CLAUDE_BUCKETS, "claude"),
    ("/v1/chat/completions", wire.CHAT_BUCKETS, "codex"),
    ("/v1/responses", wire.RESP_BUCKETS, "codex"),
])
def test_cpa_tokens_become_our_buckets(route: str, buckets: Usage, provider: str) -> None:
    tokens, breakdown = cpa_tokens(route, buckets)
    expected = Usage(buckets.prompt_tokens, buckets.cache_read_tokens,
                     buckets.cache_creation_tokens, buckets.completion_tokens,
                     buckets.reasoning_tokens)
    v6 = {k: tokens[k] for k in ("input_tokens", "output_tokens", "reasoning_tokens",
                                 "cached_tokens", "total_tokens")}
    assert normalise_tokens(v6, provider=provider) == expected  # v6: no breakdown
    assert normalise_tokens(v6, model="claude-x" if provider == "claude" else "") == expected
    assert normalise_tokens(tokens, breakdown) == expected  # v7 breakdown, complete


def test_gemini_thoughts_are_output() -> None:
    # promptTokenCount 1000 (600 cached), candidates 50, thoughts 200.
    tokens = {"input_tokens": 1000, "output_tokens": 50, "reasoning_tokens": 200,
              "cached_tokens": 600, "total_tokens": 1250}
    expected = Usage(prompt_tokens=400, cache_read_tokens=600, completion_tokens=250,
                     reasoning_tokens=200)
    assert normalise_tokens(tokens, provider="gemini-cli") == expected
    assert normalise_tokens(tokens) == expected  # told apart by the sums alone


def test_usage_document_details_never_keep_client_keys() -> None:
    detail = {"timestamp": "2026-04-20T09:12:03.5+08:00", "latency_ms": 4210,
              "source": "alice@example.com", "auth_index": "3fa2c91d0be47a15",
              "tokens": {"input_tokens": 1200, "output_tokens": 830, "cached_tokens": 3200,
                         "reasoning_tokens": 0, "total_tokens": 5230}, "failed": False}
    rollup = {**detail, "request_count": 7}  # a fork's 15-minute rollup: no single row
    doc = {"usage": {"apis": {"sk-secret-client-key": {"models": {
        "claude-sonnet-4-5-20250929": {"details": [detail, rollup, "junk"]}}}}}}
    [found] = details_from_usage(doc, lambda index: "claude")
    assert "sk-secret-client-key" not in repr(found)
    assert found.auth_index == "3fa2c91d0be47a15" and found.latency_ms == 4210
    assert found.usage == Usage(prompt_tokens=1200, cache_read_tokens=3200,
                                completion_tokens=830)
    # Stable: the same detail in the next /usage has the same key.
    assert details_from_usage(doc, lambda index: "claude")[0].key == found.key
    assert details_from_usage({"usage": "odd"}, lambda index: None) == []


def test_queue_records_keep_alias_provider_and_request_id() -> None:
    record = {"timestamp": "2026-04-20T01:12:03Z", "source": "a@x", "auth_index": "ab",
              "tokens": {"input_tokens": 5, "output_tokens": 5, "total_tokens": 10},
              "failed": True, "provider": "codex", "model": "gpt-5-codex",
              "alias": "codex-fast", "request_id": "5e0c9a11", "api_key": "sk-secret"}
    [found] = details_from_queue([record, {"model": "x"}], lambda index: None)
    assert (found.alias, found.provider, found.request_id, found.failed) == \
        ("codex-fast", "codex", "5e0c9a11", True)
    assert "sk-secret" not in repr(found)


def candidate(row_id: int, at: float, model: str = wire.CLAUDE_MODEL, *,
              requested: str | None = None, total: int = 100, status: int = 200,
              latency_ms: int | None = 800) -> Candidate:
    return Candidate(id=row_id, started_at=iso_utc(at), finished_at=iso_utc(at + 1),
                     provider="anthropic", model=model, requested_model=requested,
                     status=status, latency_ms=latency_ms,
                     usage=Usage(prompt_tokens=total), cost_usd=0.0, cost_status="ok")


def detail(key: str, at: float, model: str = wire.CLAUDE_MODEL, *, total: int = 100,
           alias: str | None = None, failed: bool = False) -> UsageDetail:
    return UsageDetail(key=key, at=at, timestamp="", model=model, alias=alias,
                       source="a@x", auth_index="ab", usage=Usage(prompt_tokens=total),
                       failed=failed, latency_ms=800, provider="claude", request_id=None)


def test_model_names_agree_up_to_prefix_alias_and_date() -> None:
    assert model_key(" Team/Claude-Sonnet-4-5 ") == "claude-sonnet-4-5"
    row = candidate(1, T0, "team/claude-sonnet-4-5")
    assert models_agree(row, detail("a", T0, "claude-sonnet-4-5-20250929"))
    assert models_agree(row, detail("a", T0, "claude-sonnet-4-5"))
    assert not models_agree(row, detail("a", T0, "claude-sonnet-4-5-thinking"))
    assert models_agree(candidate(1, T0, "sonnet"), detail("a", T0, "x", alias="sonnet"))
    assert models_agree(candidate(1, T0, "x", requested="sonnet"),
                        detail("a", T0, "sonnet"))


def test_each_row_and_each_detail_is_used_once_best_first() -> None:
    rows = [candidate(1, T0), candidate(2, T0 + 4)]
    details = [detail("d1", T0 + 3.5), detail("d2", T0 + 0.2)]
    pairs = {(p.row.id, p.detail.key) for p in match(rows, details)}
    assert pairs == {(1, "d2"), (2, "d1")}
    # Two rows, one detail: the closer row gets it, the other none.
    assert [(p.row.id, p.detail.key) for p in match(rows, details[:1])] == [(2, "d1")]


def test_what_rules_a_pair_out() -> None:
    row = candidate(1, T0, total=1000)
    assert match([row], [detail("far", T0 + 45)]) == []  # beyond 30 s of start and end
    assert match([row], [detail("more", T0, total=2000)]) == []  # other token counts
    assert match([row], [detail("other", T0, "gpt-5", total=999)]) == []  # other model
    # Another name, same non-zero tokens: an alias CPA resolved (v6 has no alias field).
    [alias] = match([row], [detail("alias", T0, "claude-x", total=1000)])
    assert not alias.model_agrees
    # A failed row prefers a failed detail.
    failed = candidate(2, T0, total=0, status=429)
    [pair] = match([failed], [detail("ok", T0, total=0), detail("bad", T0 + 1, failed=True,
                                                                total=0)])
    assert pair.detail.key == "bad"

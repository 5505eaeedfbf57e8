"""Price table parsing and model matching, against the real models.dev snapshot.

Every matching rule of ``usage/pricing.py`` has a row below; so do the names that must NOT
match anything (an unknown model stays unpriced rather than borrowing a neighbour's price).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent_cli_proxy.usage.builtin_prices import BUILTIN_MODELS_DEV
from agent_cli_proxy.usage.pricing import (
    MAX_MODEL_NAME_LENGTH,
    MAX_REWRITES,
    PriceEntry,
    PriceTable,
    Rates,
    Tier,
    name_too_long,
    vendor_providers,
)

SNAPSHOT = Path(__file__).parents[2].parent / "shared/data/models-dev-api.json"


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    if not SNAPSHOT.exists():
        pytest.skip(f"models.dev snapshot not found at {SNAPSHOT} (reference data, not shipped)")
    data: dict[str, Any] = json.loads(SNAPSHOT.read_text())
    return data


@pytest.fixture(scope="module")
def table(snapshot: dict[str, Any]) -> PriceTable:
    return PriceTable.from_models_dev(snapshot, fetched_at=1_780_000_000.0)


# (model, api_provider hint, expected rule, expected price key, expected lookup)
MATCHES = [
    # rule 3: the vendor's own provider, exact id
    ("claude-sonnet-4-5-20250929", "anthropic", "vendor",
     "anthropic/claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"),
    ("  Claude-Opus-4-6 ", "anthropic", "vendor", "anthropic/claude-opus-4-6", "claude-opus-4-6"),
    ("gpt-5-codex", "openai", "vendor", "openai/gpt-5-codex", "gpt-5-codex"),
    ("o3", "openai", "vendor", "openai/o3", "o3"),
    ("gemini-2.5-pro", "gemini", "vendor", "google/gemini-2.5-pro", "gemini-2.5-pro"),
    ("grok-4.3", None, "vendor", "xai/grok-4.3", "grok-4.3"),
    ("qwen3-coder-plus", "openai", "vendor", "alibaba/qwen3-coder-plus", "qwen3-coder-plus"),
    ("kimi-k2-0905-preview", None, "vendor", "moonshotai/kimi-k2-0905-preview",
     "kimi-k2-0905-preview"),
    ("deepseek-chat", "openai", "vendor", "deepseek/deepseek-chat", "deepseek-chat"),
    ("devstral-medium-2507", None, "vendor", "mistral/devstral-medium-2507",
     "devstral-medium-2507"),
    ("MiniMax-M2.5", None, "vendor", "minimax/MiniMax-M2.5", "minimax-m2.5"),
    # GLM: Z.AI first (it lists glm-5v-turbo at 1.2, Zhipu at 5.0), Zhipu AI second
    ("glm-4.6", None, "vendor", "zai/glm-4.6", "glm-4.6"),
    ("glm-5v-turbo", None, "vendor", "zai/glm-5v-turbo", "glm-5v-turbo"),
    # the vendor beats the API-family hint (§12.4: Claude through chat completions)
    ("claude-sonnet-4-5", "openai", "vendor", "anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
    ("gpt-5", "anthropic", "vendor", "openai/gpt-5", "gpt-5"),
    # the hint only when the vendor is unknown
    ("text-embedding-3-small", "openai", "hint", "openai/text-embedding-3-small",
     "text-embedding-3-small"),
    # rule 2: provider-qualified, OpenRouter ids, CLIProxyAPI prefixes
    ("openai/gpt-5", None, "provider-qualified", "openai/gpt-5", "gpt-5"),
    ("zai/glm-4.6", None, "provider-qualified", "zai/glm-4.6", "glm-4.6"),
    ("aihubmix/doubao-seed-2-0-pro", None, "provider-qualified",
     "aihubmix/doubao-seed-2-0-pro", "doubao-seed-2-0-pro"),
    ("anthropic/claude-sonnet-4.5", None, "openrouter",
     "openrouter/anthropic/claude-sonnet-4.5", "anthropic/claude-sonnet-4.5"),
    ("deepseek/deepseek-v3.2", "openai", "openrouter",
     "openrouter/deepseek/deepseek-v3.2", "deepseek/deepseek-v3.2"),
    ("openrouter/anthropic/claude-sonnet-4.5", None, "provider-qualified",
     "openrouter/anthropic/claude-sonnet-4.5", "anthropic/claude-sonnet-4.5"),
    ("team-a/claude-sonnet-4-5-20250929", "anthropic", "strip-prefix+vendor",
     "anthropic/claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"),
    ("openai/gpt-5-20250807-high", None, "strip-prefix+vendor+strip-effort+strip-date",
     "openai/gpt-5", "gpt-5"),
    ("openrouter://gemini-3-pro-preview(high)", None, "strip-prefix+vendor+strip-effort",
     "google/gemini-3-pro-preview", "gemini-3-pro-preview"),
    # rule 4: explicit rewrites, one row (at least) each
    ("gpt-5-2025-08-07", "openai", "vendor+strip-date", "openai/gpt-5", "gpt-5"),
    ("claude-opus-4-6-20260101", None, "vendor+strip-date", "anthropic/claude-opus-4-6",
     "claude-opus-4-6"),
    ("claude-3-7-sonnet", None, "vendor+add-date", "anthropic/claude-3-7-sonnet-20250219",
     "claude-3-7-sonnet-20250219"),
    # two dated snapshots: the newest is what the undated alias points to
    ("claude-3-5-sonnet", None, "vendor+add-date", "anthropic/claude-3-5-sonnet-20241022",
     "claude-3-5-sonnet-20241022"),
    ("claude-3-7-sonnet-latest", None, "vendor+strip-latest+add-date",
     "anthropic/claude-3-7-sonnet-20250219", "claude-3-7-sonnet-20250219"),
    ("claude-sonnet-4-5-latest", None, "vendor+strip-latest", "anthropic/claude-sonnet-4-5",
     "claude-sonnet-4-5"),
    ("claude-sonnet-4.5", "anthropic", "vendor+dots-dashes", "anthropic/claude-sonnet-4-5",
     "claude-sonnet-4-5"),
    ("gpt-5-1-codex", "openai", "vendor+dots-dashes", "openai/gpt-5.1-codex", "gpt-5.1-codex"),
    ("claude-sonnet-4-5-thinking", None, "vendor+strip-thinking", "anthropic/claude-sonnet-4-5",
     "claude-sonnet-4-5"),
    ("claude-sonnet-4.5-thinking-32768", None, "vendor+strip-thinking+dots-dashes",
     "anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
    ("claude-opus-4-6-thinking-1024", None, "vendor+strip-thinking", "anthropic/claude-opus-4-6",
     "claude-opus-4-6"),
    ("gemini-2.5-flash-thinking-8192", None, "vendor+strip-thinking", "google/gemini-2.5-flash",
     "gemini-2.5-flash"),
    # plain `-thinking` is the same model with thinking on, for any vendor
    ("qwen3-235b-a22b-thinking", None, "vendor+strip-thinking", "alibaba/qwen3-235b-a22b",
     "qwen3-235b-a22b"),
    # `-2507` is Qwen's version, not a budget: the thinking model's own OpenRouter entry
    ("qwen/qwen3-235b-a22b-thinking-2507", None, "openrouter",
     "openrouter/qwen/qwen3-235b-a22b-thinking-2507", "qwen/qwen3-235b-a22b-thinking-2507"),
    ("gpt-5-codex(high)", "openai", "vendor+strip-effort", "openai/gpt-5-codex", "gpt-5-codex"),
    ("gemini-2.5-pro(8192)", "gemini", "vendor+strip-effort", "google/gemini-2.5-pro",
     "gemini-2.5-pro"),
    ("gpt-5-codex-high", "openai", "vendor+strip-effort", "openai/gpt-5-codex", "gpt-5-codex"),
    ("o4-mini-high", "openai", "vendor+strip-effort", "openai/o4-mini", "o4-mini"),
    ("gpt-5-minimal", "openai", "vendor+strip-effort", "openai/gpt-5", "gpt-5"),
    # a real id that looks like a rewrite is taken as it is
    ("kimi-k2-thinking", None, "vendor", "moonshotai/kimi-k2-thinking", "kimi-k2-thinking"),
    ("gpt-5.1-codex-max", None, "vendor", "openai/gpt-5.1-codex-max", "gpt-5.1-codex-max"),
    ("codestral-latest", None, "vendor", "mistral/codestral-latest", "codestral-latest"),
]


@pytest.mark.parametrize(("model", "hint", "rule", "key", "lookup"), MATCHES)
def test_match(table: PriceTable, model: str, hint: str | None, rule: str, key: str,
               lookup: str) -> None:
    found = table.match(model, hint)
    assert found is not None, model
    assert (found.rule, found.entry.key, found.lookup) == (rule, key, lookup)


NO_MATCH = [
    ("gpt-5-some-variant-2026", "openai"),  # the original's broad substring test case
    ("claude-sonnet-9", "anthropic"),        # never the nearest Claude
    ("claude-sonnet-4-9", "anthropic"),
    ("gpt-5.2-codex-max", "openai"),        # `-max` is not an effort suffix to strip
    ("claude-opus-4-7-fast", "anthropic"),   # nor is `-fast` (a differently priced mode)
    ("gpt-5-20259999", "openai"),            # not a date
    ("claude-sonnet-99-5", None),
    ("totally-new-model", "openai"),        # hint provider, no such id
    ("totally-new-model", None),            # no vendor, no hint
    ("my-model", "bedrock"),                # unknown hint label
    ("kimi-k2", None),                       # moonshot lists only dated-by-month ids
    ("gpt-image-1", "openai"),               # listed without a cost: unpriced, not free
    ("gemma-4-31b-it", "gemini"),
    ("anthropic/", None),
    ("/", None),
    ("(high)", "openai"),
    ("", "openai"),
    (None, "openai"),
    ("deepseek-v3.2", "openai"),           # vendor known: the hint is not searched
    # a number after `-thinking` is a budget only for Claude/Gemini, and never a YYMM:
    ("qwen3-235b-a22b-thinking-2507", None),  # not alibaba/qwen3-235b-a22b (another model)
    ("qwen3-235b-a22b-thinking-2507", "openai"),
    ("qwen3-235b-a22b-thinking-8192", None),
    ("kimi-k2-thinking-32768", None),
    ("claude-sonnet-4-5-thinking-2507", "anthropic"),
    ("gemini-2.5-flash-thinking-2601", "gemini"),
    # more rewrite steps than MAX_REWRITES: never reaches `gpt-5`
    ("gpt-5" + "-high" * (MAX_REWRITES + 1), "openai"),
    # longer than MAX_MODEL_NAME_LENGTH: nothing, before any rewriting
    ("gpt-5" + "-high" * 25_000, "openai"),
    ("openai/gpt-5" + " " * 10 + "x" * MAX_MODEL_NAME_LENGTH, None),
]


@pytest.mark.parametrize(("model", "hint"), NO_MATCH)
def test_no_match(table: PriceTable, model: str | None, hint: str | None) -> None:
    assert table.match(model, hint) is None


def test_hint_maps_gemini_to_google() -> None:
    data = {"google": {"models": {"palm-x": {"cost": {"input": 1, "output": 2}}}},
            "openai": {"models": {"palm-x": {"cost": {"input": 9, "output": 9}}}}}
    table = PriceTable.from_models_dev(data, fetched_at=None)
    found = table.match("palm-x", "gemini")
    assert found is not None and found.entry.key == "google/palm-x" and found.rule == "hint"
    assert table.match("palm-x", "anthropic") is None


def test_vendor_providers() -> None:
    assert vendor_providers("claude-x") == ("anthropic",)
    assert vendor_providers("openrouter/anthropic/claude-x") == ("anthropic",)
    assert vendor_providers("o1") == ("openai",)
    assert vendor_providers("o1x") == ()
    assert vendor_providers("glm-9") == ("zai", "zhipuai")
    assert vendor_providers("llama-4") == ()


# --- parsing ---------------------------------------------------------------------------


def test_parse_real_snapshot(table: PriceTable, snapshot: dict[str, Any]) -> None:
    priced = sum(
        1 for provider in snapshot.values() for model in provider["models"].values()
        if isinstance(model.get("cost"), dict)
    )
    assert len(table) == priced  # every model with a cost block; the 382 without are skipped
    assert table.fetched_at == 1_780_000_000.0 and table.source == "models.dev"
    sonnet = table.get("anthropic", "claude-sonnet-4-5")
    assert sonnet == PriceEntry("anthropic", "claude-sonnet-4-5",
                                Rates(3.0, 15.0, cache_read=0.3, cache_write=3.75), (),
                                "models.dev")
    gemini = table.get("google", "gemini-2.5-pro")
    assert gemini is not None
    assert gemini.tiers == (Tier(200_000, Rates(2.5, 15.0, cache_read=0.25)),)
    qwen = table.get("alibaba", "qwen3-32b")
    assert qwen is not None and qwen.rates.reasoning == 8.4
    doubao = table.get("aihubmix", "doubao-seed-2-0-pro")
    assert doubao is not None
    assert [tier.min_input_tokens for tier in doubao.tiers] == [32_000, 128_000]
    free = table.get("zai", "glm-4.5-flash")
    assert free is not None and free.rates == Rates(0.0, 0.0, cache_read=0.0, cache_write=0.0)
    assert table.get("openai", "gpt-image-1") is None  # `cost: null`


# Every other spelling of a cache price the snapshot uses (`cached_input`, `cache_input`,
# `cached_write`), one entry each; the standard `cache_read`/`cache_write` keep precedence.
SPELLINGS = [
    ("minimax", "MiniMax-M2.1", Rates(0.3, 1.2, cache_read=0.03, cache_write=0.375)),
    ("minimax-cn", "MiniMax-M2.1", Rates(0.3, 1.2, cache_read=0.03, cache_write=0.375)),
    ("siliconflow", "zai-org/GLM-5.1", Rates(1.4, 4.4, cache_read=0.26, cache_write=0.0)),
    ("siliconflow", "moonshotai/Kimi-K2.5", Rates(0.45, 2.25, cache_read=0.07)),
    ("togetherai", "Qwen/Qwen3.5-397B-A17B", Rates(0.6, 3.6, cache_read=0.35)),
]


@pytest.mark.parametrize(("provider", "model", "rates"), SPELLINGS)
def test_cache_price_spellings(table: PriceTable, snapshot: dict[str, Any], provider: str,
                               model: str, rates: Rates) -> None:
    cost = snapshot[provider]["models"][model]["cost"]
    assert not {"cache_read"} & set(cost)  # still spelled differently in the snapshot
    entry = table.get(provider, model)
    assert entry is not None and entry.rates == rates


def test_cache_price_spellings_everywhere(snapshot: dict[str, Any], table: PriceTable) -> None:
    """No cost block in the snapshot has a cache key this module does not read."""
    known = {"cache_read", "cache_write", "cached_input", "cache_input", "cached_write"}
    for provider, block in snapshot.items():
        for model, body in block["models"].items():
            cost = body.get("cost")
            if not isinstance(cost, dict):
                continue
            blocks = [cost, *(t for t in cost.get("tiers", []) if isinstance(t, dict))]
            for one in blocks:
                assert {k for k in one if "cach" in k} <= known, (provider, model)
            entry = table.get(provider, model)
            if entry is not None and any(k in cost for k in ("cached_input", "cache_input")):
                assert entry.rates.cache_read is not None, (provider, model)


def test_cache_price_spellings_precedence_and_tiers() -> None:
    tier = {"tier": {"type": "context", "size": 1000}, "input": 2, "output": 4,
            "cached_input": 0.2, "cached_write": 2.5}
    data = {"p": {"models": {
        # the standard key wins over another spelling
        "both": {"cost": {"input": 1, "output": 2, "cache_read": 0.1, "cached_input": 0.9,
                          "cache_write": 1.25, "cached_write": 9}},
        # `cached_input` before `cache_input`; a bad standard value falls through
        "two": {"cost": {"input": 1, "output": 2, "cache_read": "x", "cached_input": 0.3,
                         "cache_input": 0.4}},
        "other": {"cost": {"input": 1, "output": 2, "cache_input": 0.4, "cached_write": -1}},
        # inside tiers and the legacy block too, before the base price is inherited
        "tiered": {"cost": {"input": 1, "output": 2, "cached_input": 0.1, "cached_write": 1.25,
                            "tiers": [tier]}},
        "legacy": {"cost": {"input": 1, "output": 2, "cache_read": 0.1,
                            "context_over_200k": {"input": 2, "output": 4,
                                                  "cache_input": 0.2}}},
    }}}
    table = PriceTable.from_models_dev(data, fetched_at=None)
    both, two, other, tiered, legacy = (
        table.get("p", name) for name in ("both", "two", "other", "tiered", "legacy"))
    assert both is not None and both.rates == Rates(1.0, 2.0, cache_read=0.1, cache_write=1.25)
    assert two is not None and two.rates == Rates(1.0, 2.0, cache_read=0.3)
    assert other is not None and other.rates == Rates(1.0, 2.0, cache_read=0.4)
    assert tiered is not None
    assert tiered.rates == Rates(1.0, 2.0, cache_read=0.1, cache_write=1.25)
    assert tiered.tiers == (Tier(1000, Rates(2.0, 4.0, cache_read=0.2, cache_write=2.5)),)
    assert legacy is not None
    assert legacy.tiers == (Tier(200_000, Rates(2.0, 4.0, cache_read=0.2)),)


def test_tier_shapes() -> None:
    base = {"input": 1.0, "output": 2.0, "cache_read": 0.1, "cache_write": 1.25}
    data = {"p": {"models": {
        # legacy block only: a tier at 200k; missing fields fall back to the base price
        "legacy": {"cost": {**base, "context_over_200k": {"input": 2.0, "output": 4.0}}},
        # both: the newer `tiers` describe the same premium, the legacy block is ignored
        "both": {"cost": {**base, "tiers": [{"tier": {"type": "context", "size": 272000},
                                              "input": 3.0, "output": 6.0}],
                          "context_over_200k": {"input": 2.0, "output": 4.0}}},
        # unknown tier types, bad sizes and duplicate sizes are skipped; order is by size
        "odd": {"cost": {**base, "tiers": [
            {"tier": {"type": "batch", "size": 1000}, "input": 9, "output": 9},
            {"tier": {"size": -5}, "input": 9, "output": 9},
            {"tier": {"size": 1.5}, "input": 9, "output": 9},
            {"tier": {"size": True}, "input": 9, "output": 9},
            {"tier": "big", "input": 9, "output": 9},
            "junk",
            {"tier": {"size": 500}, "input": 5},
            {"tier": {"size": 100}, "output": 7},
            {"tier": {"size": 100}, "output": 8},
        ]}},
    }}}
    table = PriceTable.from_models_dev(data, fetched_at=None)
    legacy, both, odd = (table.get("p", name) for name in ("legacy", "both", "odd"))
    assert legacy is not None and legacy.tiers == (
        Tier(200_000, Rates(2.0, 4.0, cache_read=0.1, cache_write=1.25)),)
    assert both is not None and both.tiers == (
        Tier(272_000, Rates(3.0, 6.0, cache_read=0.1, cache_write=1.25)),)
    assert odd is not None and odd.tiers == (
        Tier(100, Rates(1.0, 7.0, cache_read=0.1, cache_write=1.25)),
        Tier(500, Rates(5.0, 2.0, cache_read=0.1, cache_write=1.25)),
    )


JUNK: list[Any] = [
    None, [], "api", 3, {"p": None}, {"p": []}, {"p": {"models": None}},
    {"p": {"models": []}}, {"p": {"models": {"m": None}}}, {"p": {"models": {"m": {}}}},
    {"p": {"models": {"m": {"cost": "cheap"}}}},
    {"p": {"models": {"m": {"cost": {}}}}},
    {"p": {"models": {"m": {"cost": {"input": 1}}}}},                 # output missing
    {"p": {"models": {"m": {"cost": {"output": 1}}}}},                # input missing
    {"p": {"models": {"m": {"cost": {"input": "1", "output": 2}}}}},  # string price
    {"p": {"models": {"m": {"cost": {"input": True, "output": 2}}}}},
    {"p": {"models": {"m": {"cost": {"input": -1, "output": 2}}}}},
    {"p": {"models": {"m": {"cost": {"input": math.nan, "output": 2}}}}},
    {"p": {"models": {"m": {"cost": {"input": math.inf, "output": 2}}}}},
    {"p": {"models": {"m": {"cost": {"input": 10**400, "output": 2}}}}},
    {"p": {"models": {"m": {"cost": {"input": 1, "output": 2, "tiers": "x"}}}}},
    {1: {"models": {"m": {"cost": {"input": 1, "output": 2}}}}},
    {"p": {"models": {2: {"cost": {"input": 1, "output": 2}}}}},
]


@pytest.mark.parametrize("data", JUNK)
def test_junk_never_raises(data: Any) -> None:
    table = PriceTable.from_models_dev(data, fetched_at=None)
    assert len(table) <= 1  # only the entry whose junk is confined to `tiers` survives


def test_bad_optional_price_is_dropped_not_fatal() -> None:
    data = {"p": {"models": {"m": {"cost": {"input": 1, "output": 2, "cache_read": "x",
                                            "cache_write": -1, "reasoning": None}}}}}
    entry = PriceTable.from_models_dev(data, fetched_at=None).get("p", "m")
    assert entry is not None and entry.rates == Rates(1.0, 2.0)


def test_case_clash_first_wins() -> None:
    data = {"p": {"models": {"M": {"cost": {"input": 1, "output": 1}},
                             "m": {"cost": {"input": 2, "output": 2}}}}}
    entry = PriceTable.from_models_dev(data, fetched_at=None).get("p", "m")
    assert entry is not None and entry.model == "M"


# --- overrides and aliases -------------------------------------------------------------


def test_override_wins_over_models_dev(table: PriceTable) -> None:
    local = table.with_local({"GPT-5": {"input": 2.0, "output": 20.0, "cache_read": 0.2}}, {})
    found = local.match("gpt-5", "openai")
    assert found is not None and found.rule == "override"
    assert found.entry == PriceEntry("override", "GPT-5", Rates(2.0, 20.0, cache_read=0.2), (),
                                     "override")
    assert found.entry.key == "override/GPT-5"
    assert len(local) == len(table) + 1
    # the original table is untouched
    plain = table.match("gpt-5", "openai")
    assert plain is not None and plain.rule == "vendor"
    # the override is exact only: rewrites of its name still find models.dev
    dated = local.match("gpt-5-2025-08-07", "openai")
    assert dated is not None and dated.entry.key == "openai/gpt-5"


def test_alias_longest_prefix_and_chain(table: PriceTable) -> None:
    local = table.with_local(
        {"corp-cheap": {"input": 0.5, "output": 1.0}},
        {"corp-": "gpt-5", "corp-sonnet": "Claude-Sonnet-4.5", "corp-c": "corp-cheap",
         "": "gpt-5", "lab/": "anthropic/claude-sonnet-4.5"},
    )
    found = local.match("corp-sonnet-v2", None)
    assert found is not None
    assert (found.rule, found.entry.key) == ("alias:corp-sonnet+vendor+dots-dashes",
                                             "anthropic/claude-sonnet-4-5")
    found = local.match("corp-gpt", None)
    assert found is not None and (found.rule, found.entry.key) == ("alias:corp-+vendor",
                                                                    "openai/gpt-5")
    found = local.match("corp-chat", None)  # alias → override
    assert found is not None and (found.rule, found.entry.key) == ("alias:corp-c+override",
                                                                    "override/corp-cheap")
    found = local.match("lab/private-model", None)  # alias → OpenRouter id
    assert found is not None and (found.rule, found.entry.key) == (
        "alias:lab/+openrouter", "openrouter/anthropic/claude-sonnet-4.5")
    # an empty prefix is ignored (it would alias every model)
    assert local.match("totally-new-model", None) is None
    # after a CLIProxyAPI prefix is stripped, aliases apply to the bare name
    found = local.match("team/corp-gpt", None)
    assert found is not None and found.rule == "strip-prefix+alias:corp-+vendor"


def test_one_alias_per_lookup(table: PriceTable) -> None:
    # the original's own aliases: gpt-5.4-mini* → gpt-5.4-mini, gpt-5.4* → gpt-5.4; the
    # first target must not then be caught by the second prefix (and cycles cannot loop)
    local = table.with_local({}, {"gpt-5.4-mini": "gpt-5.4-mini", "gpt-5.4": "gpt-5.4",
                                  "a": "b", "b": "a", "corp-x": "corp-y", "corp-y": "gpt-5"})
    found = local.match("gpt-5.4-mini-corp", "openai")
    assert found is not None
    assert (found.rule, found.entry.key) == ("alias:gpt-5.4-mini+vendor", "openai/gpt-5.4-mini")
    found = local.match("gpt-5.4-turbo", "openai")
    assert found is not None and found.entry.key == "openai/gpt-5.4"
    assert local.match("a", "openai") is None
    assert local.match("corp-x1", None) is None  # corp-y is a target, not aliased again
    # a dated name models.dev prices through its own rewrites is not aliased at all
    found = local.match("gpt-5.4-mini-2026-03-17", "openai")
    assert found is not None
    assert (found.rule, found.entry.key) == ("vendor+strip-date", "openai/gpt-5.4-mini")


def test_alias_never_reprices_a_listed_model(table: PriceTable) -> None:
    # `kimi-k2` is a prefix of every Kimi K2 id; the alias is for names with no price
    local = table.with_local({"kimi-k2-corp": {"input": 9.0, "output": 9.0}},
                             {"kimi-k2": "kimi-k2-0905-preview",
                              "kimi-for-coding": "kimi-k2-0905-preview"})
    listed = [model for model in ("kimi-k2.6", "kimi-k2.5", "kimi-k2-thinking",
                                  "kimi-k2-thinking-turbo", "kimi-k2-turbo-preview",
                                  "kimi-k2-0711-preview", "kimi-k2.7-code")
              if table.get("moonshotai", model) is not None]
    assert len(listed) == 7
    for model in listed:
        found = local.match(model, None)
        assert found is not None and (found.rule, found.entry.key) == (
            "vendor", f"moonshotai/{model}"), model
    # ... nor one found through a rewrite, a provider prefix or an OpenRouter id
    for model, rule, key in [
        ("kimi-k2-thinking(high)", "vendor+strip-effort", "moonshotai/kimi-k2-thinking"),
        ("moonshotai/kimi-k2.6", "provider-qualified", "moonshotai/kimi-k2.6"),
        ("team/kimi-k2.5", "strip-prefix+vendor", "moonshotai/kimi-k2.5"),
        ("moonshotai/kimi-k2", "openrouter", "openrouter/moonshotai/kimi-k2"),
    ]:
        found = local.match(model, None)
        assert found is not None and (found.rule, found.entry.key) == (rule, key), model
    # an override still wins over everything
    found = local.match("kimi-k2-corp", None)
    assert found is not None and (found.rule, found.entry.key) == ("override",
                                                                    "override/kimi-k2-corp")
    # names with no price of their own are aliased
    for model, rule in [("kimi-k2", "alias:kimi-k2+vendor"),
                        ("kimi-k2-private-2026", "alias:kimi-k2+vendor"),
                        ("kimi-for-coding", "alias:kimi-for-coding+vendor"),
                        ("team/kimi-for-coding", "strip-prefix+alias:kimi-for-coding+vendor")]:
        found = local.match(model, None)
        assert found is not None and (found.rule, found.entry.key) == (
            rule, "moonshotai/kimi-k2-0905-preview"), model


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_alias_prefix_of_listed_id_never_applies(table: PriceTable, snapshot: dict[str, Any],
                                                 data: st.DataObject) -> None:
    """Any prefix of any priced name, aliased: the name keeps its own price."""
    provider = data.draw(st.sampled_from(["anthropic", "openai", "google", "moonshotai",
                                          "zai", "alibaba", "deepseek", "mistral", "openrouter"]))
    model = data.draw(st.sampled_from(sorted(snapshot[provider]["models"])))
    plain = table.match(model, None)
    assume(plain is not None)
    prefix = model[: data.draw(st.integers(min_value=1, max_value=len(model)))]
    local = table.with_local({}, {prefix: "gpt-5"})
    assert local.match(model, None) == plain


def test_with_local_merges_and_skips_invalid(table: PriceTable) -> None:
    first = table.with_local({"x-model": {"input": 1.0, "output": 1.0}}, {"x-": "gpt-5"})
    second = first.with_local({"y-model": {"input": 2.0, "output": 2.0},
                               "bad": {"input": 1.0}}, {})
    assert second.match("x-model", None) is not None
    assert second.match("y-model", None) is not None
    assert second.match("bad", None) is None
    found = second.match("x-other", None)
    assert found is not None and found.rule == "alias:x-+vendor"


# --- the built-in table ----------------------------------------------------------------


def test_builtin_table() -> None:
    table = PriceTable.builtin()
    assert table.source == "builtin" and table.fetched_at is None
    assert 20 <= len(table) <= 35
    found = table.match("claude-sonnet-4-5-20250929", "anthropic")
    assert found is not None and found.rule == "vendor+strip-date"
    assert found.entry.source == "builtin"
    gemini = table.get("google", "gemini-2.5-pro")
    assert gemini is not None and gemini.tiers[0].min_input_tokens == 200_000


def test_builtin_numbers_match_the_snapshot(snapshot: dict[str, Any]) -> None:
    """The hand-copied numbers equal models.dev's at the snapshot date (catches typos)."""
    for provider, block in BUILTIN_MODELS_DEV.items():
        for model, body in block["models"].items():
            real = snapshot[provider]["models"][model]["cost"]
            mine = body["cost"]
            assert {k: mine[k] for k in mine} == {k: real[k] for k in mine}, (provider, model)
            assert set(real) - set(mine) <= {"input_audio", "output_audio"}, (provider, model)


# --- name length and rewrite caps ------------------------------------------------------

REWRITE_STEPS = {"strip-effort", "strip-thinking", "strip-latest", "strip-date",
                 "dots-dashes", "add-date"}


def _rewrites(rule: str) -> int:
    return sum(step in REWRITE_STEPS for step in rule.split("+"))


def test_long_names_match_nothing(table: PriceTable) -> None:
    exact = "x" * MAX_MODEL_NAME_LENGTH
    local = table.with_local({exact: {"input": 1, "output": 1},
                              exact + "y": {"input": 2, "output": 2}}, {"x": "gpt-5"})
    # the cap is on the trimmed name: surrounding blanks do not count
    found = local.match(f"  {exact.upper()}\t", None)
    assert found is not None and found.rule == "override"
    assert not name_too_long(f"  {exact}  ") and name_too_long(exact + "y")
    # one more character: nothing, not even the operator's override or a prefix alias
    assert local.match(exact + "y", None) is None
    assert local.match("gpt-5" + "-high" * 20_000, "openai") is None
    assert local.match("x" * 100_000, None) is None


def test_rewrite_cap(table: PriceTable) -> None:
    found = table.match("gpt-5" + "-high" * MAX_REWRITES, "openai")
    assert found is not None and found.entry.key == "openai/gpt-5"
    assert found.rule == "+".join(["vendor", *["strip-effort"] * MAX_REWRITES])
    assert table.match("gpt-5" + "-high" * (MAX_REWRITES + 1), "openai") is None
    # the cap counts `dots-dashes` and `add-date` too
    found = table.match("claude-sonnet-4.5" + "-low" * (MAX_REWRITES - 1), None)
    assert found is not None and _rewrites(found.rule) == MAX_REWRITES
    assert table.match("claude-sonnet-4.5" + "-low" * MAX_REWRITES, None) is None
    found = table.match("claude-3-7-sonnet" + "-low" * (MAX_REWRITES - 1), None)
    assert found is not None and found.rule.endswith("+add-date")
    assert table.match("claude-3-7-sonnet" + "-low" * MAX_REWRITES, None) is None


SUFFIXES = ["-high", "-low", "-minimal", "(high)", "(8192)", " (low)", "-latest", "-thinking",
            "-thinking-32768", "-20250929", "-2025-08-07"]


@settings(max_examples=300, deadline=None)
@given(base=st.sampled_from(["gpt-5", "claude-sonnet-4-5", "claude-sonnet-4.5", "gemini-2.5-pro",
                             "claude-3-7-sonnet", "glm-4.6", "team/gpt-5"]),
       suffixes=st.lists(st.sampled_from(SUFFIXES), max_size=3 * MAX_REWRITES),
       repeat=st.integers(min_value=1, max_value=8))
def test_rewrite_steps_are_capped(table: PriceTable, base: str, suffixes: list[str],
                                  repeat: int) -> None:
    """Long repeated-suffix names: at most MAX_REWRITES rewrite steps in any rule chain."""
    name = base + "".join(suffixes) * repeat
    found = table.match(name, "openai")
    if len(name) > MAX_MODEL_NAME_LENGTH:
        assert found is None
    if found is not None:
        assert _rewrites(found.rule) <= MAX_REWRITES
    # every suffix is its own strip, except that a Claude/Gemini `-thinking-<digits>`
    # goes in one: more strips than the cap never reach the base. Not with dates in the
    # sequence: base + date can itself be a listed id (claude-sonnet-4-5-20250929), where
    # the lookup rightly stops early.
    sequence = suffixes * repeat
    strips = len(sequence) - sum(
        pair == ("-thinking", "-20250929") for pair in itertools.pairwise(sequence))
    dated = any(s in ("-20250929", "-2025-08-07") for s in sequence)
    if strips > MAX_REWRITES and not dated:
        assert found is None


# --- properties ------------------------------------------------------------------------

REWRITE_WORDS = {"minimal", "low", "medium", "high", "xhigh", "latest", "thinking"}


@settings(max_examples=300, deadline=None)
@given(model=st.one_of(st.none(), st.text(max_size=60),
                       st.from_regex(r"[a-z0-9./:()-]{0,40}", fullmatch=True)),
       hint=st.sampled_from([None, "openai", "anthropic", "gemini", "x"]))
def test_match_never_raises(table: PriceTable, model: str | None, hint: str | None) -> None:
    table.match(model, hint)


@settings(max_examples=300, deadline=None)
@given(base=st.sampled_from(["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro", "glm-4.6"]),
       word=st.from_regex(r"[a-z]{2,9}", fullmatch=True).filter(
           lambda w: w not in REWRITE_WORDS))
def test_no_borrowed_prices(table: PriceTable, base: str, word: str) -> None:
    """`<known>-<word>` is priced only if that exact id exists: never as `<known>`."""
    name = f"{base}-{word}"
    found = table.match(name, "openai")
    assert found is None or found.lookup == name

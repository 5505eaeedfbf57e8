"""Price table parsing and model matching, against the real models.dev snapshot.

Every matching rule of ``usage/pricing.py`` has a row below; so do the names that must NOT
match anything (an unknown model stays unpriced rather than borrowing a neighbour's price).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_cli_proxy.usage.builtin_prices import BUILTIN_MODELS_DEV
from agent_cli_proxy.usage.pricing import (
    PriceEntry,
    PriceTable,
    Rates,
    Tier,
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
                                  "a": "b", "b": "a"})
    found = local.match("gpt-5.4-mini-2026-03-17", "openai")
    assert found is not None
    assert (found.rule, found.entry.key) == ("alias:gpt-5.4-mini+vendor", "openai/gpt-5.4-mini")
    found = local.match("gpt-5.4-turbo", "openai")
    assert found is not None and found.entry.key == "openai/gpt-5.4"
    assert local.match("a", "openai") is None


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

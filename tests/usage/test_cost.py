"""The cost formula, with exact expected USD worked out by hand against the real snapshot.

Prices are USD per 1M tokens; each comment shows tokens * price summed, then / 1e6.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_cli_proxy.usage import cost as cost_module
from agent_cli_proxy.usage.cost import CostResult, compute_cost
from agent_cli_proxy.usage.model import Usage
from agent_cli_proxy.usage.pricing import (
    MAX_MODEL_NAME_LENGTH,
    PriceEntry,
    PriceMatch,
    PriceTable,
    Rates,
)

SNAPSHOT = Path(__file__).parents[2].parent / "shared/data/models-dev-api.json"


@pytest.fixture(scope="module")
def table() -> PriceTable:
    if not SNAPSHOT.exists():
        pytest.skip(f"models.dev snapshot not found at {SNAPSHOT} (reference data, not shipped)")
    data: dict[str, Any] = json.loads(SNAPSHOT.read_text())
    return PriceTable.from_models_dev(data, fetched_at=1_780_000_000.0)


def _usage(prompt: int = 0, read: int = 0, write: int = 0, out: int = 0, reasoning: int = 0,
           write_1h: int = 0) -> Usage:
    return Usage(prompt_tokens=prompt, cache_read_tokens=read, cache_creation_tokens=write,
                 completion_tokens=out, reasoning_tokens=reasoning,
                 cache_creation_1h_tokens=write_1h)


# (model, api_provider, usage, expected USD, expected price key)
CASES = [
    # Sonnet 4.5 {3, 15, read 0.3, write 3.75}; 1h writes at 2 * 3 = 6:
    # 1000*3 + 20000*0.3 + (5000-2000)*3.75 + 2000*6 + (800-300)*15 + 300*15
    # = 3000 + 6000 + 11250 + 12000 + 7500 + 4500 = 44250
    pytest.param("claude-sonnet-4-5-20250929", "anthropic",
                 _usage(1000, 20000, 5000, 800, 300, 2000), 0.04425,
                 "anthropic/claude-sonnet-4-5-20250929", id="sonnet-4.5-cache-5m-1h"),
    # Opus 4.6 {5, 25, read 0.5, write 6.25}; every write 1h at 2 * 5 = 10:
    # 10*5 + 100000*0.5 + 0*6.25 + 10000*10 + 2000*25 = 50 + 50000 + 100000 + 50000 = 200050
    pytest.param("claude-opus-4-6", "anthropic", _usage(10, 100000, 10000, 2000, 0, 10000),
                 0.20005, "anthropic/claude-opus-4-6", id="opus-4.6-1h"),
    # Haiku 4.5 {1, 5, read 0.1, write 1.25}: 2000*1 + 3000*0.1 + 4000*1.25 + 100*5
    # = 2000 + 300 + 5000 + 500 = 7800
    pytest.param("claude-haiku-4-5", "anthropic", _usage(2000, 3000, 4000, 100), 0.0078,
                 "anthropic/claude-haiku-4-5", id="haiku-4.5-5m"),
    # GPT-5 {1.25, 10, read 0.125}, reasoning at output price, counted once:
    # 8000*1.25 + 2000*0.125 + 500*10 + 1000*10 = 10000 + 250 + 5000 + 10000 = 25250
    pytest.param("gpt-5", "openai", _usage(8000, 2000, 0, 1500, 1000), 0.02525,
                 "openai/gpt-5", id="gpt-5-cached-reasoning"),
    # gpt-5-codex {1.25, 10, read 0.125}: 1000*1.25 + 50000*0.125 + 500*10 + 2500*10
    # = 1250 + 6250 + 5000 + 25000 = 37500
    pytest.param("gpt-5-codex", "openai", _usage(1000, 50000, 0, 3000, 2500), 0.0375,
                 "openai/gpt-5-codex", id="gpt-5-codex"),
    # Gemini 2.5 Pro {1.25, 10, read 0.125}, input 150000 ≤ 200000 (base):
    # 100000*1.25 + 50000*0.125 + 6000*10 + 4000*10 = 125000 + 6250 + 60000 + 40000 = 231250
    pytest.param("gemini-2.5-pro", "gemini", _usage(100000, 50000, 0, 10000, 4000), 0.23125,
                 "google/gemini-2.5-pro", id="gemini-2.5-pro-below-200k"),
    # input 210000 > 200000: tier {2.5, 15, read 0.25}:
    # 150000*2.5 + 60000*0.25 + 6000*15 + 4000*15 = 375000 + 15000 + 90000 + 60000 = 540000
    pytest.param("gemini-2.5-pro", "gemini", _usage(150000, 60000, 0, 10000, 4000), 0.54,
                 "google/gemini-2.5-pro", id="gemini-2.5-pro-above-200k"),
    # exactly 200000 does not EXCEED the threshold: 200000*1.25 = 250000
    pytest.param("gemini-2.5-pro", "gemini", _usage(200000), 0.25,
                 "google/gemini-2.5-pro", id="gemini-2.5-pro-at-200k"),
    # 200001 does: 200001*2.5 = 500002.5
    pytest.param("gemini-2.5-pro", "gemini", _usage(200001), 0.5000025,
                 "google/gemini-2.5-pro", id="gemini-2.5-pro-just-over"),
    # OpenRouter's Sonnet 4.5 {3, 15, read 0.3, write 3.75}: 1000*3 + 100*15 = 4500
    pytest.param("anthropic/claude-sonnet-4.5", None, _usage(1000, 0, 0, 100), 0.0045,
                 "openrouter/anthropic/claude-sonnet-4.5", id="openrouter-sonnet"),
    # ... and its 200k tier {6, 22.5, read 0.6, write 7.5}, input 211000, Claude ⇒ 1h at 2*6:
    # 150000*6 + 60000*0.6 + 1000*12 + 1000*22.5 = 900000 + 36000 + 12000 + 22500 = 970500
    pytest.param("anthropic/claude-sonnet-4.5", "openai",
                 _usage(150000, 60000, 1000, 1000, 0, 1000), 0.9705,
                 "openrouter/anthropic/claude-sonnet-4.5", id="openrouter-sonnet-tier"),
    # Claude through /v1/chat/completions is still Anthropic's Claude, cache writes charged:
    # 100*3 + 1000*3.75 + 10*15 = 300 + 3750 + 150 = 4200
    pytest.param("claude-sonnet-4-5", "openai", _usage(100, 0, 1000, 10), 0.0042,
                 "anthropic/claude-sonnet-4-5", id="claude-via-openai-route"),
    # the same usage through rewrites prices identically
    pytest.param("claude-sonnet-4.5-thinking", "openai", _usage(100, 0, 1000, 10), 0.0042,
                 "anthropic/claude-sonnet-4-5", id="claude-thinking-dots"),
    pytest.param("team/claude-sonnet-4-5-20250929(high)", "anthropic", _usage(100, 0, 1000, 10),
                 0.0042, "anthropic/claude-sonnet-4-5-20250929", id="cpa-prefix-effort"),
    # qwen3-32b {0.7, 2.8, reasoning 8.4}: reasoning has its own price, not output + reasoning:
    # 1000*0.7 + 400*2.8 + 600*8.4 = 700 + 1120 + 5040 = 6860
    pytest.param("qwen3-32b", "openai", _usage(1000, 0, 0, 1000, 600), 0.00686,
                 "alibaba/qwen3-32b", id="reasoning-price"),
    # non-Anthropic 1h write: cache_write absent ⇒ input: 1000*1.25 = 1250
    pytest.param("gpt-5", "openai", _usage(0, 0, 1000, 0, 0, 1000), 0.00125,
                 "openai/gpt-5", id="gpt-5-1h-write-at-input"),
    # Z.AI lists cache writes as explicitly 0 (5m and 1h both use it): 1000*0.6 = 600
    pytest.param("glm-4.6", None, _usage(1000, 0, 2000, 0, 0, 1000), 0.0006,
                 "zai/glm-4.6", id="glm-free-cache-write"),
    # explicit free model: {0, 0} ⇒ 0, still ok
    pytest.param("glm-4.5-flash", None, _usage(10**6, 10**6, 10**6, 10**6, 10), 0.0,
                 "zai/glm-4.5-flash", id="free-model"),
    # three price levels: base {0.48, 2.41}, >32k {0.72, 3.62}, >128k {1.45, 7.23}
    # 100000*0.72 + 1000*3.62 = 72000 + 3620 = 75620
    pytest.param("aihubmix/doubao-seed-2-0-pro", None, _usage(100000, 0, 0, 1000), 0.07562,
                 "aihubmix/doubao-seed-2-0-pro", id="multi-tier-middle"),
    # 200000*1.45 + 1000*7.23 = 290000 + 7230 = 297230
    pytest.param("aihubmix/doubao-seed-2-0-pro", None, _usage(200000, 0, 0, 1000), 0.29723,
                 "aihubmix/doubao-seed-2-0-pro", id="multi-tier-top"),
    # spec §6.4 vector (anthropic): Sonnet {3, 15, 0.3, 3.75}, prompt 10, completion 5,
    # read 4, write 3: 30 + 75 + 1.2 + 11.25 = 117.45
    pytest.param("claude-sonnet-4-5", "anthropic", _usage(10, 4, 3, 5), 0.00011745,
                 "anthropic/claude-sonnet-4-5", id="spec-6.4-anthropic"),
    # spec §4.8 worked example, in disjoint buckets: upstream prompt 10 incl. 2 cached,
    # completion 5 incl. 1 reasoning; gpt-4o {2.5, 10, read 1.25}:
    # 8*2.5 + 2*1.25 + 4*10 + 1*10 = 20 + 2.5 + 40 + 10 = 72.5
    pytest.param("gpt-4o", "openai", _usage(8, 2, 0, 5, 1), 7.25e-05,
                 "openai/gpt-4o", id="spec-4.8-gpt-4o"),
    # MiniMax-M2.1 spells its cache prices `cached_input` / `cached_write`:
    # {0.3, 1.2, cached_input 0.03, cached_write 0.375}, not cache reads at full input:
    # 1000*0.3 + 100000*0.03 + 10000*0.375 + 2000*1.2 = 300 + 3000 + 3750 + 2400 = 9450
    # (read at input it would be 1000*0.3 + 100000*0.3 + 10000*0.3 + 2000*1.2 = 35700)
    pytest.param("MiniMax-M2.1", None, _usage(1000, 100000, 10000, 2000), 0.00945,
                 "minimax/MiniMax-M2.1", id="minimax-cached-input"),
    # non-Anthropic 1h writes at `cached_write` too: 4000*0.375 = 1500
    pytest.param("minimax/MiniMax-M2.1", "openai", _usage(0, 0, 4000, 0, 0, 4000), 0.0015,
                 "minimax/MiniMax-M2.1", id="minimax-cached-write-1h"),
    # SiliconFlow's `cache_input` {1.4, 4.4, cache_input 0.26, cache_write 0}:
    # 1000*1.4 + 10000*0.26 + 500*0 + 100*4.4 = 1400 + 2600 + 0 + 440 = 4440
    pytest.param("siliconflow/zai-org/GLM-5.1", None, _usage(1000, 10000, 500, 100), 0.00444,
                 "siliconflow/zai-org/GLM-5.1", id="siliconflow-cache-input"),
    # all-zero usage: a priced call that cost nothing
    pytest.param("gpt-5", "openai", _usage(), 0.0, "openai/gpt-5", id="zero-usage"),
]


@pytest.mark.parametrize(("model", "hint", "usage", "usd", "key"), CASES)
def test_cost(table: PriceTable, model: str, hint: str | None, usage: Usage, usd: float,
              key: str) -> None:
    result = compute_cost(table, model, hint, usage)
    assert (result.cost_usd, result.status, result.price_key) == (usd, "ok", key)
    _assert_reproducible(result)


def _assert_reproducible(result: CostResult) -> None:
    """The detail alone is enough to recompute the number."""
    detail = result.detail
    assert json.loads(json.dumps(detail)) == detail
    # The text the audit stores is the compact encoding of the same detail.
    assert result.detail_json == json.dumps(detail, separators=(",", ":"))
    buckets = detail["buckets"]
    assert isinstance(buckets, dict)
    total = sum(b["tokens"] * b["rate"] for b in buckets.values()) / 1e6
    assert math.isclose(total, result.cost_usd, rel_tol=1e-9, abs_tol=1e-12)
    for field in ("lookup", "rule", "price_key", "rates", "tier", "table_source", "fetched_at",
                  "input_tokens_total"):
        assert field in detail


def test_spec_override_vector(table: PriceTable) -> None:
    # spec §6.4 (openai): gpt-5.4-mini priced {1, 2, 0.5, 3, 4}, prompt 1e6, completion 5e5:
    # 1e6*1 + 5e5*2 = 2e6 ⇒ 2.0
    local = table.with_local({"gpt-5.4-mini": {"input": 1, "output": 2, "cache_read": 0.5,
                                               "cache_write": 3, "reasoning": 4}}, {})
    result = compute_cost(local, "gpt-5.4-mini", "openai", _usage(1_000_000, 0, 0, 500_000))
    assert (result.cost_usd, result.status, result.rule) == (2.0, "ok", "override")
    assert result.price_key == "override/gpt-5.4-mini"
    # and with reasoning: 1e6*1 + 1e5*2 + 4e5*4 = 1e6 + 2e5 + 1.6e6 = 2.8e6 ⇒ 2.8
    result = compute_cost(local, "gpt-5.4-mini", "openai",
                          _usage(1_000_000, 0, 0, 500_000, 400_000))
    assert result.cost_usd == 2.8


def test_override_1h_price_and_alias(table: PriceTable) -> None:
    local = table.with_local(
        {"my-claude": {"input": 3, "output": 15, "cache_write": 3.75, "cache_write_1h": 6.5}},
        {"corp-opus": "claude-opus-4-6"})
    # 1000*3.75 + 1000*6.5 = 3750 + 6500 = 10250 (the explicit 1h price, not 2 * input)
    result = compute_cost(local, "my-claude", "anthropic", _usage(0, 0, 2000, 0, 0, 1000))
    assert result.cost_usd == 0.01025
    # alias to Opus 4.6 {5, 25}: 1000*5 + 100*25 = 7500
    result = compute_cost(local, "corp-opus-private", None, _usage(1000, 0, 0, 100))
    assert (result.cost_usd, result.rule) == (0.0075, "alias:corp-opus+vendor")


def test_decimal_exact(table: PriceTable) -> None:
    local = table.with_local({"tenth": {"input": 0.1, "output": 0.2},
                              "odd": {"input": 0.1234567, "output": 0}}, {})
    # floats would give (0.1 + 0.2) / 1e6 = 3.0000000000000004e-07
    assert compute_cost(local, "tenth", None, _usage(1, 0, 0, 1)).cost_usd == 3e-07
    # 1 * 0.1234567 / 1e6 = 0.0000001234567, rounded to 12 places
    assert compute_cost(local, "odd", None, _usage(1)).cost_usd == 1.23457e-07


@pytest.mark.parametrize("model", [None, "", "   ", "unknown", "UNDEFINED", " Unknown "])
def test_unsupported(table: PriceTable, model: str | None) -> None:
    result = compute_cost(table, model, "openai", _usage(100, 0, 0, 10))
    assert (result.cost_usd, result.status, result.rule, result.price_key) == (
        0.0, "unsupported", None, None)


@pytest.mark.parametrize("model", ["gpt-5-some-variant-2026", "claude-sonnet-9",
                                   "totally-new-model", "gpt-image-1"])
def test_unknown_is_pending_never_another_price(table: PriceTable, model: str) -> None:
    result = compute_cost(table, model, "openai", _usage(100, 0, 0, 10))
    assert (result.cost_usd, result.status, result.rule, result.price_key) == (
        0.0, "pending", None, None)
    assert result.detail["table_source"] == "models.dev"
    assert result.detail["fetched_at"] == 1_780_000_000.0


def test_qwen_thinking_version_is_not_a_budget(table: PriceTable) -> None:
    # `-2507` is Qwen3's version: Alibaba does not list the thinking-2507 model, so the bare
    # name is unpriced, never qwen3-235b-a22b's {0.7, 2.8, reasoning 8.4}
    result = compute_cost(table, "qwen3-235b-a22b-thinking-2507", "openai",
                          _usage(1000, 0, 0, 1000))
    assert (result.cost_usd, result.status, result.price_key) == (0.0, "pending", None)
    # with the vendor prefix: OpenRouter's entry for that model {0.1495, 1.495}:
    # 1000*0.1495 + 1000*1.495 = 149.5 + 1495 = 1644.5
    result = compute_cost(table, "qwen/qwen3-235b-a22b-thinking-2507", None,
                          _usage(1000, 0, 0, 1000))
    assert (result.cost_usd, result.status, result.rule, result.price_key) == (
        0.0016445, "ok", "openrouter", "openrouter/qwen/qwen3-235b-a22b-thinking-2507")
    # ... and the bare name when the vendor lists it exactly
    data = {"alibaba": {"models": {
        "qwen3-235b-a22b": {"cost": {"input": 0.7, "output": 2.8}},
        "qwen3-235b-a22b-thinking-2507": {"cost": {"input": 0.2, "output": 2.0}}}}}
    listed = PriceTable.from_models_dev(data, fetched_at=None)
    # 1000*0.2 + 1000*2 = 2200
    result = compute_cost(listed, "qwen3-235b-a22b-thinking-2507", None,
                          _usage(1000, 0, 0, 1000))
    assert (result.cost_usd, result.rule, result.price_key) == (
        0.0022, "vendor", "alibaba/qwen3-235b-a22b-thinking-2507")


def test_alias_only_for_unpriced_names(table: PriceTable) -> None:
    local = table.with_local({}, {"kimi-k2": "kimi-k2-0905-preview"})
    # kimi-k2.6 keeps its own price {0.95, 4}: 1000*0.95 + 1000*4 = 950 + 4000 = 4950
    own = table.get("moonshotai", "kimi-k2.6")
    assert own is not None and (own.rates.input, own.rates.output) == (0.95, 4.0)
    result = compute_cost(local, "kimi-k2.6", None, _usage(1000, 0, 0, 1000))
    assert (result.cost_usd, result.rule, result.price_key) == (
        0.00495, "vendor", "moonshotai/kimi-k2.6")
    # an unlisted name is aliased to kimi-k2-0905-preview {0.6, 2.5}: 600 + 2500 = 3100
    result = compute_cost(local, "kimi-k2-corp", None, _usage(1000, 0, 0, 1000))
    assert (result.cost_usd, result.rule, result.price_key) == (
        0.0031, "alias:kimi-k2+vendor", "moonshotai/kimi-k2-0905-preview")


@pytest.mark.parametrize("padding", ["", "  \t"])
def test_long_name_is_unsupported_at_once(table: PriceTable, padding: str) -> None:
    # 100,000 characters of `-high` effort suffixes: rejected before any rewriting
    model = padding + "gpt-5" + "-high" * 20_000 + "-x" * 2 + padding
    result = compute_cost(table, model, "openai", _usage(100, 0, 0, 10))
    assert len(model.strip()) == 100_009
    assert (result.cost_usd, result.status, result.rule, result.price_key) == (
        0.0, "unsupported", None, None)
    assert result.detail["rule"] == "name-too-long"
    assert result.detail["reason"] == f"model name longer than {MAX_MODEL_NAME_LENGTH} characters"
    assert result.detail["model_length"] == 100_009
    assert result.detail["model_truncated"] is True
    assert result.detail["model"] == model.strip()[:MAX_MODEL_NAME_LENGTH]
    # a name exactly at the cap is looked up as usual (and has no price: pending)
    short = "gpt-5-" + "y" * (MAX_MODEL_NAME_LENGTH - 6)
    assert compute_cost(table, short, "openai", _usage(1)).status == "pending"
    assert compute_cost(table, short + "y", "openai", _usage(1)).status == "unsupported"


def test_inconsistent_usage_is_clamped(table: PriceTable) -> None:
    # reasoning > completion counts as all-reasoning; 1h > creation as all-1h; negatives 0.
    # Sonnet: 10*15 (reasoning at output) + 100*6 (1h) = 150 + 600 = 750
    result = compute_cost(table, "claude-sonnet-4-5", "anthropic",
                          _usage(-5, -1, 100, 10, 50, 400))
    assert (result.cost_usd, result.status) == (0.00075, "ok")


def test_builtin_table_prices_without_network() -> None:
    # Sonnet 4.5 from the built-in table: 1000*3 + 100*15 = 4500
    result = compute_cost(PriceTable.builtin(), "claude-sonnet-4-5", "anthropic",
                          _usage(1000, 0, 0, 100))
    assert (result.cost_usd, result.status) == (0.0045, "ok")
    assert result.detail["table_source"] == "builtin" and result.detail["fetched_at"] is None


class _FixedTable(PriceTable):
    """A table whose every lookup returns one hand-made entry (for the guard)."""

    def __init__(self, rates: Rates) -> None:
        super().__init__({}, fetched_at=None, source="test")
        self._entry = PriceEntry("test", "m", rates, (), "test")

    def match(self, model: str | None, api_provider: str | None) -> PriceMatch | None:
        return PriceMatch(self._entry, "test", "m")


@pytest.mark.parametrize("rates", [Rates(math.nan, 1.0), Rates(1.0, -1.0),
                                   Rates(1.0, 1.0, cache_read=math.inf)])
def test_guard_bad_rates(rates: Rates) -> None:
    result = compute_cost(_FixedTable(rates), "m", None, _usage(1, 1, 1, 1))
    assert (result.cost_usd, result.status) == (0.0, "pending")
    assert "guard" in result.detail


# --- properties ------------------------------------------------------------------------

MODELS = ["claude-sonnet-4-5", "anthropic/claude-sonnet-4.5", "claude-opus-4-6",
          "gemini-2.5-pro", "gpt-5.4", "gpt-5", "qwen3-32b", "glm-4.5-flash", "glm-4.6",
          "aihubmix/doubao-seed-2-0-pro", "nope"]
counts = st.integers(min_value=0, max_value=10**9)


@st.composite
def usages(draw: st.DrawFn, low: int = 0) -> Usage:
    values = st.integers(min_value=low, max_value=10**12)
    return Usage(*(draw(values) for _ in range(6)))


@settings(max_examples=300, deadline=None)
@given(model=st.one_of(st.sampled_from(MODELS), st.text(max_size=40), st.none()),
       hint=st.sampled_from([None, "openai", "anthropic", "gemini", "x"]),
       usage=usages(low=-10**6))
def test_never_raises_never_negative(table: PriceTable, model: str | None, hint: str | None,
                                     usage: Usage) -> None:
    result = compute_cost(table, model, hint, usage)
    assert math.isfinite(result.cost_usd) and result.cost_usd >= 0
    assert result.status in ("ok", "pending", "unsupported")
    assert json.loads(result.detail_json) == result.detail
    assert result.detail_json == json.dumps(result.detail, separators=(",", ":"))


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(MODELS), usage=usages(),
       bucket=st.sampled_from(["prompt_tokens", "cache_read_tokens", "cache_creation_tokens",
                               "completion_tokens"]),
       extra=counts)
def test_monotonic_in_each_bucket(table: PriceTable, model: str, usage: Usage, bucket: str,
                                  extra: int) -> None:
    fields = {name: getattr(usage, name) for name in Usage.__dataclass_fields__}
    more = Usage(**{**fields, bucket: fields[bucket] + extra})
    before = compute_cost(table, model, "openai", usage).cost_usd
    after = compute_cost(table, model, "openai", more).cost_usd
    assert after >= before


def test_a_new_price_table_is_used_at_once() -> None:
    # Lookups are remembered per table: the refreshed table must answer, not the old one.
    usage = _usage(prompt=1_000_000)
    old = PriceTable.builtin()
    before = compute_cost(old, "claude-sonnet-4-5", "anthropic", usage)
    assert compute_cost(old, "claude-sonnet-4-5", "anthropic", usage) == before
    cheaper = old.with_local({"claude-sonnet-4-5": {"input": 0.5, "output": 1.0}}, {})
    after = compute_cost(cheaper, "claude-sonnet-4-5", "anthropic", usage)
    assert before.cost_usd == 3.0 and after.cost_usd == 0.5 and after.rule == "override"
    assert compute_cost(old, "claude-sonnet-4-5", "anthropic", usage) == before


def test_the_detail_is_each_call_s_own(table: PriceTable) -> None:
    first = compute_cost(table, "claude-sonnet-4-5-20250929", "anthropic", _usage(prompt=10))
    first.detail["rates"]["input"] = -1  # type: ignore[index]
    second = compute_cost(table, "claude-sonnet-4-5-20250929", "anthropic", _usage(prompt=10))
    assert second.detail["rates"]["input"] == 3.0  # type: ignore[index]


@settings(max_examples=500, deadline=None)
@given(rates=st.tuples(*[st.one_of(st.none(), st.floats(min_value=0, max_value=1e6))
                         for _ in range(4)]),
       base=st.floats(min_value=0, max_value=1e6),
       tokens=st.tuples(*[st.one_of(st.integers(min_value=0, max_value=10**18 - 1),
                                    st.sampled_from([0, 5, 15, 25, 125, 999_995]))
                          for _ in range(6)]),
       anthropic=st.booleans())
def test_integer_arithmetic_is_the_decimal_one(rates: tuple[float | None, ...], base: float,
                                               tokens: tuple[int, ...], anthropic: bool) -> None:
    # Below 10**18 tokens a bucket, USD is computed in integers: the same numbers, and
    # the same rounding (half-even at 12 places: counts ending in 5 meet the ties).
    entry = PriceEntry("anthropic" if anthropic else "openai", "m",
                       Rates(base, rates[0] or base / 3, cache_read=rates[1],
                             cache_write=rates[2], cache_write_1h=rates[3]), (), "test")
    rated = cost_module._rated(entry, None, anthropic)
    in_integers: list[str] = []
    in_decimals: list[str] = []
    assert cost_module._in_integers(tokens, rated, in_integers) == \
        cost_module._in_decimals(tokens, rated, in_decimals)
    assert "".join(in_integers) == "".join(in_decimals)

"""The cost formula: one call's :class:`Usage` buckets times the matched price, in USD.

Owns the cost status (``ok`` / ``pending`` / ``unsupported``), the long-context tier choice,
the fallbacks for prices models.dev does not list, and an audit ``detail`` that lists every
number used, so a stored cost can be recomputed by hand. Which price applies is
``pricing.py``'s job; this module only does arithmetic.

Per bucket (prices per 1M tokens; ``a ?? b`` = ``a`` when listed, else ``b``)::

    prompt                 * input
    cache_read             * (cache_read ?? input)
    cache_creation - 1h    * (cache_write ?? input)            five-minute writes
    cache_creation_1h      * (cache_write_1h ?? 2 * input)     Anthropic's models
                           * (cache_write_1h ?? cache_write ?? input)    other models
    completion - reasoning * output
    reasoning              * (reasoning ?? output)            never charged twice

Arithmetic is in :class:`decimal.Decimal` built from each float's ``repr`` (3.75 stays
exactly 3.75), and the result is rounded to 12 decimal places.

An unpriced call costs 0: ``unsupported`` when the name can never be priced (none, a
placeholder such as ``unknown``, or longer than ``pricing.MAX_MODEL_NAME_LENGTH``, detail
``rule: name-too-long`` with the name cut to that length), ``pending`` when the current
table has no price for it (the backfill retries those).
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from agent_cli_proxy.usage.model import Usage
from agent_cli_proxy.usage.pricing import (
    MAX_MODEL_NAME_LENGTH,
    PriceMatch,
    PriceTable,
    Rates,
    Tier,
    name_too_long,
    normalise,
    vendor_providers,
)

CostStatus = Literal["ok", "pending", "unsupported"]

# Placeholders clients and the pre-log write when no model is known: never priceable.
UNSUPPORTED_MODELS = frozenset({"", "unknown", "undefined"})

_PER_TOKEN = Decimal(1_000_000)
_PLACES = Decimal("1e-12")
# Anthropic bills one-hour cache writes at 2x base input (five-minute writes: 1.25x, which
# is models.dev's `cache_write`); models.dev has no field for the one-hour price.
_ANTHROPIC_1H_WRITE = Decimal(2)


@dataclass(frozen=True, slots=True)
class CostResult:
    cost_usd: float
    status: CostStatus
    rule: str | None
    price_key: str | None
    detail: dict[str, object]
    """JSON-able: lookup, rates, tier, per-bucket tokens/rate/USD, table source + date."""


class _BadPrice(ValueError):
    """A rate that is negative or not finite (possible only for hand-built tables)."""


def _dec(rate: float) -> Decimal:
    if not math.isfinite(rate) or rate < 0:
        raise _BadPrice(repr(rate))
    return Decimal(repr(float(rate)))


def _usd(value: Decimal) -> float:
    return float(value.quantize(_PLACES))


def _rates_json(rates: Rates) -> dict[str, object]:
    return dict(_rates_items(rates))  # a fresh dict: the detail is the caller's


# Rates are frozen values and a price table has a few thousand of them at most: what is
# derived from one is computed once, not on every priced call.
@functools.lru_cache(maxsize=1024)
def _rates_items(rates: Rates) -> tuple[tuple[str, object], ...]:
    return tuple((field.name, getattr(rates, field.name)) for field in dataclasses.fields(rates))


def _tier_for(tiers: tuple[Tier, ...], input_tokens: int) -> Tier | None:
    """The highest tier whose threshold the request's total input exceeds."""
    chosen = None
    for tier in sorted(tiers, key=lambda t: t.min_input_tokens):
        if input_tokens > tier.min_input_tokens:
            chosen = tier
    return chosen


def _effective(base: Rates, tier: Tier | None) -> Rates:
    """Tier rates replace the base field by field; fields a tier lacks keep the base value."""
    if tier is None:
        return base
    t = tier.rates
    return Rates(
        input=t.input, output=t.output,
        cache_read=base.cache_read if t.cache_read is None else t.cache_read,
        cache_write=base.cache_write if t.cache_write is None else t.cache_write,
        cache_write_1h=base.cache_write_1h if t.cache_write_1h is None else t.cache_write_1h,
        reasoning=base.reasoning if t.reasoning is None else t.reasoning,
    )


@functools.lru_cache(maxsize=1024)
def _bucket_rates(rates: Rates, anthropic: bool) -> dict[str, tuple[Decimal, str]]:
    """Per bucket: (USD per 1M tokens, which price it came from). Cached: never change
    the dict returned."""
    input_ = _dec(rates.input)

    def listed(value: float | None, name: str, fallback: tuple[Decimal, str]
               ) -> tuple[Decimal, str]:
        return fallback if value is None else (_dec(value), name)

    write_5m = listed(rates.cache_write, "cache_write", (input_, "input"))
    default_1h = (input_ * _ANTHROPIC_1H_WRITE, "2x input") if anthropic else write_5m
    return {
        "prompt": (input_, "input"),
        "cache_read": listed(rates.cache_read, "cache_read", (input_, "input")),
        "cache_write_5m": write_5m,
        "cache_write_1h": listed(rates.cache_write_1h, "cache_write_1h", default_1h),
        "output": (_dec(rates.output), "output"),
        "reasoning": listed(rates.reasoning, "reasoning", (_dec(rates.output), "output")),
    }


def _buckets(usage: Usage) -> dict[str, int]:
    """Disjoint token counts; breakdowns are clamped to their parent, negatives to 0."""
    completion = max(usage.completion_tokens, 0)
    creation = max(usage.cache_creation_tokens, 0)
    reasoning = min(max(usage.reasoning_tokens, 0), completion)
    creation_1h = min(max(usage.cache_creation_1h_tokens, 0), creation)
    return {
        "prompt": max(usage.prompt_tokens, 0),
        "cache_read": max(usage.cache_read_tokens, 0),
        "cache_write_5m": creation - creation_1h,
        "cache_write_1h": creation_1h,
        "output": completion - reasoning,
        "reasoning": reasoning,
    }


def _priced(match: PriceMatch, usage: Usage, detail: dict[str, object]) -> CostResult:
    entry = match.entry
    tokens = _buckets(usage)
    input_total = tokens["prompt"] + tokens["cache_read"] + tokens["cache_write_5m"] \
        + tokens["cache_write_1h"]
    tier = _tier_for(entry.tiers, input_total)
    anthropic = entry.provider == "anthropic" or vendor_providers(entry.model) == ("anthropic",)
    rates = _effective(entry.rates, tier)
    detail.update({
        "lookup": match.lookup, "rule": match.rule, "price_key": entry.key,
        "price_source": entry.source, "rates": _rates_json(entry.rates),
        "input_tokens_total": input_total, "anthropic_vendor": anthropic,
        "tier": None if tier is None else {
            "min_input_tokens": tier.min_input_tokens, "rates": _rates_json(rates)},
    })
    total = Decimal(0)
    buckets: dict[str, object] = {}
    try:
        per_bucket = _bucket_rates(rates, anthropic)
        with decimal.localcontext(prec=60):  # exact for any realistic token count
            for name, count in tokens.items():
                rate, rate_from = per_bucket[name]
                usd = Decimal(count) * rate / _PER_TOKEN
                total += usd
                buckets[name] = {"tokens": count, "rate": float(rate),
                                 "rate_from": rate_from, "usd": _usd(usd)}
            cost = _usd(total)
    except (_BadPrice, ArithmeticError) as bad:
        # Only a hand-built table or an absurd token count gets here; a wrong number
        # stored as `ok` would be worse than an unpriced row the backfill can revisit.
        detail["guard"] = f"cannot price: {bad!r}"
        return CostResult(0.0, "pending", match.rule, entry.key, detail)
    detail["buckets"] = buckets
    detail["cost_usd"] = cost
    return CostResult(cost, "ok", match.rule, entry.key, detail)


class _Matches:
    """Price lookups of one (immutable) price table, remembered: a name is matched through
    a chain of rewrites, the same few names come back on every call, and the answer only
    changes with the table."""

    __slots__ = ("found", "table")
    LIMIT = 1024  # distinct (model, provider) pairs kept; then it starts over

    def __init__(self, table: PriceTable) -> None:
        self.table = table
        self.found: dict[tuple[str | None, str | None], PriceMatch | None] = {}


_matches: _Matches | None = None


def _match(table: PriceTable, model: str | None, api_provider: str | None
           ) -> PriceMatch | None:
    global _matches
    memo = _matches
    if memo is None or memo.table is not table:
        # A new table (a price refresh): one swap of the module global, so a thread never
        # sees one table's answers under another.
        memo = _matches = _Matches(table)
    key = (model, api_provider)
    try:
        return memo.found[key]
    except KeyError:
        pass
    match = table.match(model, api_provider)
    if len(memo.found) >= _Matches.LIMIT:
        memo.found.clear()
    memo.found[key] = match
    return match


def compute_cost(table: PriceTable, model: str | None, api_provider: str | None,
                 usage: Usage) -> CostResult:
    """Price one call. Never raises on odd input; unpriced calls cost 0 with a status."""
    detail: dict[str, object] = {
        "model": model, "api_provider": api_provider,
        "table_source": table.source, "fetched_at": table.fetched_at,
    }
    if normalise(model) in UNSUPPORTED_MODELS:
        detail["reason"] = "no model name"
        return CostResult(0.0, "unsupported", None, None, detail)
    if model is not None and name_too_long(model):
        # Unsupported, not pending: the length cap is a fixed rule, so no later price
        # table can price this name and the backfill has nothing to retry. Only the
        # first characters are kept: the detail is stored with every cost audit.
        detail.update(model=model.strip()[:MAX_MODEL_NAME_LENGTH], model_truncated=True,
                      model_length=len(model.strip()), rule="name-too-long",
                      reason=f"model name longer than {MAX_MODEL_NAME_LENGTH} characters")
        return CostResult(0.0, "unsupported", None, None, detail)
    match = _match(table, model, api_provider)
    if match is None:
        # Pending, not 0-and-ok: the backfill retries when the price table learns the model.
        detail.update(lookup=normalise(model), reason="no price for model")
        return CostResult(0.0, "pending", None, None, detail)
    return _priced(match, usage, detail)

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

Arithmetic is exact, on each rate's decimal ``repr`` (3.75 stays exactly 3.75): in
integers over a power of ten (:class:`decimal.Decimal` past 10**18 tokens in a bucket),
rounded half-even to 12 decimal places.

An unpriced call costs 0: ``unsupported`` when the name can never be priced (none, a
placeholder such as ``unknown``, or longer than ``pricing.MAX_MODEL_NAME_LENGTH``, detail
``rule: name-too-long`` with the name cut to that length), ``pending`` when the current
table has no price for it (the backfill retries those).
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from agent_cli_proxy.usage.model import Usage
from agent_cli_proxy.usage.pricing import (
    MAX_MODEL_NAME_LENGTH,
    PriceEntry,
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

_PLACES = Decimal("1e-12")
_EXACT = decimal.Context(prec=60)  # exact for any realistic token count
# The detail's JSON: compact, as the cost audit has always stored it.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
# Anthropic bills one-hour cache writes at 2x base input (five-minute writes: 1.25x, which
# is models.dev's `cache_write`); models.dev has no field for the one-hour price.
_ANTHROPIC_1H_WRITE = Decimal(2)


class CostResult:
    """One call's price: USD, status, how it was found, and the audit detail.

    ``detail`` is JSON-able: lookup, rates, tier, per-bucket tokens/rate/USD, table source
    and date. A priced call's detail is built as JSON text (:attr:`detail_json`, what the
    cost audit stores) and read back into a dict only when asked for: each call prices
    once and stores the text, and building the dict and encoding it again cost as much as
    the rest of the pricing.
    """

    __slots__ = ("_detail", "_detail_json", "cost_usd", "price_key", "rule", "status")

    def __init__(self, cost_usd: float, status: CostStatus, rule: str | None,
                 price_key: str | None, detail: dict[str, object] | None = None, *,
                 detail_json: str | None = None) -> None:
        if (detail is None) == (detail_json is None):
            raise ValueError("give the detail either as a dict or as JSON text")
        self.cost_usd = cost_usd
        self.status = status
        self.rule = rule
        self.price_key = price_key
        self._detail = detail
        self._detail_json = detail_json

    @property
    def detail(self) -> dict[str, object]:
        if self._detail is None:
            assert self._detail_json is not None
            self._detail = json.loads(self._detail_json)
        return self._detail

    @property
    def detail_json(self) -> str:
        """The detail as compact JSON (``,`` and ``:`` without spaces)."""
        if self._detail_json is None:
            self._detail_json = _COMPACT_JSON.encode(self._detail)
        return self._detail_json

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CostResult):
            return NotImplemented
        return (self.cost_usd, self.status, self.rule, self.price_key, self.detail) == (
            other.cost_usd, other.status, other.rule, other.price_key, other.detail)

    __hash__ = None  # type: ignore[assignment]  # mutable detail, as a dataclass's

    def __repr__(self) -> str:
        return (f"CostResult({self.cost_usd!r}, {self.status!r}, {self.rule!r}, "
                f"{self.price_key!r}, {self.detail!r})")


class _BadPrice(ValueError):
    """A rate that is negative or not finite (possible only for hand-built tables)."""


def _dec(rate: float) -> Decimal:
    if not math.isfinite(rate) or rate < 0:
        raise _BadPrice(repr(rate))
    return Decimal(repr(float(rate)))


def _usd(value: Decimal) -> float:
    return float(value.quantize(_PLACES, context=_EXACT))


def _rates_json(rates: Rates) -> dict[str, object]:
    return {field.name: getattr(rates, field.name) for field in dataclasses.fields(rates)}


def _members(items: dict[str, object]) -> str:
    """The JSON members of *items* without the braces, to splice into a larger object."""
    text: str = _COMPACT_JSON.encode(items)
    return text[1:-1]


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


def _bucket_rates(rates: Rates, anthropic: bool) -> tuple[tuple[Decimal, str], ...]:
    """Per bucket (in :data:`_BUCKETS` order): USD per 1M tokens, and which price it came
    from."""
    input_ = _dec(rates.input)

    def listed(value: float | None, name: str, fallback: tuple[Decimal, str]
               ) -> tuple[Decimal, str]:
        return fallback if value is None else (_dec(value), name)

    write_5m = listed(rates.cache_write, "cache_write", (input_, "input"))
    default_1h = (input_ * _ANTHROPIC_1H_WRITE, "2x input") if anthropic else write_5m
    return (
        (input_, "input"),
        listed(rates.cache_read, "cache_read", (input_, "input")),
        write_5m,
        listed(rates.cache_write_1h, "cache_write_1h", default_1h),
        (_dec(rates.output), "output"),
        listed(rates.reasoning, "reasoning", (_dec(rates.output), "output")),
    )


_BUCKETS = ("prompt", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning")


def _buckets(usage: Usage) -> tuple[int, ...]:
    """Disjoint token counts in :data:`_BUCKETS` order; breakdowns are clamped to their
    parent, negatives to 0."""
    completion = max(usage.completion_tokens, 0)
    creation = max(usage.cache_creation_tokens, 0)
    reasoning = min(max(usage.reasoning_tokens, 0), completion)
    creation_1h = min(max(usage.cache_creation_1h_tokens, 0), creation)
    return (max(usage.prompt_tokens, 0), max(usage.cache_read_tokens, 0),
            creation - creation_1h, creation_1h, completion - reasoning, reasoning)


@dataclass(frozen=True, slots=True)
class _Rated:
    """The rates in force at one tier of an entry (or at none), with the detail's JSON
    around the numbers that change from call to call."""

    tail: str
    """The members after ``input_tokens_total``: ``,"anthropic_vendor":…,"tier":…``."""
    buckets: tuple[tuple[Decimal, int, str, str], ...]
    """Per bucket: USD per token; the same as an integer over ``10 ** scale``; the JSON
    before its token count and from after it to ``"usd":``."""
    scale: int = 0
    error: str | None = None
    """Why these rates cannot price anything (a rate that is negative or not finite)."""


def _scaled(rates: tuple[Decimal, ...]) -> tuple[int, tuple[int, ...]]:
    """(scale, numerators): each USD-per-1M rate as ``numerator / 10 ** (scale - 6)``,
    one scale for all, so that a call's USD per bucket and in total are integers over
    ``10 ** scale``, exactly what the Decimal arithmetic computes."""
    parts = []
    for rate in rates:
        _, digits, exponent = rate.as_tuple()
        assert isinstance(exponent, int)  # finite: _dec refuses the rest
        parts.append((int("".join(map(str, digits)) or "0"), exponent))
    scale = max(0, *(-exponent for _, exponent in parts)) + 6
    return scale, tuple(n * 10 ** (scale - 6 + exponent) for n, exponent in parts)


def _rated(entry: PriceEntry, tier: Tier | None, anthropic: bool) -> _Rated:
    rates = _effective(entry.rates, tier)
    tail = "," + _members({
        "anthropic_vendor": anthropic,
        "tier": None if tier is None else {"min_input_tokens": tier.min_input_tokens,
                                           "rates": _rates_json(rates)},
    })
    try:
        per_bucket = _bucket_rates(rates, anthropic)
    except _BadPrice as bad:
        # Only a hand-built table gets here; a wrong number stored as `ok` would be worse
        # than an unpriced row the backfill can revisit.
        return _Rated(tail, (), error=f"cannot price: {bad!r}")
    scale, numerators = _scaled(tuple(rate for rate, _ in per_bucket))
    buckets = tuple(
        (rate.scaleb(-6, context=_EXACT), numerator,
         ("," if i else "") + f'"{name}":{{"tokens":',
         "," + _members({"rate": float(rate), "rate_from": rate_from}) + ',"usd":')
        for i, (name, (rate, rate_from), numerator)
        in enumerate(zip(_BUCKETS, per_bucket, numerators, strict=True)))
    return _Rated(tail, buckets, scale)


@dataclass(frozen=True, slots=True)
class _Pricer:
    """How one (model, API provider) is priced by one table, derived once: the match, the
    detail's JSON up to ``input_tokens_total``, and the rates of each long-context tier."""

    match: PriceMatch
    head: str
    thresholds: tuple[int, ...]
    """Tier thresholds, ascending; ``rated[i + 1]`` applies above ``thresholds[i]``."""
    rated: tuple[_Rated, ...]
    """At no tier, then at each tier of :attr:`thresholds`."""


def _pricer(table: PriceTable, model: str | None, api_provider: str | None,
            match: PriceMatch) -> _Pricer:
    entry = match.entry
    anthropic = entry.provider == "anthropic" or vendor_providers(entry.model) == ("anthropic",)
    head = "{" + _members({
        "model": model, "api_provider": api_provider,
        "table_source": table.source, "fetched_at": table.fetched_at,
        "lookup": match.lookup, "rule": match.rule, "price_key": entry.key,
        "price_source": entry.source, "rates": _rates_json(entry.rates),
    }) + ',"input_tokens_total":'
    # Ties in a threshold: the later tier wins, as it always has.
    tiers = sorted(entry.tiers, key=lambda t: t.min_input_tokens)
    return _Pricer(match, head, tuple(t.min_input_tokens for t in tiers),
                   tuple(_rated(entry, tier, anthropic) for tier in (None, *tiers)))


# Below this, a call's USD is computed in integers (exact, and far quicker than Decimal);
# counts are at most 2**53 from the wire, so only a hand-built Usage ever goes past it.
_INTEGER_COUNTS = 10**18


def _priced(pricer: _Pricer, usage: Usage) -> CostResult:
    tokens = _buckets(usage)
    input_total = tokens[0] + tokens[1] + tokens[2] + tokens[3]
    # The highest tier whose threshold the request's total input exceeds.
    rated = pricer.rated[sum(1 for t in pricer.thresholds if input_total > t)]
    text = [pricer.head, str(input_total), rated.tail]
    entry = pricer.match
    if rated.error is None:
        text.append(',"buckets":{')
        try:
            add_buckets = _in_integers if max(tokens) < _INTEGER_COUNTS else _in_decimals
            cost = add_buckets(tokens, rated, text)
        except ArithmeticError as bad:  # an absurd token count
            del text[3:]
            error = f"cannot price: {bad!r}"
        else:
            text.append(f'}},"cost_usd":{cost!r}}}')
            return CostResult(cost, "ok", entry.rule, entry.entry.key,
                              detail_json="".join(text))
    else:
        error = rated.error
    text.append(',"guard":' + _COMPACT_JSON.encode(error) + "}")
    return CostResult(0.0, "pending", entry.rule, entry.entry.key, detail_json="".join(text))


def _in_decimals(tokens: tuple[int, ...], rated: _Rated, text: list[str]) -> float:
    """Each bucket's JSON appended to *text*; returns the total USD."""
    total = Decimal(0)
    for count, (per_token, _, before, after) in zip(tokens, rated.buckets, strict=True):
        usd = _EXACT.multiply(per_token, count)
        total = _EXACT.add(total, usd)
        text += (before, str(count), after, repr(_usd(usd)), "}")
    return _usd(total)


def _in_integers(tokens: tuple[int, ...], rated: _Rated, text: list[str]) -> float:
    """:func:`_in_decimals` in integers over ``10 ** rated.scale``: the same numbers."""
    total = 0
    scale = rated.scale
    for count, (_, numerator, before, after) in zip(tokens, rated.buckets, strict=True):
        if not count:  # most buckets of most calls
            text += (before, "0", after, "0.0}")
            continue
        usd = count * numerator
        total += usd
        text += (before, str(count), after, repr(_rounded(usd, scale)), "}")
    return _rounded(total, scale)


def _rounded(value: int, scale: int) -> float:
    """``value / 10 ** scale`` rounded half-even to 12 decimal places, as a float (what
    :func:`_usd` gives for the same number)."""
    if scale > 12:
        unit = 10 ** (scale - 12)
        value, rest = divmod(value, unit)
        if 2 * rest > unit or (2 * rest == unit and value % 2):
            value += 1
        scale = 12
    # int / int is correctly rounded to the nearest float, as float(Decimal) is.
    result: float = value / 10**scale
    return result


class _Matches:
    """Pricers of one (immutable) price table, remembered: a name is matched through a
    chain of rewrites, the same few names come back on every call, and the answer only
    changes with the table."""

    __slots__ = ("found", "table")
    LIMIT = 1024  # distinct (model, provider) pairs kept; then it starts over

    def __init__(self, table: PriceTable) -> None:
        self.table = table
        self.found: dict[tuple[str | None, str | None], _Pricer | None] = {}


_matches: _Matches | None = None


def _pricer_for(table: PriceTable, model: str | None, api_provider: str | None
                ) -> _Pricer | None:
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
    pricer = None if match is None else _pricer(table, model, api_provider, match)
    if len(memo.found) >= _Matches.LIMIT:
        memo.found.clear()
    memo.found[key] = pricer
    return pricer


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
    pricer = _pricer_for(table, model, api_provider)
    if pricer is None:
        # Pending, not 0-and-ok: the backfill retries when the price table learns the model.
        detail.update(lookup=normalise(model), reason="no price for model")
        return CostResult(0.0, "pending", None, None, detail)
    return _priced(pricer, usage)

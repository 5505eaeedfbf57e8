"""The price table and the model-name → price lookup.

Owns: parsing models.dev's ``api.json`` shape (already decoded; no I/O here) into
:class:`PriceEntry` rows, the local override/alias layer, and :meth:`PriceTable.match`,
which maps a model name as a client or CLIProxyAPI reported it to one entry.

Matching is a short, ordered list of named rules; the first hit wins and the rule chain is
returned so every cost can say how it was priced. Names are trimmed and lower-cased first.
A name longer than :data:`MAX_MODEL_NAME_LENGTH` (200) characters after trimming matches
nothing, at once: model names come from clients unchecked, and no real id is that long
(``compute_cost`` reports it as ``unsupported`` with the reason; see ``cost.py``).

1. ``override`` — the whole name is a PRICING_OVERRIDES_JSON key (the operator's word wins).
2. For ``a/b`` names: ``provider-qualified`` — ``b`` is a model of models.dev provider
   ``a``; ``openrouter`` — the whole name is an OpenRouter model id (OpenRouter-style
   ``anthropic/claude-sonnet-4.5``); else ``strip-prefix`` drops ``a/`` (a CLIProxyAPI
   credential prefix) and matching starts again with ``b``.
3. ``vendor`` — exact id in the model's own vendor's provider, chosen by explicit name
   prefixes (:data:`VENDORS`). The vendor beats the API-family hint: Claude called through
   /v1/chat/completions is still Anthropic's Claude (the original priced by path). Only
   when the vendor is unknown is the hint's provider searched (``hint``).
4. Rewrites, tried in that same provider only, most specific first, chained in the rule
   (``vendor+strip-effort+strip-date``): ``strip-effort`` (CLIProxyAPI's ``model(high)``
   / ``model(8192)`` suffix, and ``-minimal|-low|-medium|-high|-xhigh`` effort names),
   ``strip-thinking`` (``-thinking`` / ``-thinking-<budget>`` variants), ``strip-latest``,
   ``strip-date`` (``-20250929`` / ``-2025-08-07``), ``dots-dashes`` (``4.5`` ↔ ``4-5``
   between digits), and ``add-date`` (a bare name models.dev lists only dated: the newest).
   At most :data:`MAX_REWRITES` (8) rewrite steps per lookup (a bound on the work a
   client's name can cause; real names need two or three).
   ``strip-thinking`` removes a numeric budget (``-thinking-32768``) only from Claude and
   Gemini names (the budget suffix proxies publish for them), and never a four-digit
   ``YYMM``-like number: ``qwen3-235b-a22b-thinking-2507`` is Qwen's July 2025 thinking
   model, not ``qwen3-235b-a22b`` with a budget. Plain ``-thinking`` is stripped for any
   vendor, as the same model with thinking on.
5. ``alias:<prefix>`` — only when rules 1-4 found nothing: the longest PRICING_ALIASES_JSON
   prefix the name starts with (checked on the whole name, then on each ``a/``-stripped
   rest, recorded as ``strip-prefix``) rewrites it to the target, which is looked up with
   rules 1-4. A name that has a price of its own is never re-priced by a prefix alias
   (``kimi-k2`` → ``kimi-k2-0905-preview`` must leave the listed ``kimi-k2.6`` alone).
   At most one alias applies per lookup: the original's own ``gpt-5.4-mini`` →
   ``gpt-5.4-mini`` next to ``gpt-5.4`` → ``gpt-5.4`` must not chain into the wrong
   price, and cycles cannot loop.
6. Otherwise no match. There is no substring or "closest name" guessing: an unknown
   model stays unpriced (cost status pending) rather than borrowing another model's price.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per 1,000,000 tokens. ``None`` means "not listed" (cost.py decides the fallback)."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    """Five-minute cache write (the one ``cache_write`` number models.dev lists)."""
    cache_write_1h: float | None = None
    reasoning: float | None = None


@dataclass(frozen=True, slots=True)
class Tier:
    """Long-context pricing: applies when total input EXCEEDS ``min_input_tokens``."""

    min_input_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class PriceEntry:
    provider: str
    model: str
    rates: Rates
    tiers: tuple[Tier, ...]
    source: str
    """``models.dev`` | ``builtin`` | ``override``."""

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class PriceMatch:
    entry: PriceEntry
    rule: str
    """The rule chain that found the entry, steps joined by ``+``."""
    lookup: str
    """The model name actually looked up after rewriting."""


# Vendor families by explicit name prefix (rule 3), anchored at the start of the bare name.
# Several providers are tried in order: GLM is sold by Z.AI (international, the fuller
# list) and Zhipu AI (mainland China). `gpt-oss-*` is open weights that OpenAI does not
# sell, so it finds nothing in `openai` and stays pending unless aliased.
VENDORS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"claude-"), ("anthropic",)),
    (re.compile(r"(?:gpt-|chatgpt-|codex-|o[134](?:-|$))"), ("openai",)),
    (re.compile(r"(?:gemini-|gemma-)"), ("google",)),
    (re.compile(r"grok-"), ("xai",)),
    (re.compile(r"(?:qwen|qwq-|qvq-)"), ("alibaba",)),
    (re.compile(r"glm-"), ("zai", "zhipuai")),
    (re.compile(r"kimi-"), ("moonshotai",)),
    (re.compile(r"deepseek-"), ("deepseek",)),
    (re.compile(r"(?:mistral-|devstral-|codestral-|magistral-|ministral-|pixtral-"
                r"|open-mistral-|open-mixtral-)"), ("mistral",)),
    (re.compile(r"minimax-"), ("minimax",)),
)

# request_logs.provider is the API family of the route, not the model's vendor.
HINT_PROVIDERS: Mapping[str, str] = {
    "openai": "openai", "anthropic": "anthropic", "gemini": "google", "google": "google",
}

_PRICE_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning")
# Other spellings some models.dev entries use for the cache prices (MiniMax: `cached_input`
# / `cached_write`; SiliconFlow: `cache_input`; TogetherAI: `cached_input`). They are read
# only when the standard key gives no price, in the order listed.
_PRICE_SPELLINGS: Mapping[str, tuple[str, ...]] = {
    "cache_read": ("cached_input", "cache_input"),
    "cache_write": ("cached_write",),
}
_LEGACY_LONG_CONTEXT = 200_000
# Rule 4's suffixes. Each names the same model at the same price per token:
# CLIProxyAPI reads a thinking budget or level from `model(8192)` / `model(high)` and
# strips it before routing, but the requested name is what gets logged.
_PAREN_SUFFIX = re.compile(r"\s*\([^()]*\)$")
# Effort levels tools append as `gpt-5-codex-high`. Not `max`/`none`/`auto`:
# `gpt-5.1-codex-max` is a different model with its own id and price.
_EFFORT_SUFFIX = re.compile(r"-(?:minimal|low|medium|high|xhigh)$")
# Proxies publish `claude-sonnet-4-5-thinking(-32768)` for "thinking on"; thinking tokens
# are output tokens. A real `-thinking` id (kimi-k2-thinking) is found exactly first.
# The numeric budget form is Claude's and Gemini's only; other vendors put a version there
# (`qwen3-235b-a22b-thinking-2507`), so a YYMM-like four-digit number is never a budget.
_THINKING_SUFFIX = re.compile(r"-thinking$")
_THINKING_BUDGET_SUFFIX = re.compile(r"-thinking-(\d+)$")
_THINKING_BUDGET_VENDORS = frozenset({"anthropic", "google"})
_YYMM = re.compile(r"[23]\d(?:0[1-9]|1[0-2])")
# `-latest` and dated snapshot ids are aliases of the same model; models.dev lists some
# models only undated and some only dated (the reverse is `add-date`).
_LATEST_SUFFIX = re.compile(r"-latest$")
_DATE_SUFFIX = re.compile(r"-(20\d\d)(-?)(\d\d)\2(\d\d)$")

MAX_MODEL_NAME_LENGTH = 200
"""Longer names (after trimming) match nothing: bounds the work one client name can cause."""
MAX_REWRITES = 8
"""Rule-4 rewrite steps (``strip-*``, ``dots-dashes``, ``add-date``) allowed per lookup."""
_MAX_PREFIXES = 64  # `a/` levels; a backstop only, MAX_MODEL_NAME_LENGTH bounds it already


def normalise(name: str | None) -> str:
    return (name or "").strip().lower()


def name_too_long(name: str | None) -> bool:
    """True when the trimmed name exceeds :data:`MAX_MODEL_NAME_LENGTH` (never priced)."""
    return len((name or "").strip()) > MAX_MODEL_NAME_LENGTH


def vendor_providers(model: str) -> tuple[str, ...]:
    """models.dev providers of the model's own vendor (ignores any ``prefix/``)."""
    bare = normalise(model).rsplit("/", 1)[-1]
    for pattern, providers in VENDORS:
        if pattern.match(bare):
            return providers
    return ()


def _date_match(name: str) -> re.Match[str] | None:
    found = _DATE_SUFFIX.search(name)
    if found and 1 <= int(found[3]) <= 12 and 1 <= int(found[4]) <= 31:
        return found
    return None


def _thinking_budget(name: str) -> re.Match[str] | None:
    """A ``-thinking-<budget>`` tail, unless the number looks like a ``YYMM`` version."""
    found = _THINKING_BUDGET_SUFFIX.search(name)
    if found and not (len(found[1]) == 4 and _YYMM.fullmatch(found[1])):
        return found
    return None


def _strip_one(name: str, budgets: bool) -> tuple[str, str] | None:
    """One suffix rewrite (rule name, shorter name), or None; precedence is outermost first.

    ``budgets``: the name is a Claude/Gemini one, whose ``-thinking-<n>`` is a budget.
    """
    for rule, pattern in (("strip-effort", _PAREN_SUFFIX), ("strip-effort", _EFFORT_SUFFIX),
                          ("strip-thinking", _THINKING_SUFFIX), ("strip-latest", _LATEST_SUFFIX)):
        found = pattern.search(name)
        if found and found.start() > 0:
            return rule, name[: found.start()]
    budget = _thinking_budget(name) if budgets else None
    if budget and budget.start() > 0:
        return "strip-thinking", name[: budget.start()]
    dated = _date_match(name)
    if dated and dated.start() > 0:
        return "strip-date", name[: dated.start()]
    return None


def _swap_separators(name: str) -> str:
    """``claude-sonnet-4.5`` ↔ ``claude-sonnet-4-5``: only separators between two digits."""
    if re.search(r"\d\.\d", name):
        return re.sub(r"(?<=\d)\.(?=\d)", "-", name)
    return re.sub(r"(?<=\d)-(?=\d)", ".", name)


def _candidates(name: str, budgets: bool) -> Iterator[tuple[tuple[str, ...], str]]:
    """(rewrite steps, candidate) pairs, most specific first, for rule 4.

    Never more than :data:`MAX_REWRITES` steps: each strip copies the name, so an
    unbounded chain of suffixes would cost time quadratic in the name's length.
    """
    steps: tuple[str, ...] = ()
    current = name
    while True:
        yield steps, current
        if len(steps) >= MAX_REWRITES:
            return
        swapped = _swap_separators(current)
        if swapped != current:
            yield (*steps, "dots-dashes"), swapped
        stripped = _strip_one(current, budgets)
        if stripped is None:
            return
        steps, current = (*steps, stripped[0]), stripped[1]


def _price(value: Any) -> float | None:
    """A non-negative finite number, else None (bools and strings are not prices)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too big for a float
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _listed(cost: Mapping[str, Any], name: str) -> float | None:
    """Field ``name`` of a cost block, under its standard key or another known spelling."""
    value = _price(cost.get(name))
    for spelling in _PRICE_SPELLINGS.get(name, ()):
        if value is not None:
            break
        value = _price(cost.get(spelling))
    return value


def _rates(cost: Mapping[str, Any], base: Rates | None = None) -> Rates | None:
    """Rates from a models.dev-shaped cost block; tier blocks fall back to ``base`` per field."""
    found = {name: _listed(cost, name) for name in _PRICE_FIELDS}
    if base is not None:
        found = {name: getattr(base, name) if found[name] is None else found[name]
                 for name in _PRICE_FIELDS}
    input_, output = found["input"], found["output"]
    if input_ is None or output is None:
        return None  # unpriced: better pending than a guessed number
    return Rates(input=input_, output=output, cache_read=found["cache_read"],
                 cache_write=found["cache_write"], cache_write_1h=found["cache_write_1h"],
                 reasoning=found["reasoning"])


def _tiers(cost: Mapping[str, Any], base: Rates) -> tuple[Tier, ...]:
    tiers: dict[int, Tier] = {}
    raw = cost.get("tiers")
    for item in raw if isinstance(raw, list) else ():
        tier = item.get("tier") if isinstance(item, Mapping) else None
        if not isinstance(tier, Mapping) or tier.get("type", "context") != "context":
            continue  # only context-length tiers are understood
        size = _price(tier.get("size"))
        rates = _rates(item, base)
        if size and rates is not None and size == int(size):
            tiers.setdefault(int(size), Tier(int(size), rates))
    legacy = cost.get("context_over_200k")
    # The legacy block and `tiers` describe the same premium when both exist (gpt-5.5:
    # a 272k tier and a 200k block), so the newer `tiers` win and the block is ignored.
    if not tiers and isinstance(legacy, Mapping):
        rates = _rates(legacy, base)
        if rates is not None:
            tiers[_LEGACY_LONG_CONTEXT] = Tier(_LEGACY_LONG_CONTEXT, rates)
    return tuple(tiers[size] for size in sorted(tiers))


def _entry(provider: str, model: str, cost: Any, source: str) -> PriceEntry | None:
    if not isinstance(cost, Mapping):
        return None
    rates = _rates(cost)
    if rates is None:
        return None
    return PriceEntry(provider, model, rates, _tiers(cost, rates), source)


def _newest_dated(models: Mapping[str, PriceEntry]) -> dict[str, str]:
    """Bare name → newest dated id, for ``add-date`` (``claude-3-7-sonnet`` → ``…-20250219``)."""
    newest: dict[str, tuple[str, str]] = {}
    for model_id in models:
        dated = _date_match(model_id)
        if dated and dated.start() > 0:
            base, stamp = model_id[: dated.start()], dated[1] + dated[3] + dated[4]
            if base not in newest or stamp > newest[base][0]:
                newest[base] = (stamp, model_id)
    return {base: model_id for base, (_, model_id) in newest.items()}


def _split_prefix(name: str) -> tuple[str, str]:
    """``a/b`` → (``a``, ``b``); also ``provider://model``."""
    prefix, _, rest = name.partition("/")
    return prefix.rstrip(":"), rest.lstrip("/")


class PriceTable:
    """An immutable price table; build with :meth:`from_models_dev` or :meth:`builtin`."""

    __slots__ = ("_aliases", "_dated", "_models", "_overrides", "fetched_at", "source")

    def __init__(self, models: Mapping[str, Mapping[str, PriceEntry]], *,
                 fetched_at: float | None, source: str,
                 overrides: Mapping[str, PriceEntry] | None = None,
                 aliases: Mapping[str, str] | None = None) -> None:
        self._models = {provider: dict(entries) for provider, entries in models.items()}
        self._dated = {provider: _newest_dated(entries) for provider, entries in models.items()}
        self._overrides = dict(overrides or {})
        # Longest prefix first, so the most specific alias wins.
        self._aliases = tuple(sorted((aliases or {}).items(), key=lambda kv: -len(kv[0])))
        self.fetched_at = fetched_at
        self.source = source

    @classmethod
    def from_models_dev(cls, data: Mapping[str, Any], *, fetched_at: float | None,
                        source: str = "models.dev") -> PriceTable:
        """Parse models.dev's ``api.json``; malformed providers/models are skipped."""
        models: dict[str, dict[str, PriceEntry]] = {}
        for provider_id, provider in (data.items() if isinstance(data, Mapping) else ()):
            raw = provider.get("models") if isinstance(provider, Mapping) else None
            if not isinstance(provider_id, str) or not isinstance(raw, Mapping):
                continue
            entries = models.setdefault(normalise(provider_id), {})
            for model_id, model in raw.items():
                if not isinstance(model_id, str) or not isinstance(model, Mapping):
                    continue
                entry = _entry(provider_id, model_id, model.get("cost"), source)
                if entry is not None:
                    entries.setdefault(normalise(model_id), entry)  # first of a case clash
        return cls(models, fetched_at=fetched_at, source=source)

    @classmethod
    def builtin(cls) -> PriceTable:
        """The small hand-copied table shipped with the package (used until models.dev loads)."""
        from agent_cli_proxy.usage.builtin_prices import BUILTIN_MODELS_DEV

        return cls.from_models_dev(BUILTIN_MODELS_DEV, fetched_at=None, source="builtin")

    def with_local(self, overrides: Mapping[str, Mapping[str, float]],
                   aliases: Mapping[str, str]) -> PriceTable:
        """A copy with PRICING_OVERRIDES_JSON / PRICING_ALIASES_JSON layered on top."""
        merged = dict(self._overrides)
        for model, cost in overrides.items():
            entry = _entry("override", model, cost, "override")
            if normalise(model) and entry is not None:
                merged[normalise(model)] = entry
        # An empty prefix would alias every model; skip it rather than price all as one.
        merged_aliases = dict(self._aliases)
        merged_aliases.update({normalise(prefix): normalise(target)
                               for prefix, target in aliases.items()
                               if normalise(prefix) and normalise(target)})
        return PriceTable(self._models, fetched_at=self.fetched_at, source=self.source,
                          overrides=merged, aliases=merged_aliases)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._models.values()) + len(self._overrides)

    def get(self, provider: str, model: str) -> PriceEntry | None:
        """The entry for an exact models.dev provider and model id (case-insensitive)."""
        return self._models.get(normalise(provider), {}).get(normalise(model))

    def match(self, model: str | None, api_provider: str | None) -> PriceMatch | None:
        """Find the price for ``model``; ``api_provider`` is the API-family hint."""
        name = normalise(model)
        if not name or len(name) > MAX_MODEL_NAME_LENGTH:
            return None  # before any rewriting: see MAX_MODEL_NAME_LENGTH
        found = self._lookup(name, api_provider, [])
        if found is not None or not self._aliases:
            return found
        return self._match_alias(name, api_provider)

    def _lookup(self, name: str, api_provider: str | None,
                steps: list[str]) -> PriceMatch | None:
        """Rules 1-4 (no aliases): override, ``a/b`` forms, vendor or hint, rewrites."""
        # Each pass returns or removes a `prefix/`; the cap is a backstop.
        for _ in range(_MAX_PREFIXES):
            if not name:
                return None
            if name in self._overrides:
                return PriceMatch(self._overrides[name], "+".join([*steps, "override"]), name)
            if "/" not in name:
                return self._match_bare(name, api_provider, steps)
            prefix, rest = _split_prefix(name)
            found = self.get(prefix, rest)
            if found is not None:
                return PriceMatch(found, "+".join([*steps, "provider-qualified"]), rest)
            found = self.get("openrouter", name)
            if found is not None:
                return PriceMatch(found, "+".join([*steps, "openrouter"]), name)
            steps = [*steps, "strip-prefix"]
            name = rest
        return None

    def _match_alias(self, name: str, api_provider: str | None) -> PriceMatch | None:
        """Rule 5: the one alias, on the whole name or after ``a/`` prefixes are stripped."""
        steps: list[str] = []
        for _ in range(_MAX_PREFIXES):
            if not name:
                return None
            alias = next(((prefix, target) for prefix, target in self._aliases
                          if name.startswith(prefix)), None)
            if alias is not None:
                return self._lookup(alias[1], api_provider, [*steps, f"alias:{alias[0]}"])
            if "/" not in name:
                return None
            steps.append("strip-prefix")
            name = _split_prefix(name)[1]
        return None

    def _match_bare(self, name: str, api_provider: str | None,
                    steps: list[str]) -> PriceMatch | None:
        providers, scope = vendor_providers(name), "vendor"
        if not providers:
            hint = HINT_PROVIDERS.get(normalise(api_provider))
            if hint is None:
                return None
            providers, scope = (hint,), "hint"
        budgets = scope == "vendor" and _THINKING_BUDGET_VENDORS.issuperset(providers)
        for rewrites, candidate in _candidates(name, budgets):
            for provider in providers:
                found = self.get(provider, candidate)
                if found is not None:
                    return PriceMatch(found, "+".join([*steps, scope, *rewrites]), candidate)
            if len(rewrites) >= MAX_REWRITES:
                continue  # no room for `add-date`
            for provider in providers:
                dated = self._dated.get(provider, {}).get(candidate)
                if dated is not None:
                    rule = "+".join([*steps, scope, *rewrites, "add-date"])
                    return PriceMatch(self._models[provider][dated], rule, dated)
        return None

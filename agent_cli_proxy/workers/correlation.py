"""Matching CLIProxyAPI usage details to request_logs rows, for CPA without a trace header.

Pure functions, no I/O: read the v6 ``/usage`` document and v7 usage-queue records into
:class:`UsageDetail` (dropping the client API keys both carry), bring CPA's token counts
into our disjoint buckets (its ``input_tokens`` excludes the cache for Claude and
includes it for OpenAI and Gemini, spec §1.7), and pair details with candidate rows.

A pair must be close in time (within :data:`WINDOW_S` of the row's start or end, since
CPA's timestamp may be either) and agree on the model (after dropping a CPA
``prefix/``, through the v7 ``alias``, or up to a date suffix) or, when the proxy saw an
alias CPA resolved (v6 has no ``alias``), on a non-zero token total. Token totals that
differ by more than :data:`TOKEN_TOLERANCE` rule a pair out. Pairs are then chosen
best-first so each row and each detail is used once (the original matched each row
greedily and could hand one detail to several rows over time, spec §12.7).
"""

from __future__ import annotations

import bisect
import calendar
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent_cli_proxy.storage.accounts import Candidate
from agent_cli_proxy.usage.model import Usage

WINDOW_S = 30.0
TOKEN_TOLERANCE = 0.05  # relative difference of two non-zero totals still counted equal
_ALIAS_PENALTY_MS = 2_000.0  # a model known only through equal tokens ranks behind
_OUTCOME_PENALTY_MS = 5_000.0  # the row failed and CPA says it did not, or the reverse


@dataclass(frozen=True, slots=True)
class UsageDetail:
    """One request as CPA accounted it, without the client's API key."""

    key: str
    """Stable digest identifying the detail (persisted once it is matched)."""
    at: float
    timestamp: str
    model: str
    alias: str | None
    source: str
    """The account e-mail for OAuth, but the *API key* for API-key credentials."""
    auth_index: str | None
    usage: Usage
    failed: bool
    latency_ms: int | None
    provider: str | None
    request_id: str | None


# -- timestamps --------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})")


def parse_timestamp(text: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (Go's RFC3339Nano, ``…Z`` or an offset);
    None without a zone or in any other shape."""
    if not isinstance(text, str):
        return None
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        return None
    try:
        base = calendar.timegm((int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]),
                                int(m[6]), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    fraction = float("0" + m[7]) if m[7] else 0.0
    zone = m[8]
    offset = 0
    if zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        offset = (int(digits[:2]) * 60 + int(digits[2:])) * 60
        offset = -offset if zone[0] == "-" else offset
    return base + fraction - offset


# -- tokens --------------------------------------------------------------------------------

_CLAUDE, _OPENAI, _GEMINI = "claude", "openai", "gemini"
_PROVIDER_KIND = {"claude": _CLAUDE, "anthropic": _CLAUDE, "codex": _OPENAI,
                  "openai": _OPENAI, "xai": _OPENAI, "qwen": _OPENAI, "iflow": _OPENAI,
                  "kimi": _OPENAI, "openai-compatibility": _OPENAI, "gemini": _GEMINI,
                  "gemini-cli": _GEMINI, "vertex": _GEMINI, "aistudio": _GEMINI}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _kind(provider: str | None, model: str, counts: Mapping[str, int]) -> str:
    known = _PROVIDER_KIND.get((provider or "").lower())
    if known is not None:
        return known
    name = model_key(model)
    if name.startswith("claude"):
        return _CLAUDE
    if name.startswith("gemini"):
        return _GEMINI
    i, o, r, c, t = (counts[k] for k in ("input", "output", "reasoning", "cached", "total"))
    if t and r and t == i + o + r and t != i + o:
        return _GEMINI  # thoughts counted outside the output
    if t and c and t >= i + o + c and t != i + o:
        return _CLAUDE  # the cache counted outside the input
    return _OPENAI


def normalise_tokens(tokens: object, breakdown: object = None, *, provider: str | None = None,
                     model: str = "") -> Usage:
    """CPA's token counts as our disjoint buckets (``usage.model``)."""
    if isinstance(breakdown, Mapping) and breakdown.get("quality") == "complete":
        inp, out = breakdown.get("input"), breakdown.get("output")
        if isinstance(inp, Mapping) and isinstance(out, Mapping):
            completion = _int(out.get("total_tokens"))
            return Usage(prompt_tokens=_int(inp.get("uncached_tokens")),
                         cache_read_tokens=_int(inp.get("cache_read_tokens")),
                         cache_creation_tokens=_int(inp.get("cache_write_tokens")),
                         completion_tokens=completion,
                         reasoning_tokens=min(_int(out.get("reasoning_tokens")), completion))
    t = tokens if isinstance(tokens, Mapping) else {}
    counts = {"input": _int(t.get("input_tokens")), "output": _int(t.get("output_tokens")),
              "reasoning": _int(t.get("reasoning_tokens")), "total": _int(t.get("total_tokens")),
              "cached": _int(t.get("cache_read_tokens")) if t.get("cache_read_tokens_present")
              else _int(t.get("cached_tokens"))}
    creation = _int(t.get("cache_creation_tokens"))
    kind = _kind(provider, model, counts)
    i, o, r, c, total = (counts[k] for k in ("input", "output", "reasoning", "cached", "total"))
    if kind == _CLAUDE:
        # Input excludes cache reads and writes; v6 has no write count, so it is what the
        # total holds beyond the other three.
        creation = creation or max(0, total - i - o - c)
        return Usage(prompt_tokens=i, cache_read_tokens=c, cache_creation_tokens=creation,
                     completion_tokens=o, reasoning_tokens=min(r, o))
    completion = o + r if kind == _GEMINI else o  # Gemini's thoughts are not in its output
    return Usage(prompt_tokens=max(0, i - c - creation), cache_read_tokens=min(c, i),
                 cache_creation_tokens=creation, completion_tokens=completion,
                 reasoning_tokens=min(r, completion))


# -- details ---------------------------------------------------------------------------------


def _detail(item: Mapping[str, Any], model: str, *, alias: object = None,
            provider: object = None, request_id: object = None,
            provider_of: Callable[[str], str | None]) -> UsageDetail | None:
    at = parse_timestamp(item.get("timestamp"))
    if at is None or not model:
        return None
    if _int(item.get("request_count")) > 1:
        return None  # a fork's 15-minute rollup stands for many requests: no single row
    index = item.get("auth_index")
    auth_index = index if isinstance(index, str) and index else None
    hint = provider if isinstance(provider, str) and provider else (
        provider_of(auth_index) if auth_index else None)
    tokens = item.get("tokens")
    usage = normalise_tokens(tokens, item.get("token_breakdown"), provider=hint, model=model)
    rid = request_id if isinstance(request_id, str) and request_id else None
    source = item.get("source") if isinstance(item.get("source"), str) else ""
    latency = item.get("latency_ms")
    failed = item.get("failed") is True
    # §1.3's own dedup key (without the API key), or v7's request id when there is one.
    ident: list[Any] = ["rid", rid] if rid else [
        model, str(item.get("timestamp")), source, auth_index, failed,
        [(tokens or {}).get(k) if isinstance(tokens, Mapping) else None
         for k in ("input_tokens", "output_tokens", "reasoning_tokens", "cached_tokens",
                   "total_tokens")]]
    key = hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()[:32]
    return UsageDetail(
        key=key, at=at, timestamp=str(item.get("timestamp")), model=model,
        alias=alias if isinstance(alias, str) and alias else None, source=str(source or ""),
        auth_index=auth_index, usage=usage, failed=failed,
        latency_ms=latency if isinstance(latency, int) and latency >= 0 else None,
        provider=hint, request_id=rid)


def details_from_usage(doc: Mapping[str, Any],
                       provider_of: Callable[[str], str | None]) -> list[UsageDetail]:
    """The per-request details of a v6 ``/usage`` document. Its ``apis`` keys are client
    API keys in plaintext: they are never read, let alone kept."""
    usage = doc.get("usage")
    apis = usage.get("apis") if isinstance(usage, Mapping) else None
    out: list[UsageDetail] = []
    for api in (apis.values() if isinstance(apis, Mapping) else ()):
        models = api.get("models") if isinstance(api, Mapping) else None
        for model, entry in (models.items() if isinstance(models, Mapping) else ()):
            details = entry.get("details") if isinstance(entry, Mapping) else None
            for item in details if isinstance(details, list) else ():
                if isinstance(item, Mapping):
                    found = _detail(item, str(model), provider_of=provider_of)
                    if found is not None:
                        out.append(found)
    return out


def details_from_queue(records: Iterable[Mapping[str, Any]],
                       provider_of: Callable[[str], str | None]) -> list[UsageDetail]:
    """v7 usage-queue records (their ``api_key`` is dropped here)."""
    out: list[UsageDetail] = []
    for record in records:
        model = record.get("model")
        found = _detail(record, model if isinstance(model, str) else "",
                        alias=record.get("alias"), provider=record.get("provider"),
                        request_id=record.get("request_id"), provider_of=provider_of)
        if found is not None:
            out.append(found)
    return out


# -- matching ----------------------------------------------------------------------------

_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)")


def model_key(name: str | None) -> str:
    """A model name as CPA would resolve it: trimmed, lower case, without a ``prefix/``."""
    text = (name or "").strip().lower()
    return text.split("/", 1)[1] if "/" in text else text


def _same_model(a: str, b: str) -> bool:
    if not a or not b:
        return False
    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    return long_.startswith(short) and _DATE_SUFFIX.fullmatch(long_[len(short):]) is not None


def models_agree(row: Candidate, detail: UsageDetail) -> bool:
    ours = {model_key(row.model), model_key(row.requested_model)}
    theirs = {model_key(detail.model), model_key(detail.alias)}
    return any(_same_model(a, b) for a in ours for b in theirs)


@dataclass(frozen=True, slots=True)
class Pair:
    row: Candidate
    detail: UsageDetail
    score: float
    model_agrees: bool


def _score(row: Candidate, start: float, end: float | None,
           detail: UsageDetail) -> Pair | None:
    dt = abs(detail.at - start)
    if end is not None:
        dt = min(dt, abs(detail.at - end))
    if dt > WINDOW_S:
        return None
    ours, theirs = row.usage.total_tokens, detail.usage.total_tokens
    if ours and theirs and abs(ours - theirs) > TOKEN_TOLERANCE * max(ours, theirs):
        return None
    agrees = models_agree(row, detail)
    if not agrees and not (ours and ours == theirs):
        return None
    score = dt * 1000.0
    if ours and theirs:
        score += abs(ours - theirs) * 100.0
    if row.latency_ms is not None and detail.latency_ms is not None:
        score += abs(row.latency_ms - detail.latency_ms) * 0.1
    if not agrees:
        score += _ALIAS_PENALTY_MS
    if (row.status is None or row.status >= 400) != detail.failed:
        score += _OUTCOME_PENALTY_MS
    return Pair(row, detail, score, agrees)


def match(rows: Iterable[Candidate], details: Iterable[UsageDetail]) -> list[Pair]:
    """The best pairs, each row and each detail in at most one of them."""
    pool = sorted(details, key=lambda d: d.at)
    times = [d.at for d in pool]
    pairs: list[Pair] = []
    for row in rows:
        start = parse_timestamp(row.started_at)
        if start is None:
            continue
        end = parse_timestamp(row.finished_at) if row.finished_at else None
        # Only details near the row's start or end can pair with it.
        lo = bisect.bisect_left(times, start - WINDOW_S)
        hi = bisect.bisect_right(times, max(start, end or start) + WINDOW_S)
        for detail in pool[lo:hi]:
            pair = _score(row, start, end, detail)
            if pair is not None:
                pairs.append(pair)
    pairs.sort(key=lambda p: (p.score, p.row.id, p.detail.key))
    used_rows: set[int] = set()
    used_details: set[str] = set()
    chosen: list[Pair] = []
    for pair in pairs:
        if pair.row.id in used_rows or pair.detail.key in used_details:
            continue
        used_rows.add(pair.row.id)
        used_details.add(pair.detail.key)
        chosen.append(pair)
    return chosen

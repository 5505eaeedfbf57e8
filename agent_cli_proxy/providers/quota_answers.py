"""What a vendor's quota answer means: normalised windows from each provider's body.

This module owns the parsers, one per provider, from the HTTP status and body of a quota
endpoint (Codex ``wham/usage``, Claude ``oauth/usage``, Gemini ``retrieveUserQuota``,
Antigravity ``retrieveUserQuotaSummary``, Kimi ``usages``) to :class:`Window` values: a
name (``5h``, ``week``, ``week_opus``, ``monthly``, a model bucket …), the share used in
percent 0-100 and the reset time as ISO UTC. They ignore keys they do not know, skip nulls
and never raise: a body they cannot read is an ``error`` :class:`Outcome` with a reason.
Pure: no sockets, files or SQL (``providers.quotas`` says what to ask; ``workers.quotas``
asks).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Window:
    window: str
    used_pct: float | None
    resets_at: str | None = None
    model: str | None = None
    raw: Any = None

    @property
    def remaining(self) -> float | None:
        return None if self.used_pct is None else round(100.0 - self.used_pct, 4)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one probe found. ``status``: active, limit_reached, unauthorized, forbidden,
    rate_limited, error, unsupported (or the vendor's own error type)."""

    status: str
    windows: tuple[Window, ...] = ()
    plan: str | None = None
    error: str | None = None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_answer(provider: str, status: int, body: str, now: float) -> Outcome:
    """The outcome of one probe from the vendor's HTTP status and body."""
    data = _json(body)
    if provider == "codex" and isinstance(data, Mapping) and isinstance(
            data.get("error"), Mapping):
        return _codex_error(data["error"], now, status)
    if not 200 <= status < 300:
        kind = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}.get(status, "error")
        return Outcome(kind, error=f"HTTP {status}: {_error_text(data, body)}")
    if not isinstance(data, Mapping):
        return Outcome("error", error="the answer is not a JSON object")
    parser = _PARSERS.get(provider)
    if parser is None:
        return Outcome("unsupported", error="quota endpoint is not known for this provider")
    try:
        return parser(data, now)
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
        # A shape no parser foresaw is this account's problem, never the whole refresh's.
        return Outcome("error", error=f"unreadable {provider} quota answer ({exc})"[:300])


def _json(body: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _error_text(data: Any, body: str) -> str:
    if isinstance(data, Mapping):
        error = data.get("error")
        if isinstance(error, Mapping) and _text(error.get("message")):
            return str(error["message"])[:300]
        if _text(error) or _text(data.get("message")):
            return str(_text(error) or data.get("message"))[:300]
    return body.strip()[:300] or "empty answer"


def _status_of(windows: list[Window], limit_reached: bool = False) -> str:
    """``limit_reached`` when the vendor says so or one of *windows* (the account's main
    allowances, not side ones such as code review or paid extra usage) is used up."""
    full = any(w.used_pct is not None and w.used_pct >= 100 for w in windows)
    return "limit_reached" if limit_reached or full else "active"


def _all_full(windows: list[Window]) -> str:
    """Per-model buckets: the account is blocked only when every model's bucket is."""
    full = bool(windows) and all(w.used_pct is not None and w.used_pct >= 100
                                 for w in windows)
    return "limit_reached" if full else "active"


def _items(value: Any) -> list[Any]:
    """A JSON array's items, or none when the vendor sent something else there."""
    return value if isinstance(value, list) else []


def percent(value: Any, *, fraction: bool = False) -> float | None:
    """A share as percent 0-100: *fraction* values (0-1) are scaled; None if unreadable.

    Each field's scale is known from the vendor's documentation, not guessed from the
    number (the original's "≤ 1 means a fraction" turned 1 % used into 100 %).
    """
    number = _number(value)
    if number is None:
        return None
    return round(min(max(number * 100 if fraction else number, 0.0), 100.0), 4)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def epoch(value: Any) -> float | None:
    if isinstance(value, str) and not re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value):
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)  # vendors mean UTC when they omit it
        return parsed.timestamp()
    number = _number(value)
    if number is None or number <= 0:
        return None
    return number / 1000 if number >= 1e12 else number  # ms or s since the epoch


def iso_time(value: Any) -> str | None:
    """A reset time as ``YYYY-MM-DDTHH:MM:SS.mmmZ``: epoch s or ms, or an ISO string."""
    when = epoch(value)
    if when is None:
        return None
    try:
        moment = dt.datetime.fromtimestamp(when, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _window_name(seconds: Any, fallback: str) -> str:
    secs = _number(seconds)
    if secs is None or secs <= 0:
        return fallback
    days = secs / 86_400
    if 27.5 <= days <= 31.5:
        return "monthly"
    if 6.5 <= days <= 7.5:
        return "week"
    if days >= 1:
        return f"{round(days)}d"
    return f"{round(secs / 3600)}h" if secs >= 3600 else f"{round(secs / 60)}m"


def _codex(data: Mapping[str, Any], now: float) -> Outcome:
    windows: list[Window] = []
    main: list[Window] = []  # the plan's own 5 h / weekly windows decide the status
    reached = False
    limits: list[tuple[str, Any, str | None]] = [
        ("", data.get("rate_limit"), None),
        ("code_review_", data.get("code_review_rate_limit"), None)]
    for extra in _items(data.get("additional_rate_limits")):
        if isinstance(extra, Mapping):
            name = _text(extra.get("limit_name")) or _text(extra.get("metered_feature"))
            if name:  # per-model limits (e.g. a Codex model with its own allowance)
                limits.append((name + "_", extra.get("rate_limit"), name))
    for prefix, limit, model in limits:
        if not isinstance(limit, Mapping):
            continue
        blocked = limit.get("limit_reached") is True or limit.get("allowed") is False
        reached = reached or (blocked and prefix == "")
        for key, fallback in (("primary_window", "5h"), ("secondary_window", "week")):
            win = limit.get(key)
            if not isinstance(win, Mapping):
                continue
            used = percent(win.get("used_percent"))
            if used is None and blocked:
                used = 100.0  # blocked with no number: treat as used up
            reset = iso_time(win.get("reset_at"))
            after = _number(win.get("reset_after_seconds"))
            if reset is None and after is not None:
                reset = iso_time(now + after)
            name = prefix + _window_name(win.get("limit_window_seconds"), fallback)
            windows.append(Window(name, used, reset, model, dict(win)))
            if prefix == "":
                main.append(windows[-1])
    return Outcome(_status_of(main, reached), tuple(windows), _text(data.get("plan_type")))


def _codex_error(error: Mapping[str, Any], now: float, status: int) -> Outcome:
    kind = _text(error.get("type")) or ("unauthorized" if status == 401 else "error")
    reset = iso_time(error.get("resets_at"))
    windows = (Window("exhausted", 100.0, reset, None, dict(error)),) if reset else ()
    message = _text(error.get("message")) or f"HTTP {status}"
    return Outcome(kind, windows, _text(error.get("plan_type")), message)


_CLAUDE_NAMES = {"five_hour": "5h", "seven_day": "week"}


def _claude_name(key: str) -> str:
    for prefix, short in (("seven_day_", "week_"), ("five_hour_", "5h_")):
        if key.startswith(prefix):
            return short + key[len(prefix):]
    return _CLAUDE_NAMES.get(key, key)


def _claude_window(name: str, value: Mapping[str, Any], model: str | None) -> Window | None:
    used = next((p for k in ("utilization", "used_percent", "percent_used")
                 if (p := percent(value.get(k))) is not None), None)
    if used is None:
        return None
    reset = iso_time(value.get("resets_at") or value.get("reset_at"))
    return Window(_claude_name(name), used, reset, model, dict(value))


def _claude(data: Mapping[str, Any], now: float) -> Outcome:
    windows: dict[str, Window] = {}
    for key, value in data.items():
        if key == "extra_usage" or key == "limits" or not isinstance(value, Mapping):
            continue
        if (win := _claude_window(key, value, None)) is not None:
            windows[win.window] = win
    # The 2026 shape: per-model weekly buckets in a limits[] array (parse both).
    for item in _items(data.get("limits")):
        if not isinstance(item, Mapping):
            continue
        name = next((str(item[k]) for k in ("name", "id", "type", "window", "key")
                     if _text(item.get(k))), None)
        model = _text(item.get("model")) or _text(item.get("model_id"))
        if name is None and model is not None:
            name = "seven_day_" + model
        if name is not None and (win := _claude_window(name, item, model)) is not None:
            windows.setdefault(win.window, win)
    extra = data.get("extra_usage")
    if isinstance(extra, Mapping) and extra.get("is_enabled") is True:
        used = percent(extra.get("utilization"))
        limit, spent = _number(extra.get("monthly_limit")), _number(extra.get("used_credits"))
        if used is None and limit and spent is not None:
            used = percent(spent / limit, fraction=True)
        windows["extra_monthly"] = Window("extra_monthly", used, None, None, dict(extra))
    found = list(windows.values())
    # Paid extra usage running out does not block the plan's own allowance.
    return Outcome(_status_of([w for w in found if not w.window.startswith("extra_")]),
                   tuple(found))


def _remaining_window(name: str, item: Mapping[str, Any], model: str | None) -> Window:
    remaining = percent(item.get("remainingFraction"), fraction=True)
    used = None if remaining is None else round(100.0 - remaining, 4)
    return Window(name, used, iso_time(item.get("resetTime")), model, dict(item))


def _gemini(data: Mapping[str, Any], now: float) -> Outcome:
    windows = []
    for bucket in _items(data.get("buckets")):
        if not isinstance(bucket, Mapping) or not _text(bucket.get("modelId")):
            continue
        model = str(bucket["modelId"]).strip()
        kind = (_text(bucket.get("tokenType")) or "REQUESTS").lower()
        name = model if kind == "requests" else f"{model}:{kind}"
        windows.append(_remaining_window(name, bucket, model))
    return Outcome(_all_full(windows), tuple(windows))


def _antigravity(data: Mapping[str, Any], now: float) -> Outcome:
    windows = []
    for group in _items(data.get("groups")):
        if not isinstance(group, Mapping):
            continue
        for bucket in _items(group.get("buckets")):
            if not isinstance(bucket, Mapping):
                continue
            name = (_text(bucket.get("bucketId")) or _text(bucket.get("displayName"))
                    or _text(group.get("displayName")))
            if name is None:
                continue
            span = _text(bucket.get("window"))
            model = _text(bucket.get("displayName")) or name
            windows.append(_remaining_window(f"{name}:{span}" if span else name, bucket, model))
    # Older builds answered fetchAvailableModels: {models: {name: {quotaInfo: {…}}}}.
    models = data.get("models")
    for name, info in (models.items() if isinstance(models, Mapping) else ()):
        quota = info.get("quotaInfo") if isinstance(info, Mapping) else None
        if isinstance(quota, Mapping):
            windows.append(_remaining_window(str(name), quota, str(name)))
    return Outcome(_all_full(windows), tuple(windows))


def _kimi_window(name: str, detail: Any) -> Window | None:
    if not isinstance(detail, Mapping):
        return None
    limit, used = _number(detail.get("limit")), _number(detail.get("used"))
    remaining = _number(detail.get("remaining"))
    if used is None and limit is not None and remaining is not None:
        used = limit - remaining
    share = percent(used / limit, fraction=True) if limit and used is not None else None
    return Window(name, share, iso_time(detail.get("resetTime")), None, dict(detail))


def _kimi_span(window: Any) -> str:
    if not isinstance(window, Mapping):
        return "window"
    minutes = _number(window.get("duration")) or 0
    unit = str(window.get("timeUnit") or "").upper()
    minutes *= 60 if "HOUR" in unit else 1440 if "DAY" in unit else 1
    return _window_name(minutes * 60, "window")


def _kimi(data: Mapping[str, Any], now: float) -> Outcome:
    windows: list[Window] = []
    usages = [u for u in _items(data.get("usages")) if isinstance(u, Mapping)]
    coding = next((u for u in usages if u.get("scope") == "FEATURE_CODING"),
                  usages[0] if usages else data)
    weekly = _kimi_window("week", coding.get("detail") or coding.get("usage"))
    windows.extend([weekly] if weekly else [])
    for item in _items(coding.get("limits")) or _items(data.get("limits")):
        if isinstance(item, Mapping):
            win = _kimi_window(_kimi_span(item.get("window")), item.get("detail"))
            windows.extend([win] if win else [])
    user = data.get("user")
    plan = _text(user.get("membershipLevel")) if isinstance(user, Mapping) else None
    return Outcome(_status_of(windows), tuple(windows), plan)


_PARSERS: dict[str, Callable[[Mapping[str, Any], float], Outcome]] = {
    "codex": _codex, "claude": _claude, "gemini-cli": _gemini, "antigravity": _antigravity,
    "kimi": _kimi}
